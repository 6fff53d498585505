"""Running one image build on the Docker engine, with limits, cancellation and streaming."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker.errors
import requests.exceptions

from rivetr_git.errors import BuildFailed, RuntimeOperationError, RuntimeUnavailable
from rivetr_git.runtime.base import BuildSpec
from rivetr_git.runtime.docker_scrub import remove_stages, scrub_image

_RUNNING_IN = re.compile(r" ---> Running in ([0-9a-f]{12,64})")


async def build_image(api: Any, spec: BuildSpec, on_line: Callable[[str], None]) -> str:
    """Build `spec` on docker-py's low-level client `api`, calling `on_line` for each output
    line; return the image id. Raises BuildFailed, also once `spec.timeout` has passed."""
    pump = _Pump(api, spec)
    started = time.time()
    thread = asyncio.create_task(asyncio.to_thread(pump.run))
    outcome = _Outcome()
    try:
        async with asyncio.timeout(spec.timeout):
            while True:
                kind, value = await pump.queue.get()
                if not outcome.take(kind, value, on_line):
                    break
    except TimeoutError:
        assert spec.timeout is not None
        pump.cancel()
        await asyncio.wait({thread}, timeout=10)
        for container_id in outcome.steps:
            await _reap(api, container_id)
        raise BuildFailed(
            f"build took longer than build_timeout ({spec.timeout:g} s); "
            "raise build_timeout or speed up the build"
        ) from None
    except asyncio.CancelledError:
        pump.cancel()  # the deploy was cancelled: so is its build
        raise
    await thread
    if outcome.error:
        raise await _failure(api, spec, outcome, started)
    image_id = outcome.image_id or await _image_id(api, spec.tag)
    if spec.build_args:
        on_line("keeping build-time values out of the image's history")
        try:
            image_id = await asyncio.to_thread(
                scrub_image, api, spec.tag, spec.build_args, spec.context_tar.parent
            )
            if spec.stage_labels:
                await asyncio.to_thread(remove_stages, api, spec.stage_labels)
        except (
            docker.errors.DockerException,
            requests.exceptions.RequestException,
            OSError,
            tarfile.TarError,
            ValueError,
            KeyError,
        ) as exc:
            with contextlib.suppress(
                docker.errors.DockerException, requests.exceptions.RequestException
            ):
                await asyncio.to_thread(api.remove_image, spec.tag, force=True)
            raise BuildFailed(f"cannot rewrite the image's history: {exc}") from None
    return image_id


def _build_params(spec: BuildSpec) -> dict[str, Any]:
    """The query of the Engine's /build request, limits included."""
    params: dict[str, Any] = {
        "t": spec.tag,
        "dockerfile": spec.dockerfile,
        "rm": True,
        "forcerm": True,
    }
    if spec.memory is not None:
        # memswap = memory: a step cannot swap its way past the limit.
        params.update(memory=spec.memory, memswap=spec.memory)
    if spec.cpus is not None:
        # What `docker run --cpus` sets: a hard CFS quota per 100 ms (at least 1 ms).
        params.update(cpuperiod=100_000, cpuquota=max(1_000, round(spec.cpus * 100_000)))
    if spec.target:
        params["target"] = spec.target
    if spec.no_cache:
        params["nocache"] = True
    if spec.build_args:
        params["buildargs"] = json.dumps(dict(spec.build_args))
    return params


def _cut(response: Any) -> None:
    """Close a /build response's connection: the daemon then cancels the build."""
    # shutdown(), not close(): it wakes the pump thread's blocked recv() and tells the
    # daemon at once; close() alone would wait for that read (and the next output).
    sock = getattr(response.raw.connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Pump:
    """The thread side of a build: makes the /build request and forwards its events to
    `queue` as (kind, value) pairs, kind being line, code, error, id and finally done.

    The request is made with docker-py's own helpers rather than api.build(), which refuses
    the Engine's cpuperiod/cpuquota parameters (cpushares is a weight, not a limit) and hides
    the HTTP response, which is what cancels a build: when the client's connection closes,
    the daemon cancels the build and kills and removes the running step's container.
    """

    def __init__(self, api: Any, spec: BuildSpec) -> None:
        self._api = api
        self._spec = spec
        self._params = _build_params(spec)
        self._loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._responses: list[Any] = []  # the open /build response, once the daemon answers

    def cancel(self) -> None:
        self._cancelled.set()
        for response in list(self._responses):
            _cut(response)

    def _post(self, kind: str, value: str) -> None:
        self._loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))

    def _stream(self) -> Iterator[dict[str, Any]]:
        api = self._api
        headers = {"Content-Type": "application/tar"}
        api._set_auth_headers(headers)  # registry credentials for FROM, as api.build does
        with open(self._spec.context_tar, "rb") as context:
            response = api._post(
                api._url("/build"),
                data=context,
                params=self._params,
                headers=headers,
                stream=True,
                timeout=None,
            )
        self._responses.append(response)
        try:
            if self._cancelled.is_set():  # the deadline passed while the context was uploading
                _cut(response)
            yield from api._stream_helper(response, decode=True)
        finally:
            response.close()

    def run(self) -> None:
        """Runs in a thread: forward decoded build events to the loop, line by line."""
        partial = ""
        try:
            for item in self._stream():
                if "stream" in item:
                    partial += item["stream"]
                    *lines, partial = partial.split("\n")
                    for line in lines:
                        self._post("line", line)
                elif "error" in item:
                    code = (item.get("errorDetail") or {}).get("code")
                    if isinstance(code, int):
                        self._post("code", str(code))
                    self._post("error", item["error"])
                elif "aux" in item and "ID" in item["aux"]:
                    self._post("id", item["aux"]["ID"])
            if partial:
                self._post("line", partial)
        except docker.errors.APIError as exc:
            self._post("error", str(exc.explanation or exc))
        except Exception as exc:  # the thread must always report back to the loop
            self._post("error", f"docker build: {exc}")
        self._post("done", "")


