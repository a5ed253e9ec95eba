"""The audit trail: one JSON line per security-relevant event, with the peer's certificate identity."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from .attribution import GraphOrigin, TaskOwners
from .peers import Peer

logger = logging.getLogger("daskfleet.scheduler")


class AuditLog:
    """Append-only JSON lines: one per security-relevant event (or, labelled "usage", per usage record).
    Never contains key material."""

    def __init__(self, path: str | Path | None, forward: Callable[[str], None] | None = None, label: str = "audit"):
        self.path = Path(path) if path else None
        self.forward = forward
        self.label = label
        self._lock = threading.Lock()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, event: str, **fields: Any) -> None:
        entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), "event": event, **fields}
        line = json.dumps(entry, sort_keys=True, default=str)
        logger.info("%s %s", self.label, line)
        if self.forward:
            self.forward(line)
        if self.path:
            data = (line + "\n").encode()
            with self._lock:  # one unbuffered append: the record is in the file once ``record`` returns
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)


class AuditPlugin(SchedulerPlugin):
    """Records client disconnects and admitted graphs (the user charged, and the task client that sent
    a task's graph); records which user owns each task a graph creates."""

    name = "daskfleet-audit"

    def __init__(self, audit: AuditLog, identities: dict[str, Peer], origins: dict[str, GraphOrigin], owners: TaskOwners):
        self.audit = audit
        self.identities = identities
        self.origins = origins
        self.owners = owners

    def remove_client(self, scheduler: Any, client: str) -> None:
        peer = self.identities.pop(client, None)
        if peer is not None:
            event = "task-client-disconnect" if peer.role == "worker" else "client-disconnect"
            self.audit.record(event, identity=peer.identity, client=client, peer=peer.address)

    def update_graph(self, scheduler: Any, *, client: str, tasks: list, **kwargs: Any) -> None:
        origin = self.origins.get(client)
        if origin is None:  # not through the guarded stream handler (e.g. a scheduler-side client)
            peer = self.identities.get(client)
            self.audit.record("graph-submitted", identity=peer.identity if peer else None, client=client, tasks=len(tasks))
            return
        self.owners.record(map(scheduler.tasks.get, tasks), origin.owner)
        self.audit.record("graph-submitted", tasks=len(tasks), **origin.audit_fields())
