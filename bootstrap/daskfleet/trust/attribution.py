"""Who each graph and task belongs to: recorded by the scheduler when it admits a graph, never claimed by a peer."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GraphOrigin:
    """An admitted graph: the user charged for it, and who sent it (the user, or a task client for a user's task)."""

    owner: str
    client: str
    sender: str
    submitting_task: Any = None

    @property
    def via_task_client(self) -> bool:
        return self.sender != self.owner

    def audit_fields(self) -> dict[str, Any]:
        """What the audit log says of the graph's origin: a task client's graphs name the task they came from."""
        fields: dict[str, Any] = {"identity": self.owner, "client": self.client}
        if self.via_task_client:
            fields.update(task_client=self.sender, submitting_task=str(self.submitting_task))
        return fields


class TaskOwners:
    """The user whose graph created each live task; entries go with the task's scheduler state."""

    def __init__(self) -> None:
        self._owners: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    def record(self, tasks: Iterable[Any], owner: str) -> None:
        """Tasks a graph touched: new ones become ``owner``'s; a task another graph created keeps its owner."""
        owners = self._owners
        for ts in tasks:
            if ts is not None and ts not in owners:
                owners[ts] = owner

    def owner_of(self, ts: Any) -> str | None:
        return self._owners.get(ts) if ts is not None else None
