"""A cluster's deny-list: the users whose certificates no longer count (revoked, or removed from the stack).

One JSON document per cluster, ``{"users": {"<user>": {"revoked_at": <epoch s>, "by": "<who>", "reason": "..."}}}``
(an SSM parameter on AWS, ``<state>/deny-list.json`` locally). Pure: readers and writers live with their place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..errors import DaskfleetError, ExitCode


@dataclass(frozen=True)
class DenyEntry:
    user: str
    revoked_at: float
    by: str
    reason: str = ""


@dataclass(frozen=True)
class DenyList:
    entries: Mapping[str, DenyEntry] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_json(cls, text: str) -> DenyList:
        """Parse the document; one clear error naming what is wrong."""
        try:
            doc = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise DaskfleetError(f"deny-list: not JSON ({exc})", ExitCode.CONFIG) from None
        users = doc.get("users", {}) if isinstance(doc, dict) else None
        if not isinstance(users, dict):
            raise DaskfleetError('deny-list: expected {"users": {USER: {...}}}', ExitCode.CONFIG)
        entries = {}
        for user, entry in users.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("revoked_at", 0), (int, float)):
                raise DaskfleetError(f"deny-list: users.{user}: expected {{revoked_at, by, reason}}", ExitCode.CONFIG)
            entries[user] = DenyEntry(user, float(entry.get("revoked_at", 0)), str(entry.get("by", "")),
                                      str(entry.get("reason", "")))
        return cls(MappingProxyType(entries))

    def to_json(self) -> str:
        return json.dumps({"users": {user: {"revoked_at": e.revoked_at, "by": e.by, "reason": e.reason}
                                     for user, e in sorted(self.entries.items())}}, sort_keys=True)

    def denies(self, user: str) -> DenyEntry | None:
        return self.entries.get(user)

    def with_entry(self, user: str, by: str, reason: str, at: float) -> DenyList:
        return DenyList(MappingProxyType({**self.entries, user: DenyEntry(user, at, by, reason)}))

    def without(self, user: str) -> DenyList:
        return DenyList(MappingProxyType({name: e for name, e in self.entries.items() if name != user}))
