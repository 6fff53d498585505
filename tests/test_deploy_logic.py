"""The deploy queue, supersede, failure clean-up, watch window and rollback logic, in
milliseconds: the real pipeline, store (SQLite in a temp dir), bare repos and route table,
with a FakeRuntime (tests/fakes.py) instead of a container engine. The end-to-end tests
(test_pipeline.py, test_switch.py, ...) drive the same code through Docker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rivetr_git.models import App, Deployment, Status
from rivetr_git.pipeline.after_switch import watch
from rivetr_git.pipeline.after_switch.monitor import Monitor
from rivetr_git.pipeline.deployer import Deployer, Job
from rivetr_git.pipeline.labels import image_tag, labels
from rivetr_git.pipeline.reconcile import reconcile
from rivetr_git.proxy.routes import RouteTable
from rivetr_git.runtime.base import LABEL_DEPLOYMENT, ContainerSpec, Runtime
from rivetr_git.secrets.crypto import Cipher
from rivetr_git.secrets.env_vars import EnvVars
from rivetr_git.settings import Settings
from rivetr_git.store.database import Store
from rivetr_git.store.repos import Repos
from tests.fakes import FakeRuntime, RecordingNotifier, commit

pytestmark = pytest.mark.timeout(20)  # a broken queue hangs rather than fails
INSTANCE = "fakeinstance"
DOCKERFILE = {"Dockerfile": "FROM scratch\n"}


@dataclass
class World:
    settings: Settings
    store: Store
    repos: Repos
    runtime: FakeRuntime
    routes: RouteTable
    notifier: RecordingNotifier
    deployer: Deployer

    async def app(self, name: str) -> App:
        await self.repos.create(name, "main")
        return await self.store.create_app(name)

    async def push(self, app: App, message: str) -> tuple[str, Job]:
        """A push of a new commit to the deploy branch, as the receiver hands it over."""
        sha = commit(self.repos, app.name, {**DOCKERFILE, "msg": message}, message)
        return sha, await self.deployer.submit(app, sha, "test")

    async def deploy(self, app: App, message: str) -> Deployment:
        _, job = await self.push(app, message)
        return await job.result

    def branch(self, app: str) -> str | None:
        ref = self.repos.path(app) / "refs" / "heads" / "main"
        return ref.read_text().strip() if ref.exists() else None

    def containers_of(self, d: Deployment) -> list[str]:
        return [
            c.id
            for c in self.runtime.containers.values()
            if c.spec.labels.get(LABEL_DEPLOYMENT) == str(d.id)
        ]


def lines(job: Job) -> str:
    queue = job.log.watch()
    out = []
    while not queue.empty():
        line = queue.get_nowait()
        if line is not None:
            out.append(line)
    return "\n".join(out)


async def until(check: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


async def make_world(tmp_path: Path, **settings: object) -> World:
    s = Settings(
        data_dir=tmp_path,
        health_path="/up",
        health_interval=0.01,
        health_timeout=1.0,
        health_retries=3,
        watch_window=30.0,
        drain_timeout=0.1,
        stop_timeout=0,
        **settings,  # type: ignore[arg-type]
    )
    store = await Store.open(tmp_path / "rivetr.db")
    repos = Repos(tmp_path / "repos")
    runtime = FakeRuntime()
    fake: Runtime = runtime  # the fake keeps to the protocol (mypy checks this line)
    routes = RouteTable(s.base_domain)
    notifier = RecordingNotifier(s)
    env_vars = EnvVars(store, Cipher.generate())
    deployer = Deployer(s, store, repos, fake, routes, INSTANCE, notifier, env_vars)
    return World(s, store, repos, runtime, routes, notifier, deployer)


@pytest.fixture(autouse=True)
def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch probes every 10 ms instead of every 0.5 s."""
    monkeypatch.setattr(watch, "_CHECK_EVERY", 0.01)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(tmp_path)
    try:
        yield w
    finally:
        await w.deployer.close()
        await w.runtime.close()
        await w.store.close()


# --- the queue -------------------------------------------------------------------------------


