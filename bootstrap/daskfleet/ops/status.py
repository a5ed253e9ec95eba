"""An operator's view of one cluster, decided and rendered purely from what was observed (``observe`` gathers it).

Each part is a ``Part``: a value, or the reason it cannot be seen. An unavailable part (no Cost
Explorer, a scheduler asleep, no scaler yet) is stated, never an error.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .leaks import render_table

PENDING_STATES = ("Pending", "Pending:Wait", "Pending:Proceed")
DRAINING_STATES = ("Terminating", "Terminating:Wait", "Terminating:Proceed")


@dataclass(frozen=True)
class Part:
    """A value, or why there is none (``reason``)."""

    value: Any = None
    reason: str = ""

    @property
    def available(self) -> bool:
        return not self.reason


def unavailable(reason: str) -> Part:
    return Part(None, reason)


@dataclass(frozen=True)
class GroupCounts:
    desired: int
    in_service: int
    pending: int
    draining: int


@dataclass(frozen=True)
class WorkerSeen:
    address: str
    fingerprint: str | None
    matches: bool


@dataclass
class ClusterView:
    cluster: str
    region: str
    groups: dict[str, Part] = field(default_factory=dict)
    scheduler: Part = field(default_factory=lambda: unavailable("not checked"))
    expected_fingerprint: Part = field(default_factory=lambda: unavailable("not checked"))
    workers: Part = field(default_factory=lambda: unavailable("not checked"))
    idle: Part = field(default_factory=lambda: unavailable("not checked"))
    spend: Part = field(default_factory=lambda: unavailable("not checked"))
    budget: Part = field(default_factory=lambda: unavailable("not checked"))
    expires: Part = field(default_factory=lambda: unavailable("not checked"))
    boot_failures: Part = field(default_factory=lambda: unavailable("not checked"))
    #: The cluster's deny-list: [{"user", "revoked_at", "by", "reason"}], oldest first.
    deny_list: Part = field(default_factory=lambda: unavailable("not checked"))


@dataclass(frozen=True)
class FailureGroup:
    """Nodes of one role and launch template version that stopped for good (could not start) in the window."""

    role: str
    version: str
    count: int
    last_instance: str
    last_code: int
    last_line: str

    @property
    def repeated(self) -> bool:
        return self.count > 1


def group_failures(failures: Iterable[Any], versions: Mapping[str, str]) -> list[FailureGroup]:
    """Failures (``aws.nodefailures.NodeFailure``, oldest first) by role and version, most failures first."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for failure in failures:
        key = (failure.role, versions.get(failure.instance, "an unknown launch template version"))
        groups.setdefault(key, []).append(failure)
    summary = [FailureGroup(role, version, len(items), items[-1].instance, items[-1].code, items[-1].line)
               for (role, version), items in groups.items()]
    return sorted(summary, key=lambda group: (-group.count, group.role, group.version))


def count_group(desired: int, lifecycle_states: Iterable[str]) -> GroupCounts:
    states = list(lifecycle_states)
    return GroupCounts(
        desired=desired,
        in_service=states.count("InService"),
        pending=sum(state in PENDING_STATES for state in states),
        draining=sum(state in DRAINING_STATES for state in states),
    )


def workers_seen(identity_workers: Mapping[str, Mapping[str, Any]], fingerprint_key: str, expected: str | None) -> list[WorkerSeen]:
    """Registered workers from the scheduler's identity, each against the expected fingerprint."""
    seen = []
    for address, info in sorted(identity_workers.items()):
        fingerprint = info.get(fingerprint_key)
        seen.append(WorkerSeen(address, fingerprint, expected is not None and fingerprint == expected))
    return seen


def _text(part: Part, show=str) -> str:
    return show(part.value) if part.available else f"not available: {part.reason}"


def _money(value: Mapping[str, Any]) -> str:
    return f"{float(value['amount']):.2f} {value['unit']}"


def _spend_text(value: Mapping[str, Any]) -> str:
    return f"{_money(value)} this month so far (since {value['since']}, Cost Explorer)"


def _budget_text(value: Mapping[str, Any]) -> str:
    spent = f", {_money(value['actual'])} spent this month (Budgets)" if value.get("actual") else ""
    return f"{_money(value)} a month{spent}"


