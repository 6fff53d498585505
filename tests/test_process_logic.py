"""Process sets in milliseconds: the real pipeline, store, repos and route table with the
FakeRuntime test double (tests/fakes.py), as in test_deploy_logic.py. The end-to-end
tests (test_processes.py) drive the same code through Docker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rivetr_git.models import App, Deployment, Status
from rivetr_git.pipeline.after_switch.monitor import Monitor
from rivetr_git.pipeline.labels import LABEL_PROCESS
from rivetr_git.pipeline.processes import LinePrefixer
from tests.fakes import commit
from tests.test_deploy_logic import DOCKERFILE, INSTANCE, World, lines, make_world, until

pytestmark = pytest.mark.timeout(20)
PROCFILE = "web: serve --port $PORT\nworker: work\nrelease: migrate\n"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(tmp_path)
    try:
        yield w
    finally:
        await w.deployer.close()
        await w.runtime.close()
        await w.store.close()


async def deploy(world: World, app: App, message: str, procfile: str = PROCFILE) -> Deployment:
    sha = commit(
        world.repos, app.name, {**DOCKERFILE, "Procfile": procfile, "msg": message}, message
    )
    job = await world.deployer.submit(app, sha, "test")
    done = await job.result
    assert done.status is Status.RUNNING, lines(job)
    return done


def processes(world: World, d: Deployment) -> list[str]:
    """The running processes of deployment `d`, e.g. ['web.1', 'worker.1']."""
    return sorted(
        c.spec.labels.get(LABEL_PROCESS, "?")
        for c in world.runtime.running()
        if c.spec.labels.get("rivetr.deployment") == str(d.id)
    )


async def test_counts_are_kept_and_the_whole_old_set_retires(world: World) -> None:
    app = await world.app("pl-scale")
    await world.store.update_app(app.name, scale="web=3,worker=2")
    first = await deploy(world, app, "one")
    assert processes(world, first) == ["web.1", "web.2", "web.3", "worker.1", "worker.2"]
    route = world.routes.upstream(app.name)
    assert route is not None and len(route.backends()) == 3
    # Workers run the Procfile's command through the shell; web too.
    commands = {c.spec.labels[LABEL_PROCESS]: c.spec.command for c in world.runtime.running()}
    assert commands["worker.2"] == ["sh", "-c", "work"]
    assert commands["web.3"] == ["sh", "-c", "serve --port $PORT"]

    second = await deploy(world, await world.store.get_app(app.name), "two")
    assert processes(world, second) == ["web.1", "web.2", "web.3", "worker.1", "worker.2"]
    route = world.routes.upstream(app.name)
    assert route is not None and {b.deployment_id for b in route.backends()} == {second.id}
    world.deployer._watch.end(app.name)  # the watch window is over: the old set retires
    await until(lambda: processes(world, first) == [])  # drained, SIGTERM, removed


async def test_a_failing_web_replica_fails_the_deploy_and_leaves_nothing(world: World) -> None:
    app = await world.app("pl-fail")
    live = await deploy(world, app, "one")
    route = world.routes.upstream(app.name)
    await world.store.update_app(app.name, scale="web=2")
    world.runtime.answer_status = 500
    sha = commit(world.repos, app.name, {**DOCKERFILE, "Procfile": PROCFILE, "x": "1"}, "bad")
    job = await world.deployer.submit(await world.store.get_app(app.name), sha, "test")
    failed = await job.result
    assert failed.status is Status.FAILED
    assert failed.error_message is not None and failed.error_message.startswith("health_check")
    assert processes(world, failed) == []
    assert world.routes.upstream(app.name) == route
    assert processes(world, live) == ["web.1", "worker.1"]


async def test_the_monitor_restarts_each_process_on_its_own(world: World) -> None:
    app = await world.app("pl-monitor")
    live = await deploy(world, app, "one")
    monitor = Monitor(
        world.settings,
        world.store,
        world.runtime,
        world.routes,
        INSTANCE,
        world.notifier,
        lambda _: False,
    )
    worker = next(
        c for c in world.runtime.running() if c.spec.labels.get(LABEL_PROCESS) == "worker.1"
    )
    await world.runtime.crash(worker.id)
    await monitor.check()  # seen: restart after the backoff (1 s)
    assert not worker.running
    monitor._crashes[worker.id].restart_at = 0.0  # the backoff has passed
    await monitor.check()
    assert worker.running and monitor.restarts == {worker.id: 1}
    app_now = await world.store.get_app(app.name)
    assert app_now.crashed_reason is None  # a worker crash does not mark the app crashed
    assert processes(world, live) == ["web.1", "worker.1"]


async def test_line_prefixer_keeps_lines_whole_and_flushes_the_last() -> None:
    seen: list[bytes] = []

    async def out(data: bytes) -> None:
        seen.append(data)

    prefixer = LinePrefixer(b"worker.1 | ", out)
    await prefixer.feed(b"one\ntw")
    await prefixer.feed(b"o\nthr")
    await prefixer.close()
    assert seen == [b"worker.1 | one\n", b"worker.1 | two\n", b"worker.1 | thr\n"]
