"""A cluster's deny-list: the users whose access was revoked, read by the scheduler and the certificate vendor.

One document per cluster (an SSM parameter on AWS, ``conventions.deny_list_parameter_name``; ``<state>/deny-list.json``
for a local cluster), its versions the history::

    {"users": {"<user>": {"revoked_at": <epoch seconds>, "by": "<who>", "reason": "..."}}}

Pure: parsing, the decision ``denies`` and the edits ``with_entry``/``without``; readers and writers live with the
places that store it (``daskfleet.trust.revocation`` on the scheduler, ``daskfleet.aws.denylist``, the local state).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import conventions
from ..errors import DaskfleetError, ExitCode

#: The document's keys, and each entry's.
USERS_KEY = "users"
ENTRY_KEYS = ("revoked_at", "by", "reason")


@dataclass(frozen=True)
class DenyEntry:
    """Why and since when ``user`` is denied."""

    user: str
    revoked_at: float
    by: str
    reason: str = ""

    def describe(self) -> str:
        """``revoked at 2026-12-02T17:00:00Z by ops (reason)``: what a refused user and ``daskfleet status`` show."""
        import datetime as dt  # noqa: PLC0415

        when = dt.datetime.fromtimestamp(self.revoked_at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        because = f": {self.reason}" if self.reason else ""
        return f"revoked at {when} by {self.by}{because}"


@dataclass(frozen=True)
class DenyList:
    """The users a cluster denies, by user name."""

    entries: Mapping[str, DenyEntry] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str | None, origin: str = "deny-list") -> DenyList:
        """Parse the document; empty or missing text is an empty list. One DaskfleetError naming the bad key."""
        if text is None or not text.strip():
            return cls()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DaskfleetError(f"{origin}: not JSON ({exc})", ExitCode.CONFIG) from None
        if not isinstance(raw, dict) or set(raw) - {USERS_KEY}:
            raise DaskfleetError(f"{origin}: expected an object with the one key {USERS_KEY!r}", ExitCode.CONFIG)
        users = raw.get(USERS_KEY, {})
        if not isinstance(users, dict):
            raise DaskfleetError(f"{origin}: {USERS_KEY}: expected an object of user -> entry", ExitCode.CONFIG)
        return cls({user: _entry(user, value, f"{origin}: {USERS_KEY}.{user}") for user, value in users.items()})

    def denies(self, user: str | None) -> DenyEntry | None:
        """The entry denying ``user``, or None when the user is not denied."""
        return self.entries.get(user) if user else None

    def users(self) -> list[str]:
        return sorted(self.entries)

    def to_json(self) -> str:
        doc = {USERS_KEY: {user: {"revoked_at": e.revoked_at, "by": e.by, "reason": e.reason}
                           for user, e in sorted(self.entries.items())}}
        return json.dumps(doc, sort_keys=True)

    def with_entry(self, user: str, by: str, reason: str, at: float) -> DenyList:
        """This list denying ``user`` too (a user already denied keeps the first revocation's entry)."""
        check_user(user)
        if user in self.entries:
            return self
        return DenyList({**self.entries, user: DenyEntry(user, float(at), by, reason)})

    def without(self, user: str) -> DenyList:
        """This list no longer denying ``user``."""
        return DenyList({name: entry for name, entry in self.entries.items() if name != user})

    def __bool__(self) -> bool:
        return bool(self.entries)


def check_user(user: str, key: str = "USER") -> str:
    """``user`` if it may name a user, else one DaskfleetError naming ``key``."""
    if not isinstance(user, str) or not re.fullmatch(conventions.USER_NAME_PATTERN, user):
        raise DaskfleetError(f"{key}: {user!r} is not a user name (accepted: {conventions.USER_NAME_PATTERN})",
                             ExitCode.CONFIG)
    return user


def _entry(user: Any, value: Any, origin: str) -> DenyEntry:
    check_user(user, origin)
    if not isinstance(value, dict) or set(value) - set(ENTRY_KEYS) or "revoked_at" not in value:
        raise DaskfleetError(f"{origin}: expected an object with revoked_at (epoch seconds) and optionally by, reason",
                             ExitCode.CONFIG)
    at, by, reason = value["revoked_at"], value.get("by", ""), value.get("reason", "")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or at < 0:
        raise DaskfleetError(f"{origin}.revoked_at: {at!r} is not epoch seconds", ExitCode.CONFIG)
    if not isinstance(by, str) or not isinstance(reason, str):
        raise DaskfleetError(f"{origin}: by and reason must be strings", ExitCode.CONFIG)
    return DenyEntry(user, float(at), by, reason)
