"""The scheduler plugin feeding the ledger: task transitions, workers joining and leaving, users connecting.

A task's prefix is distributed's ``TaskState.prefix.name`` (the worker's profiler keys its samples by
the same name). A task that leaves processing without a result or an error of its own (cancelled,
retried after an error, lost with its worker) still counts the compute it used: the run time its
worker last reported in a heartbeat (``WorkerState.executing``) plus the time since, at most the
time it was processing; the worker reports nothing more for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from ..conventions import USER_ROLES
from ..scaling.runner import WORK_STATES
from .policy import INSTANCE_KEY, LOCAL_INSTANCE_TYPE

#: Who owns a task whose graph the guard never saw (e.g. data scattered before a graph): charged as such.
UNKNOWN_OWNER = "unknown"


def compute_seconds(startstops: Any) -> float:
    """A finished task's own run time, from the worker's start/stop records."""
    return sum(ss["stop"] - ss["start"] for ss in startstops or () if ss.get("action") == "compute")


class UsagePlugin(SchedulerPlugin):
    """Turns scheduler events into ledger entries; owners come from the guard's record of each graph."""

    name = "daskfleet-usage"

    def __init__(self, accounting: Any):
        """``accounting``: the scheduler's daskfleet.usage.service.UsageAccounting."""
        self.accounting = accounting
        self.ledger = accounting.ledger
        self.owners = accounting.guard.owners
        self.scheduler = accounting.scheduler
        self.users: dict[str, str] = {}  # client id -> user, for users' own clients (not task clients)
        self.by_prefix = bool(self.ledger.prefixes_per_user)

    def transition(self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any) -> None:
        was, now = start in WORK_STATES, finish in WORK_STATES
        if was != now or finish == "processing":  # the owner is looked up once, and only when it is needed
            ts = self.scheduler.tasks.get(key)
            owner = self.owners.owner_of(ts) or UNKNOWN_OWNER
            if was != now:
                (self.ledger.work_added if now else self.ledger.work_removed)(owner)
            if finish == "processing" and ts is not None and ts.processing_on is not None:
                self.ledger.task_started(key, owner, ts.processing_on.address, ts.prefix.name if self.by_prefix else None)
        if start == "processing":
            if finish in ("memory", "erred") and "startstops" in kwargs:
                self.ledger.task_stopped(key, compute_seconds(kwargs["startstops"]))
            else:
                worker = self.ledger.worker_of(key)
                if worker is not None:
                    self.ledger.task_left(key, self._reported_run_s(key, worker))

    def _reported_run_s(self, key: Any, worker: str) -> float | None:
        """How long ``key`` had run on ``worker`` by its last heartbeat, plus the time since; None: the worker is gone."""
        ws = self.scheduler.workers.get(worker)
        if ws is None:
            return None
        for ts, seconds in ws.executing.items():
            if ts.key == key:
                return seconds + max(self.ledger.clock() - ws.last_seen, 0.0)
        return 0.0  # not running when its worker last reported: queued there, or started since (under a heartbeat)

    def add_worker(self, scheduler: Any, worker: str) -> None:
        ws = scheduler.workers.get(worker)
        kind = (ws.extra or {}).get(INSTANCE_KEY) if ws is not None else None
        instance_type, purchase = kind if isinstance(kind, (list, tuple)) and len(kind) == 2 else (LOCAL_INSTANCE_TYPE, "on-demand")
        self.ledger.worker_joined(worker, str(instance_type), str(purchase))

    def remove_worker(self, scheduler: Any, worker: str, *, stimulus_id: str, **kwargs: Any) -> None:
        self.ledger.worker_left(worker)

    def add_client(self, scheduler: Any, client: str) -> None:
        peer = self.accounting.guard.identities.get(client)
        if peer is not None and peer.role in USER_ROLES:
            self.users[client] = peer.identity
            self.ledger.client_connected(peer.identity)

    def remove_client(self, scheduler: Any, client: str) -> None:
        user = self.users.pop(client, None)
        if user is not None:
            self.ledger.client_disconnected(user)

    async def close(self) -> None:
        self.accounting.write_record()
        forward = self.accounting.records_log.forward
        if forward is not None and hasattr(forward, "close"):
            await asyncio.to_thread(forward.close)