async def test_deploys_of_one_app_run_one_at_a_time_in_order(world: World) -> None:
    app = await world.app("dq-order")
    world.runtime.build_gate = gate = asyncio.Event()
    _, first = await world.push(app, "one")
    await until(lambda: world.runtime.building == 1)
    _, second = await world.push(app, "two")
    assert "Queued behind an earlier deploy of dq-order" in lines(second)
    await asyncio.sleep(0.05)
    assert world.runtime.builds == [image_tag(INSTANCE, app.name, first.deployment.id)]
    gate.set()
    one, two = await first.result, await second.result
    assert (one.status, two.status) == (Status.RUNNING, Status.RUNNING)
    assert world.runtime.builds == [image_tag(INSTANCE, app.name, d.id) for d in (one, two)]
    assert world.runtime.most_building == 1
    upstream = world.routes.upstream(app.name)
    assert upstream is not None and upstream.deployment_id == two.id


async def test_apps_deploy_in_parallel_up_to_max_concurrent_deploys(world: World) -> None:
    assert world.settings.max_concurrent_deploys == 2
    world.runtime.build_gate = gate = asyncio.Event()
    jobs = [(await world.push(await world.app(f"dq-par{i}"), "x"))[1] for i in range(3)]
    await until(lambda: world.runtime.building == 2)
    await asyncio.sleep(0.05)
    assert world.runtime.building == 2  # the third waits for a slot
    assert "Waiting for a free deploy slot (max_concurrent_deploys = 2)" in lines(jobs[2])
    gate.set()
    finals = [await job.result for job in jobs]
    assert [d.status for d in finals] == [Status.RUNNING] * 3
    assert world.runtime.most_building == 2


async def test_a_newer_push_supersedes_the_waiting_one(world: World) -> None:
    app = await world.app("dq-super")
    world.runtime.build_gate = gate = asyncio.Event()
    _, running = await world.push(app, "one")
    await until(lambda: world.runtime.building == 1)
    _, waiting = await world.push(app, "two")
    newest_sha, newest = await world.push(app, "three")
    assert waiting.result.done()  # settled at once, before the running one ends
    dropped = waiting.result.result()
    assert dropped.status is Status.FAILED
    assert dropped.error_message == f"superseded by {newest_sha[:7]}"
    assert (
        f"Deploy of {dropped.commit_sha[:7]} cancelled: superseded by {newest_sha[:7]}, "
        "pushed while it was waiting"
    ) in lines(waiting)
    gate.set()
    assert (await running.result).status is Status.RUNNING
    assert (await newest.result).status is Status.RUNNING
    assert len(world.runtime.builds) == 2  # the superseded one never built


# --- a failed deployment leaves nothing behind -----------------------------------------------


@pytest.mark.parametrize(
    ("knob", "stage", "reason"),
    [
        ("build", "building", "boom"),
        (
            "start",
            "starting",
            "container exited at once (exit code 3); last output: fake: exiting at once",
        ),
        (
            "health",
            "health_check",
            "GET /up failed 3 times (last: GET /up answered 500); check "
            "that the app listens on $PORT",
        ),
    ],
    ids=["build", "start", "health"],
)
async def test_a_failed_deploy_leaves_nothing_and_puts_the_branch_back(
    world: World, knob: str, stage: str, reason: str
) -> None:
    app = await world.app("dq-fail")
    live = await world.deploy(app, "good")
    live_container = world.routes.upstream(app.name)
    if knob == "build":
        world.runtime.build_error = "boom"
    elif knob == "start":
        world.runtime.exit_on_start = 3
    else:
        world.runtime.answer_status = 500
    sha, job = await world.push(app, "bad")
    assert world.branch(app.name) == sha
    failed = await job.result
    assert failed.status is Status.FAILED
    assert failed.error_message == f"{stage}: {reason}"
    assert world.containers_of(failed) == []
    assert image_tag(INSTANCE, app.name, failed.id) not in world.runtime.images
    assert world.branch(app.name) == live.commit_sha
    assert world.routes.upstream(app.name) == live_container  # the live release keeps serving
    assert (await world.store.current_deployment(app)) == await world.store.get_deployment(live.id)
    out = lines(job)
    assert f"The previous release (#{live.id}, {live.commit_sha[:7]}) keeps serving." in out
    assert f"Branch main on the server is back at {live.commit_sha[:7]}; push again" in out
    assert out.endswith(f"Deploy failed at {stage}: {reason}")
    assert world.notifier.names()[-1] == "deploy.failed"


