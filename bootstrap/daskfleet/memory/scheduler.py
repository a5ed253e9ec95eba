"""The scheduler's side of a memory kill: it hears of it before the worker dies, audits and counts it, and names it.

Whoever ends a worker for memory reports it first (``conventions.MEMORY_KILL_OP``, with the worker's certificate,
for a worker on the caller's own host) and ends it only once the scheduler has answered, so the scheduler
knows why the worker dies before it sees it go. distributed then builds a ``KilledWorker`` for each task
the worker was running that has run out of ``distributed.scheduler.allowed-failures`` (``remove_worker``);
for a worker ended for memory that exception becomes a ``MemoryKilledWorker``: the same type to catch, whose
message names the limit. The kill is also an audit line (``worker-memory-exceeded``), distributed's own event
(topic ``worker-restart-memory``, as the nanny logs it) and ``daskfleet_worker_memory_kills_total``.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterator
from typing import Any

from dask.utils import format_bytes
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.scheduler import KilledWorker
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily

from .. import conventions
from ..trust.audit import AuditLog
from ..trust.peers import Peer
from .policy import TERMINATE_KEY, MemoryKill

logger = logging.getLogger("daskfleet.scheduler")

#: distributed's event topic for a worker its nanny restarted for memory; a memory kill is logged there too.
EVENT_TOPIC = "worker-restart-memory"


class MemoryKilledWorker(KilledWorker):
    """A ``KilledWorker`` whose last worker was ended for exceeding its memory limit: its message says so, and how much."""

    def __init__(self, task: Any, last_worker: Any, allowed_failures: int, rss: int, memory_limit: int, terminate: float):
        Exception.__init__(self, task, last_worker, allowed_failures, rss, memory_limit, terminate)

    @property
    def rss(self) -> int:
        return self.args[3]

    @property
    def memory_limit(self) -> int:
        return self.args[4]

    def __str__(self) -> str:
        rss, limit, fraction = self.args[3:6]
        return (
            f"Attempted to run task {self.task!r} on {self.allowed_failures + 1} different workers, but all those "
            f"workers died while running it. The last, {self.last_worker.address}, exceeded its memory limit: it was "
            f"ended at {format_bytes(rss)} of process memory, above {fraction:.0%} of its {format_bytes(limit)} limit "
            f"({TERMINATE_KEY}). Make the task hold less at once (smaller partitions or chunks), or give the workers "
            "more memory."
        )


class MemoryKills(SchedulerPlugin):
    """The memory kills reported to this scheduler: pending ones by worker address, and how many in all."""

    name = "daskfleet-memory"

    def __init__(self, scheduler: Any, audit: AuditLog):
        self.scheduler = scheduler
        self.audit = audit
        #: Workers reported as being ended for memory, until distributed has removed them.
        self.pending: dict[str, MemoryKill] = {}
        self.total = 0

    def report(self, comm: Any, worker: str, pid: int, rss: int, memory_limit: int, terminate: float) -> str:
        """``MEMORY_KILL_OP``: the guard has checked that the caller is a worker on ``worker``'s host."""
        kill = MemoryKill(int(pid), int(rss), int(memory_limit), float(terminate))
        peer = Peer.from_peercert(comm.extra_info.get("peercert"), comm.peer_address)
        ws = self.scheduler.workers.get(worker)
        name = None if ws is None else ws.name
        if ws is not None and ws.pid == kill.pid:  # the worker it names runs in that process: its tasks learn why
            self.pending[worker] = kill
        self.total += 1
        logger.warning("worker %s (%s, pid %d) %s: it is being ended", worker, name, kill.pid, kill.describe())
        self.audit.record("worker-memory-exceeded", identity=peer.identity, worker=worker, name=name, pid=kill.pid,
                          rss=kill.rss, memory_limit=kill.limit, terminate=kill.fraction)
        self.scheduler.log_event(EVENT_TOPIC, {"worker": worker, "pid": kill.pid, "rss": kill.rss,
                                               "memory_limit": kill.limit})
        return "OK"

    def explaining(self, transition: Callable[..., Any]) -> Callable[..., Any]:
        """``Scheduler.transition``, turning the KilledWorker of a worker ended for memory into a MemoryKilledWorker.

        ``remove_worker`` errs each task that ran out of allowed failures with ``transition(key, "erred",
        exception=<pickled KilledWorker>, worker=<address>, …)``; nothing on the per-task path calls it.
        """

        def transition_explained(key: Any, finish: str, stimulus_id: str, **kwargs: Any) -> Any:
            kill = self.pending.get(kwargs.get("worker")) if finish == "erred" else None
            if kill is not None and "exception" in kwargs:
                kwargs["exception"] = _explained(kwargs["exception"], kill)
            return transition(key, finish, stimulus_id, **kwargs)

        return transition_explained

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.pending.pop(worker, None)


def _explained(exception: Any, kill: MemoryKill) -> Any:
    error = pickle.loads(exception)  # pickled by this scheduler's own ``remove_worker``
    if not isinstance(error, KilledWorker) or isinstance(error, MemoryKilledWorker):
        return exception
    return pickle.dumps(MemoryKilledWorker(error.task, error.last_worker, error.allowed_failures,
                                           kill.rss, kill.limit, kill.fraction))


class MemoryKillsCollector:
    """``daskfleet_worker_memory_kills_total`` on the scheduler's /metrics, beside the usage metrics."""

    def __init__(self) -> None:
        self.kills: MemoryKills | None = None

    def collect(self) -> Iterator[Any]:
        if self.kills is not None:
            yield CounterMetricFamily("daskfleet_worker_memory_kills",
                                      "Workers ended for exceeding their memory limit (distributed.worker.memory.terminate)",
                                      value=self.kills.total)


#: One per process (the default registry refuses a second with the same name); it follows the latest scheduler.
COLLECTOR = MemoryKillsCollector()
REGISTRY.register(COLLECTOR)


def install(scheduler: Any, guard: Any, audit: AuditLog) -> MemoryKills:
    """Serve the report (behind the guard's checks), explain KilledWorker, count: call after ``guard.install``."""
    kills = MemoryKills(scheduler, audit)
    guard.add_handler(conventions.MEMORY_KILL_OP, kills.report)
    scheduler.add_plugin(kills, name=kills.name)
    scheduler.transition = kills.explaining(scheduler.transition)
    COLLECTOR.kills = kills
    return kills
