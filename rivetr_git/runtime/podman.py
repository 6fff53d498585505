"""The Podman runtime: DockerRuntime over Podman's Docker-compatible API socket.

Every runtime method (and any added to DockerRuntime later) works on Podman unchanged; only
what Podman does differently is here. Unless `podman_socket` names a running service, the
server starts `podman system service` on a socket in its data dir, with a containers.conf
of its own that gives every container (build steps too) explicit ulimits: Podman's defaults
exceed the hard limits of many hosts and `podman run` then fails with "error setting
rlimits". App containers run under conmon, so they outlive the service and this server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import shutil
from pathlib import Path
from typing import Any

from rivetr_git.errors import RuntimeUnavailable
from rivetr_git.runtime.base import LABEL_INSTANCE
from rivetr_git.runtime.docker import DockerRuntime

log = logging.getLogger(__name__)

_PREFIXES = ("docker.io/", "localhost/")  # registries Podman puts in local image names


# What containers get, or less when the host's hard limit is lower. (Setting a container's
# nproc to the host's whole hard limit was refused here too.)
ULIMITS = (("nofile", resource.RLIMIT_NOFILE, 10_240), ("nproc", resource.RLIMIT_NPROC, 4_096))


def host_ulimits() -> dict[str, int]:
    """The open-file and process limits app containers and build steps run with."""
    limits = {}
    for name, which, wanted in ULIMITS:
        hard = resource.getrlimit(which)[1]
        limits[name] = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    return limits


def containers_conf() -> str:
    ulimits = ", ".join(f'"{name}={value}:{value}"' for name, value in host_ulimits().items())
    return f"[containers]\ndefault_ulimits = [{ulimits}]\n"


class PodmanRuntime(DockerRuntime):
    """Runtime on Podman through its Docker-compatible API."""

    name = "podman"

    def __init__(
        self, client: Any, url: str, service: asyncio.subprocess.Process | None = None
    ) -> None:
        super().__init__(client)
        self.engine_env = {"DOCKER_HOST": url}
        self.container_ulimits = host_ulimits()
        self._service = service  # the `podman system service` this server started, if any

    @classmethod
    async def launch(cls, run_dir: Path, socket: str = "") -> PodmanRuntime:
        """Connect to `socket` (a unix socket path), or start a service of our own on
        run_dir/podman.sock. Raises RuntimeUnavailable saying what is missing."""
        if socket:
            url = f"unix://{socket}"
            return cls(await _client(url, f"podman_socket {socket}"), url)
        path = run_dir / "podman.sock"
        url = f"unix://{path}"
        with contextlib.suppress(RuntimeUnavailable):
            return cls(await _client(url, str(path), quiet=True), url)  # left running earlier
        executable = shutil.which("podman")
        if executable is None:
            raise RuntimeUnavailable(
                "runtime podman: the podman command is not installed "
                "(apt-get install podman catatonit)"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        conf = run_dir / "containers.conf"
        conf.write_text(containers_conf())
        path.unlink(missing_ok=True)
        service = await asyncio.create_subprocess_exec(
            executable,
            "system",
            "service",
            "--time=0",
            url,
            env={"CONTAINERS_CONF": str(conf), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            umask=0o022,
        )  # its storage, not our data dir: the usual modes
        for _ in range(100):
            await asyncio.sleep(0.1)
            if service.returncode is not None:
                break
            with contextlib.suppress(RuntimeUnavailable):
                client = await _client(url, str(path), quiet=True)
                log.info("started podman system service (pid %s) on %s", service.pid, path)
                return cls(client, url, service)
        with contextlib.suppress(ProcessLookupError):
            service.kill()
        await service.wait()
        raise RuntimeUnavailable(
            f"runtime podman: `podman system service` did not answer on "
            f"{path}; try it by hand to see why"
        )

    async def close(self) -> None:
        await super().close()
        if self._service is not None and self._service.returncode is None:
            # Containers keep running under conmon; the next start brings a service back.
            self._service.terminate()
            try:
                await asyncio.wait_for(self._service.wait(), 10)
            except TimeoutError:
                self._service.kill()
                await self._service.wait()

    def _host_options(self) -> dict[str, Any]:
        # Also when the service is not ours (podman_socket) and has no default_ulimits.
        return {
            "ulimits": [
                {"Name": name, "Soft": value, "Hard": value}
                for name, value in self.container_ulimits.items()
            ]
        }

    def _network_options(self) -> dict[str, str]:
        # Podman's bridge networks can reach each other unless told otherwise.
        return {"isolate": "true"}

    async def remove_image(self, image: str) -> None:
        await super().remove_image(image)
        # Podman leaves untagged layers Docker would remove with the image (a FROM scratch
        # build's first steps): prune what no image or container uses any more (callers hold
        # the BuildGate, so no build is taking one from its cache). Not the labelled build
        # stages of the releases kept: they go with their release, and the next push's
        # build takes its dependency install from them.
        await self._call(
            "prune images",
            lambda: self._client.images.prune(
                filters={"dangling": True, "label!": [LABEL_INSTANCE]}
            ),
        )

    async def list_images(self, repository: str) -> list[str]:
        # Podman's compatible API names images docker.io/NAME (localhost/NAME when made
        # with the podman CLI); callers use the names they built with.
        found = []
        for prefix in _PREFIXES:
            found += [
                tag.removeprefix(prefix) for tag in await super().list_images(prefix + repository)
            ]
        return sorted(set(found))


async def _client(url: str, where: str, quiet: bool = False) -> Any:
    try:
        return await DockerRuntime.client_for(url)
    except RuntimeUnavailable:
        if quiet:
            raise
        raise RuntimeUnavailable(
            f"runtime podman: nothing answers on {where}; start it "
            "(podman system service --time=0 unix://PATH)"
        ) from None