async def test_a_failed_first_deploy_deletes_the_branch(world: World) -> None:
    app = await world.app("dq-first")
    world.runtime.build_error = "boom"
    _, job = await world.push(app, "bad")
    assert (await job.result).status is Status.FAILED
    assert world.branch(app.name) is None
    assert "back at its state before this push" in lines(job)
    assert world.runtime.containers == {} and world.runtime.images == set()


async def test_shutdown_records_the_running_deploy_as_interrupted(world: World) -> None:
    app = await world.app("dq-stop")
    world.runtime.build_gate = asyncio.Event()  # never set: the build hangs
    _, job = await world.push(app, "hangs")
    await until(lambda: world.runtime.building == 1)
    await world.deployer.close()
    d = await world.store.get_deployment(job.deployment.id)
    assert d.status is Status.FAILED
    assert d.error_message == "building: interrupted by shutdown"
    assert world.branch(app.name) is None


# --- the watch window and rollback ------------------------------------------------------------


async def test_a_release_failing_in_its_watch_window_is_rolled_back(world: World) -> None:
    app = await world.app("dq-watch")
    previous = await world.deploy(app, "good")
    new = await world.deploy(app, "crashes later")
    assert new.status is Status.RUNNING and world.deployer.is_watched(new.id)
    assert previous.container_id in world.runtime.containers  # kept during the window
    assert new.container_id is not None
    await world.runtime.crash(new.container_id, exit_code=2)
    await until(lambda: "deploy.rolled_back" in world.notifier.names())
    upstream = world.routes.upstream(app.name)
    assert upstream is not None and upstream.deployment_id == previous.id
    failed = await world.store.get_deployment(new.id)
    assert failed.status is Status.FAILED
    assert failed.error_message == (
        f"rolled back to #{previous.id}: container exited (exit code 2) within the watch window"
    )
    assert (await world.store.current_deployment(app)).id == previous.id  # type: ignore[union-attr]
    _, _, fields = world.notifier.events[-1]
    assert fields["deployment_id"] == previous.id and fields["failed_deployment_id"] == new.id
    await until(lambda: new.container_id not in world.runtime.containers)  # retired


async def test_a_release_failing_its_health_probe_in_the_window_is_rolled_back(
    world: World,
) -> None:
    app = await world.app("dq-probe")
    previous = await world.deploy(app, "good")
    new = await world.deploy(app, "turns sick")
    assert new.container_id is not None
    world.runtime.answer(new.container_id, 503)
    await until(lambda: "deploy.rolled_back" in world.notifier.names())
    failed = await world.store.get_deployment(new.id)
    assert failed.error_message == (
        f"rolled back to #{previous.id}: health check failed "
        "within the watch window (GET /up answered 503)"
    )


async def test_previous_container_gone_restarts_the_previous_release(world: World) -> None:
    app = await world.app("dq-restart")
    previous = await world.deploy(app, "good")
    new = await world.deploy(app, "crashes later")
    assert previous.container_id is not None and new.container_id is not None
    await world.runtime.remove(previous.container_id)
    await world.runtime.crash(new.container_id)
    await until(lambda: "deploy.rolled_back" in world.notifier.names())
    current = await world.store.current_deployment(app)
    assert current is not None and current.kind == "rollback"
    assert current.rollback_of == previous.id and current.image == previous.image
    assert current.status is Status.RUNNING and current.pushed_by == "auto-rollback"
    upstream = world.routes.upstream(app.name)
    assert upstream is not None and upstream.deployment_id == current.id
    failed = await world.store.get_deployment(new.id)
    assert failed.status is Status.FAILED
    assert failed.error_message == (
        f"container exited (exit code 1) within the watch window; "
        f"rolling back to #{previous.id} from its image"
    )
    assert [c.id for c in world.runtime.running()] == [current.container_id]


