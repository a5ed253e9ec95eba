"""Which tagged resources the janitor removes, and in what order: pure decisions on what was found.

A resource is a leak when it carries the project's cluster tag and either its ``expires`` tag
has passed, or (with orphans asked for) its cluster has no live stack. Nothing without the
cluster tag is ever selected, nor anything whose expiry is unreadable or still ahead.
Resources that cannot carry tags (lifecycle hooks, a budget whose tags the endpoint does not
report) inherit cluster and expiry from the resource or cluster they belong to; see ``Found``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from .. import conventions

#: Kinds in the order they are deleted: what holds something else goes first.
DELETION_ORDER: tuple[str, ...] = (
    "autoscaling-group",
    "instance",
    "volume",
    "launch-template",
    "lifecycle-hook",
    "lambda-function",
    "event-rule",
    "vpc-endpoint",
    "nat-gateway",
    "elastic-ip",
    "internet-gateway",
    "network-interface",
    "security-group",
    "subnet",
    "route-table",
    "vpc",
    "hosted-zone",
    "secret",
    "ssm-parameter",
    "log-group",
    "bucket",
    "kms-key",
    "instance-profile",
    "iam-role",
    "iam-policy",
    "budget",
)
#: How long a cluster with no live stack must have existed before ``--orphans`` selects it:
#: a stack being created has resources before it has outputs naming its cluster.
DEFAULT_ORPHAN_GRACE = dt.timedelta(hours=6)


@dataclass(frozen=True)
class Found:
    """One resource carrying (or inheriting) the cluster tag, as found in a region.

    ``expires`` is the raw ``expires`` tag (None: no such tag). ``created`` is None where the
    service does not say. ``inherits`` is set for resources without tags of their own: they
    take their cluster's expiry (the latest among its tagged resources).
    """

    kind: str
    id: str
    cluster: str
    expires: str | None = None
    created: dt.datetime | None = None
    inherits: bool = False
    #: What deleting it needs beyond the id (an ARN, the group it belongs to, ...).
    detail: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in DELETION_ORDER:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {', '.join(DELETION_ORDER)}")


@dataclass(frozen=True)
class Decision:
    found: Found
    selected: bool
    reason: str


def parse_expiry(text: str | None) -> dt.datetime | None:
    """When an ``expires`` tag has passed: the end (UTC) of a YYYY-MM-DD date, or an ISO time; None if unreadable."""
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def cluster_expiries(found: Iterable[Found]) -> dict[str, str]:
    """Cluster -> the latest readable expiry among its tagged resources (the conservative one)."""
    latest: dict[str, tuple[dt.datetime, str]] = {}
    for item in found:
        moment = None if item.inherits else parse_expiry(item.expires)
        if moment is not None and (item.cluster not in latest or moment > latest[item.cluster][0]):
            latest[item.cluster] = (moment, item.expires or "")
    return {cluster: text for cluster, (_, text) in latest.items()}


def with_inherited_expiry(found: Sequence[Found]) -> list[Found]:
    """Resources without tags of their own get their cluster's expiry."""
    expiries = cluster_expiries(found)
    return [replace(item, expires=expiries.get(item.cluster)) if item.inherits else item for item in found]


def cluster_ages(found: Iterable[Found], now: dt.datetime) -> dict[str, dt.timedelta]:
    """Cluster -> the age of its oldest resource whose creation time is known."""
    ages: dict[str, dt.timedelta] = {}
    for item in found:
        if item.created is not None:
            ages[item.cluster] = max(ages.get(item.cluster, dt.timedelta(0)), now - item.created)
    return ages


def decide(
    found: Sequence[Found],
    now: dt.datetime,
    *,
    live_clusters: frozenset[str] | None = None,
    orphan_grace: dt.timedelta = DEFAULT_ORPHAN_GRACE,
) -> list[Decision]:
    """One decision per resource; ``live_clusters`` (for ``--orphans``) also selects clusters not in it."""
    resolved = with_inherited_expiry(found)
    ages = cluster_ages(resolved, now)
    return [_decide_one(item, now, live_clusters, ages.get(item.cluster), orphan_grace) for item in resolved]


def _decide_one(
    item: Found, now: dt.datetime, live: frozenset[str] | None, age: dt.timedelta | None, grace: dt.timedelta,
) -> Decision:
    if not item.cluster:
        return Decision(item, False, f"no {conventions.TAG_CLUSTER} tag")
    expiry = parse_expiry(item.expires)
    if expiry is not None and expiry <= now:
        return Decision(item, True, f"expired {item.expires}")
    if live is not None and item.cluster not in live:
        if age is None or age < grace:
            return Decision(item, False, f"cluster {item.cluster} has no live stack, but is younger than {_span(grace)}")
        return Decision(item, True, f"cluster {item.cluster} has no live stack")
    if item.expires and expiry is None:
        return Decision(item, False, f"unreadable expiry {item.expires!r}")
    if expiry is not None:
        return Decision(item, False, f"expires {item.expires}")
    return Decision(item, False, "no expiry")


def deletion_plan(decisions: Iterable[Decision]) -> list[Found]:
    """The selected resources, in DELETION_ORDER (then by cluster and id, for a stable table)."""
    rank = {kind: index for index, kind in enumerate(DELETION_ORDER)}
    chosen = [decision.found for decision in decisions if decision.selected]
    return sorted(chosen, key=lambda item: (rank[item.kind], item.cluster, item.id))


def age_text(created: dt.datetime | None, now: dt.datetime) -> str:
    return "-" if created is None else _span(now - created)


def _span(delta: dt.timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    if hours >= 48:
        return f"{hours // 24}d"
    if hours >= 1:
        return f"{hours}h"
    return f"{max(int(delta.total_seconds() // 60), 0)}m"


def plan_rows(plan: Sequence[Found], now: dt.datetime) -> list[tuple[str, str, str, str, str]]:
    """The dry-run table: type, id, cluster, expires, age."""
    return [(item.kind, item.id, item.cluster, item.expires or "-", age_text(item.created, now)) for item in plan]


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, columns padded to their widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *rows]]
    return "\n".join(lines)