def render_text(view: ClusterView) -> str:
    """The table a person reads first, then the facts one per line."""
    rows = []
    for role, part in view.groups.items():
        if part.available:
            counts: GroupCounts = part.value
            rows.append((role, str(counts.desired), str(counts.in_service), str(counts.pending), str(counts.draining)))
        else:
            rows.append((role, f"not available: {part.reason}", "", "", ""))
    lines = [f"cluster {view.cluster} ({view.region})", "",
             render_table(("GROUP", "DESIRED", "IN SERVICE", "PENDING", "DRAINING"), rows), ""]
    lines.append(f"scheduler:   {_text(view.scheduler)}")
    lines.append(f"expected:    {_text(view.expected_fingerprint)}")
    if view.workers.available:
        lines.append(f"workers:     {len(view.workers.value)} registered")
        for worker in view.workers.value:
            mark = "ok" if worker.matches else "MISMATCH"
            lines.append(f"  {worker.address}  {worker.fingerprint or '(none reported)'}  {mark}")
    else:
        lines.append(f"workers:     not available: {view.workers.reason}")
    lines.append(f"idle:        {_text(view.idle, _scaling_text)}")
    lines.append(f"spend:       {_text(view.spend, _spend_text)}")
    lines.append(f"budget:      {_text(view.budget, _budget_text)}")
    lines.append(f"expires:     {_text(view.expires)}")
    lines += _failure_lines(view.boot_failures)
    lines += deny_list_lines(view.deny_list)
    return "\n".join(lines)


def deny_list_rows(deny: Any) -> list[dict[str, Any]]:
    """A DenyList's entries as rows, oldest revocation first."""
    return [{"user": e.user, "revoked_at": e.revoked_at, "by": e.by, "reason": e.reason}
            for e in sorted(deny.entries.values(), key=lambda e: (e.revoked_at, e.user))]


def deny_list_lines(part: Part) -> list[str]:
    """``revoked:`` and one line per revoked user (``daskfleet status``, and ``daskfleet revoke``'s answer)."""
    if not part.available:
        return [f"revoked:     not available: {part.reason}"]
    if not part.value:
        return ["revoked:     nobody (the deny-list is empty)"]
    lines = [f"revoked:     {len(part.value)} user(s), refused by the scheduler and the certificate vendor:"]
    for row in part.value:
        when = dt.datetime.fromtimestamp(row["revoked_at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        reason = f": {row['reason']}" if row["reason"] else ""
        lines.append(f"  {row['user']:<16} since {when} by {row['by']}{reason}")
    return lines


def _failure_lines(part: Part) -> list[str]:
    if not part.available:
        return [f"failures:    not available: {part.reason}"]
    if not part.value:
        return ["failures:    no node stopped for good in the last 24 hours"]
    lines = ["failures:    nodes that could not start, in the last 24 hours:"]
    for group in part.value:
        mark = "  REPEATED: its group keeps replacing them" if group.repeated else ""
        lines.append(f"  {group.role} {group.version}: {group.count} instance(s){mark}")
        lines.append(f"    last: {group.last_instance} exit {group.last_code}: {group.last_line}")
    return lines


def render_json(view: ClusterView) -> str:
    """One JSON document for scripts: every part as {"available", "value" | "reason"}."""

    def part(p: Part) -> dict[str, Any]:
        if not p.available:
            return {"available": False, "reason": p.reason}
        value = p.value
        if isinstance(value, list):
            value = [asdict(item) if hasattr(item, "__dataclass_fields__") else item for item in value]
        elif hasattr(value, "__dataclass_fields__"):
            value = asdict(value)
        return {"available": True, "value": value}

    document = {
        "cluster": view.cluster, "region": view.region,
        "groups": {role: part(p) for role, p in view.groups.items()},
        **{name: part(getattr(view, name)) for name in
           ("scheduler", "expected_fingerprint", "workers", "idle", "spend", "budget", "expires", "boot_failures",
            "deny_list")},
    }
    return json.dumps(document, indent=2, sort_keys=True, default=str)


def _scaling_text(state: dict) -> str:
    """The scaler's state in a line: ``active, 2 workers (desired 2: ...)`` or ``idle: no work for 1200s, ...``."""
    head = state.get("state", "unknown")
    if state.get("idle_reason"):
        head += f": {state['idle_reason']}"
    if state.get("held"):
        head += f"; launches held: {state['held']}"
    detail = f"{state.get('workers', '?')} workers"
    if state.get("desired") is not None:
        detail += f" (desired {state['desired']}: {state.get('reason')})"
    return f"{head}; {detail}"