@dataclass
class _Outcome:
    """What the loop side has learnt of a build from the pump's events."""

    image_id: str = ""
    error: str = ""
    exit_code: int | None = None
    steps: list[str] = field(default_factory=list)  # the containers the RUN steps ran in

    def take(self, kind: str, value: str, on_line: Callable[[str], None]) -> bool:
        """Record one event; False once the build is done."""
        if kind == "line":
            line = value.rstrip("\r")
            if match := _RUNNING_IN.fullmatch(line):
                self.steps.append(match[1])
            on_line(line)
        elif kind == "error":
            self.error = value.strip()
        elif kind == "code":
            self.exit_code = int(value)
        elif kind == "id":
            self.image_id = value
        else:
            return False
        return True


async def _failure(api: Any, spec: BuildSpec, outcome: _Outcome, started: float) -> BuildFailed:
    """The error of a build that reported one, telling an out-of-memory kill apart."""
    if spec.memory is not None and (
        outcome.exit_code == 137 or outcome.error.endswith("returned a non-zero code: 137")
    ):
        size = _memory_text(spec.memory)
        if outcome.steps and await _oom_killed(api, outcome.steps[-1], started):
            return BuildFailed(
                f"a build step ran out of memory: it needed more than build_memory_limit "
                f"({size}); raise build_memory_limit or make the build use less memory"
            )
        return BuildFailed(
            f"a build step was killed (exit code 137), most likely for using more than "
            f"build_memory_limit ({size}) of memory; raise build_memory_limit or make "
            "the build use less memory"
        )
    return BuildFailed(outcome.error.splitlines()[-1])


def _memory_text(size: int) -> str:
    """A byte count as build_memory_limit would be written: 512m, 2g, or in bytes."""
    return next(
        (
            f"{size // f}{unit}"
            for unit, f in (("g", 1024**3), ("m", 1024**2), ("k", 1024))
            if size % f == 0
        ),
        f"{size} bytes",
    )


def _container_gone(api: Any, container_id: str) -> bool:
    try:
        api.inspect_container(container_id)
    except docker.errors.NotFound:
        return True
    return False


def _remove_container(api: Any, container_id: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_container(container_id, force=True, v=True)


async def _reap(api: Any, container_id: str) -> None:
    """Make sure a cancelled build's step container is gone: the daemon kills and
    removes it when the connection closes; remove it by force if it has not."""
    with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
        for _ in range(50):
            if await asyncio.to_thread(_container_gone, api, container_id):
                return
            await asyncio.sleep(0.1)
        await asyncio.to_thread(_remove_container, api, container_id)


def _oom_events(api: Any, container_id: str, since: float) -> bool:
    # With `until`, the stream ends by itself: read it to the end.
    return bool(
        list(
            api.events(
                since=int(since) - 1,
                until=f"{time.time():.9f}",
                decode=True,
                filters={"container": container_id, "event": "oom"},
            )
        )
    )


async def _oom_killed(api: Any, container_id: str, since: float) -> bool:
    """Whether the engine reported an OOM kill of the step's container (the container
    itself is gone by now). False when unsure, e.g. the engine's clock differs."""
    try:
        return await asyncio.to_thread(_oom_events, api, container_id, since)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False


async def _image_id(api: Any, tag: str) -> str:
    """The id of the image tagged `tag`, for a build that did not report it. Errors are
    reported as DockerRuntime._call reports them."""
    try:
        image = await asyncio.to_thread(api.inspect_image, tag)
    except docker.errors.APIError as exc:
        raise RuntimeOperationError(
            f"docker inspect image failed: {exc.explanation or exc}"
        ) from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise RuntimeUnavailable(f"docker inspect image failed: {exc}") from None
    return str(image["Id"])
