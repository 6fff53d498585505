"""The periodic sweep, against a real Docker engine and a real database."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from rivetr_git.models import Status
from rivetr_git.pipeline.after_switch.cleanup import sweep
from rivetr_git.pipeline.labels import labels
from rivetr_git.runtime.base import BuildSpec, ContainerSpec
from rivetr_git.runtime.docker import DockerRuntime
from rivetr_git.store.database import Store
from tests.helpers import BUSYBOX, run


async def test_sweep_removes_what_nothing_uses(docker_engine: None, tmp_path: Path) -> None:
    instance = f"sweep{os.getpid()}"
    store = await Store.open(tmp_path / "db.sqlite")
    runtime = await DockerRuntime.connect()
    tag = f"rivetr-test-sweep/app:{os.getpid()}"
    try:
        app = await store.create_app("swept")
        failed = await store.create_deployment(app, "a" * 40, "old", None)
        await store.set_status(failed.id, Status.FAILED, error_message="x")
        live = await store.create_deployment(app, "b" * 40, "live", None)
        await store.promote(live.id, app.id)

        context = tmp_path / "context.tar"
        (tmp_path / "ctx").mkdir()
        (tmp_path / "ctx" / "Dockerfile").write_text(
            'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "true"]\n'
        )
        (tmp_path / "ctx" / "busybox").write_bytes(BUSYBOX.read_bytes())
        run(["tar", "-cf", str(context), "-C", str(tmp_path / "ctx"), "."])
        await runtime.build(BuildSpec(context_tar=context, tag=tag), lambda _line: None)
        stopped = {}
        for d in (failed, live):
            info = await runtime.run(
                ContainerSpec(
                    name=f"rivetr-{instance}-swept-{d.id}",
                    image=tag,
                    port=5000,
                    labels=labels(instance, "swept", d.id),
                )
            )
            stopped[d.id] = info.id
        await asyncio.sleep(1)  # `true` has exited: both containers are stopped now

        tmp = tmp_path / "tmp"
        old_dir, new_dir = tmp / "build-old", tmp / "build-new"
        old_dir.mkdir(parents=True)
        new_dir.mkdir()
        os.utime(old_dir, (time.time() - 3600, time.time() - 3600))

        await sweep(store, runtime, instance, tmp, max_age=600)

        remaining = {c.id for c in await runtime.list_containers(labels(instance))}
        assert stopped[failed.id] not in remaining  # a failed deployment's: gone
        assert stopped[live.id] in remaining  # the live release's: the monitor's business
        assert not old_dir.exists() and new_dir.exists()
    finally:
        for c in await runtime.list_containers(labels(instance)):
            await runtime.remove(c.id)
        await runtime.remove_image(tag)
        await runtime.close()
        await store.close()
