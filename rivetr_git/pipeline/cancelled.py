"""What `deploys:cancel` means to a running deployment (pipeline/queue.py cancels its task).

The run records itself as cancelled (pipeline/run.py, failure.py) and then returns like a
failed run instead of propagating the cancellation, so the app's queue keeps working.
"""

from __future__ import annotations

import asyncio


def absorb() -> bool:
    """Take back the cancellation the current task received; False when it was cancelled
    more than once (the server is also shutting down: let that one through)."""
    task = asyncio.current_task()
    return task is not None and task.uncancel() == 0
