"""Why the scheduler closes a worker, told to the worker: a ``client.restart()``, a retirement, or neither.

distributed closes a worker without a nanny with the same message whether it restarts it, retires it
or drops it (``scheduler-remove-worker``), and hopes "a deployment system" starts restarted ones
again. The scheduler sends ``RESTART_WORKER_OP`` (restart) or ``RETIRE_WORKER_OP`` (an expected
removal: retirement, scale-down) on the worker's stream first (the stream keeps order), so the agent
exits with RESTART_REQUESTED (its supervisor restarts it at once) or RETIRED (it stays down); a
removal with neither (e.g. missed heartbeats) is a lost scheduler (it rejoins).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..conventions import RESTART_WORKER_OP, RETIRE_WORKER_OP

#: The scheduler's close message to a worker it retires (``retire_workers(close_workers=True)``): a retirement.
RETIRE_CLOSE_REASON = "scheduler-close-worker"
#: Closes after which a running task's result can go nowhere: the worker stops without waiting for it
#: (distributed would wait, as a nanny kills the process anyway; the agent's process ends instead).
ABANDON_REASONS = frozenset({"worker-handle-scheduler-connection-broken", "scheduler-close", "scheduler-remove-worker"})


def announce_closes(scheduler: Any, on_restart: Callable[[int], None] | None = None) -> None:
    """Tell each worker why the scheduler closes it; ``on_restart(n)`` hears how many workers restart.

    Install before the guards wrap the handlers, so the wrapped handler is this one.
    """
    original = scheduler.restart_workers
    remove_worker = scheduler.remove_worker

    async def remove_announced(address: str, *args: Any, close: bool = True, expected: bool = False, **kwargs: Any) -> Any:
        if close and expected and address in scheduler.workers:
            scheduler.worker_send(address, {"op": RETIRE_WORKER_OP})
        return await remove_worker(address, *args, close=close, expected=expected, **kwargs)

    async def restart_workers(workers: list[str] | None = None, **kwargs: Any) -> Any:
        targets = list(scheduler.workers) if workers is None else [w for w in workers if w in scheduler.workers]
        restarting = [address for address in targets if not scheduler.workers[address].nanny]
        for address in restarting:
            scheduler.worker_send(address, {"op": RESTART_WORKER_OP, "reason": kwargs.get("stimulus_id", "")})
        if restarting and on_restart is not None:
            on_restart(len(restarting))
        return await original(workers, **kwargs)

    scheduler.restart_workers = restart_workers
    scheduler.handlers["restart_workers"] = restart_workers
    scheduler.remove_worker = remove_announced


class CloseReasons:
    """What the scheduler said before this worker closed: whether it asked for a restart or retired it."""

    def __init__(self, worker: Any):
        self.restart = asyncio.Event()
        self.retired = asyncio.Event()
        worker.stream_handlers[RESTART_WORKER_OP] = lambda **_: self.restart.set()
        worker.stream_handlers[RETIRE_WORKER_OP] = lambda **_: self.retired.set()
        close = worker.close

        async def close_abandoning_lost_work(*args: Any, reason: str = "worker-close", **kwargs: Any) -> Any:
            if reason in ABANDON_REASONS and not self.retired.is_set():
                kwargs["executor_wait"] = False
            return await close(*args, reason=reason, **kwargs)

        async def close_from_scheduler(*args: Any, reason: str = "", **kwargs: Any) -> Any:
            if reason == RETIRE_CLOSE_REASON:
                self.retired.set()
            return await worker.close(*args, reason=reason, **kwargs)

        worker.close = close_abandoning_lost_work
        worker.stream_handlers["close"] = close_from_scheduler
