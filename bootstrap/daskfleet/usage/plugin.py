"""The scheduler plugin feeding the ledger: task transitions, workers joining and leaving, users connecting."""

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

    def transition(self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any) -> None:
        was, now = start in WORK_STATES, finish in WORK_STATES
        if was != now or finish == "processing":  # the owner is looked up once, and only when it is needed
            ts = self.scheduler.tasks.get(key)
            owner = self.owners.owner_of(ts) or UNKNOWN_OWNER
            if was != now:
                (self.ledger.work_added if now else self.ledger.work_removed)(owner)
            if finish == "processing" and ts is not None and ts.processing_on is not None:
                self.ledger.task_started(key, owner, ts.processing_on.address)
        if start == "processing":
            ran = finish in ("memory", "erred") and "startstops" in kwargs
            self.ledger.task_stopped(key, compute_seconds(kwargs["startstops"]) if ran else None)

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