async def test_a_failed_rollback_marks_the_app_crashed(world: World) -> None:
    app = await world.app("dq-crashed")
    previous = await world.deploy(app, "good")
    new = await world.deploy(app, "crashes later")
    assert previous.container_id is not None and new.container_id is not None
    await world.runtime.remove(previous.container_id)
    world.runtime.exit_on_start = 1  # the previous release cannot start either
    await world.runtime.crash(new.container_id)
    await until(lambda: "container.crashed" in world.notifier.names())
    crashed = await world.store.get_app(app.name)
    assert crashed.crashed_reason is not None
    assert (
        f"the rollback to #{previous.id} failed too: starting: container exited at once"
        in crashed.crashed_reason
    )
    upstream = world.routes.upstream(app.name)
    assert upstream is not None and upstream.crashed and upstream.deployment_id == new.id
    assert "deploy.rolled_back" not in world.notifier.names()


# --- start-up: interrupted deployments --------------------------------------------------------


async def test_reconcile_cleans_up_interrupted_deployments_like_a_failure(world: World) -> None:
    app = await world.app("dq-crash")
    live = await world.deploy(app, "good")
    sha = commit(world.repos, app.name, {**DOCKERFILE, "v": "2"}, "in flight")
    # What a crash in the middle of a push's start and of a rollback's start leaves behind.
    pushed = await world.store.create_deployment(app, sha, "in flight", "test")
    tag = image_tag(INSTANCE, app.name, pushed.id)
    world.runtime.images.add(tag)
    await world.store.set_status(pushed.id, Status.STARTING, image=tag)
    await world.runtime.run(_spec(app.name, pushed.id, tag))
    rollback = await world.store.create_deployment(
        app, live.commit_sha, "r", "test", rollback_of=live
    )
    await world.store.set_status(rollback.id, Status.STARTING)
    await world.runtime.run(_spec(app.name, rollback.id, live.image or ""))
    await reconcile(world.settings, world.store, world.repos, world.runtime, world.routes, INSTANCE)
    for d in (pushed, rollback):
        after = await world.store.get_deployment(d.id)
        assert (after.status, after.error_message) == (Status.FAILED, "interrupted by restart")
        assert world.containers_of(after) == []
    assert tag not in world.runtime.images  # the push's own image goes ...
    assert live.image in world.runtime.images  # ... the release a rollback ran stays
    assert world.branch(app.name) == live.commit_sha


def _spec(app: str, deployment_id: int, image: str) -> ContainerSpec:
    return ContainerSpec(
        name=f"c{deployment_id}",
        image=image,
        port=5000,
        labels=labels(INSTANCE, app, deployment_id),
    )


async def test_reconcile_restarts_live_releases_and_removes_leftovers(world: World) -> None:
    app = await world.app("dq-restore")
    live = await world.deploy(app, "good")
    assert live.container_id is not None
    await world.runtime.stop(live.container_id, 0)
    world.routes.remove(app.name)
    leftover = await world.runtime.run(_spec(app.name, live.id + 100, live.image or ""))
    await reconcile(world.settings, world.store, world.repos, world.runtime, world.routes, INSTANCE)
    again = await world.store.get_deployment(live.id)
    assert world.runtime.containers[live.container_id].running
    assert again.host_port == world.runtime.containers[live.container_id].host_port
    assert again.host_port != live.host_port  # the engine published it anew
    upstream = world.routes.upstream(app.name)
    assert upstream is not None and upstream.port == again.host_port
    assert leftover.id not in world.runtime.containers


# --- the crash monitor ----------------------------------------------------------------------


async def test_the_monitor_leaves_an_app_being_destroyed_alone(world: World) -> None:
    """The monitor lists the apps, then the containers; a destroy that starts in between
    removes the containers. It must not route the app again (a 503 that outlived the app)."""
    app = await world.app("doomed")
    d = await world.deploy(app, "first")
    assert d.status is Status.RUNNING
    monitor = Monitor(
        world.settings,
        world.store,
        world.runtime,
        world.routes,
        INSTANCE,
        world.notifier,
        lambda _id: False,
    )
    listed = await world.store.get_app("doomed")  # as check() saw it, before the destroy
    destroy = asyncio.create_task(world.deployer.destroy(app))
    await until(lambda: not world.containers_of(d))  # its containers are gone
    assert d.container_id is not None
    await monitor._check_one(listed, d, d.container_id, None)
    await destroy
    assert world.routes.lookup("doomed.localhost") is None
    assert "container.crashed" not in world.notifier.names()
