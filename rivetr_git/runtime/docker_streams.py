"""Streaming docker-py output (logs, one-off runs, exec) into coroutines, cancellably.

docker-py streams are blocking iterators. Each gets its own thread, not the default
executor: a `logs -f` can last hours and would otherwise hold one of its few workers.
Cancelling the consuming task closes the stream's socket, which ends the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

OnOutput = Callable[[bytes], Awaitable[None]]
_WINDOW = 64  # chunks in flight between the thread and the coroutine (back-pressure)


async def pump(
    open_stream: Callable[[], Iterable[bytes]],
    on_output: OnOutput,
    close: Callable[[Any], None] | None = None,
) -> None:
    """Feed every chunk of the stream `open_stream()` returns to `on_output`, in order.

    Returns at the end of the stream; re-raises what opening or reading raised. When the
    caller is cancelled, the stream is closed (via `close`, default `stream.close()`).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    room = threading.Semaphore(_WINDOW)
    stop = threading.Event()
    holder: list[Any] = []
    closer = close or (lambda s: s.close())

    def put(item: bytes | BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def run() -> None:
        try:
            stream = open_stream()
            holder.append(stream)
            if stop.is_set():  # cancelled while it was opening
                with contextlib.suppress(Exception):
                    closer(stream)
                return
            for chunk in stream:
                while not room.acquire(timeout=0.5):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                put(bytes(chunk))
        except BaseException as exc:  # handed over to the coroutine
            if not stop.is_set():
                put(exc)
        finally:
            put(None)

    thread = threading.Thread(target=run, name="docker-stream", daemon=True)
    thread.start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            room.release()
            await on_output(item)
    finally:
        stop.set()
        if holder:
            with contextlib.suppress(Exception):
                closer(holder[0])
