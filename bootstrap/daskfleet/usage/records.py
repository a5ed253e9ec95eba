"""Usage records: what the ledger charged in each period, as JSON lines that outlive the scheduler.

Each record holds one period's differences, so records from several schedulers (restarts, a
cluster woken from zero) add up. The same summary reads the live scheduler's records and the
stored ones (a local file, or the cluster's CloudWatch log group on AWS).

With prefix accounting a record also holds ``prefixes``: per user, per task prefix, the same four
figures, adding up to the user's. A record without them (older ones, or accounting per user only)
still reads: its users' figures count as the prefix ``(not recorded)``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..conventions import IDLE_PREFIX, OTHER_PREFIX, UNRECORDED_PREFIX, USAGE_OP  # noqa: F401  (USAGE_OP: re-exported)
from .ledger import Totals, UserUsage, utc_day, utc_month

EVENT = "usage"
#: The scheduler's local copy of its usage records, next to its audit log (the local cluster's only store).
RECORDS_FILE = "usage.jsonl"
#: The usage records' log stream prefix in the cluster's log group (``usage/<instance id>``).
STREAM_PREFIX = "usage/"
#: The most characters a record's per-prefix figures take (CloudWatch Logs takes events of up to 256 KiB):
#: past it, the record's smallest prefixes count in their user's ``(other)`` (the sums stay the same).
PREFIX_TABLE_CHARS = 128_000


def iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.timezone.utc).isoformat(timespec="seconds")


def make_record(period: Totals, start: float, end: float, *, prefix_chars: int = PREFIX_TABLE_CHARS) -> dict[str, Any]:
    """One period's differences as a JSON-ready record."""
    record = {
        "event": EVENT, "start": iso(start), "end": iso(end), "start_ts": start, "end_ts": end,
        "users": {user: asdict(usage) for user, usage in sorted(period.users.items())},
        "workers": [{"instance_type": kind, "purchase": purchase, "seconds": seconds}
                    for (kind, purchase), seconds in sorted(period.worker_s.items())],
        "idle_s": period.idle_s, "scheduler_s": period.scheduler_s, "scheduler_cost_usd": period.scheduler_cost_usd,
    }
    if period.prefixes:
        record["prefixes"] = prefix_table(period.prefixes, prefix_chars)
    return record


def prefix_table(prefixes: Mapping[str, Mapping[str, UserUsage]], chars: int) -> dict[str, dict[str, dict[str, Any]]]:
    """Per user and prefix, the figures as JSON, in at most about ``chars`` characters: the smallest prefixes
    (by cost, then worker and compute time) fold into their user's ``(other)`` until it fits."""
    books = {user: dict(own) for user, own in prefixes.items()}

    def size(prefix: str, usage: UserUsage) -> int:
        return len(json.dumps(prefix)) + len(json.dumps(asdict(usage))) + 2

    total = sum(size(prefix, usage) for own in books.values() for prefix, usage in own.items())
    smallest = sorted((usage.cost_usd, usage.worker_s, usage.compute_s, user, prefix)
                      for user, own in books.items() for prefix, usage in own.items()
                      if prefix not in (OTHER_PREFIX, IDLE_PREFIX))
    for *_, user, prefix in smallest:
        if total <= chars:
            break
        own = books[user]
        usage = own.pop(prefix)
        total -= size(prefix, usage) + (size(OTHER_PREFIX, own[OTHER_PREFIX]) if OTHER_PREFIX in own else 0)
        own[OTHER_PREFIX] = own.get(OTHER_PREFIX, UserUsage()).plus(usage)
        total += size(OTHER_PREFIX, own[OTHER_PREFIX])
    return {user: {prefix: asdict(usage) for prefix, usage in sorted(own.items())} for user, own in sorted(books.items())}


@dataclass
class Summary:
    """Usage summed over records: per user, per user and prefix, and the cluster's totals."""

    users: dict[str, UserUsage] = field(default_factory=dict)
    prefixes: dict[str, dict[str, UserUsage]] = field(default_factory=dict)  # user -> prefix -> figures
    worker_s: dict[tuple[str, str], float] = field(default_factory=dict)
    idle_s: float = 0.0
    scheduler_cost_usd: float = 0.0
    start: float | None = None
    end: float | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        split = record.get("prefixes") or {}
        for user, figures in record.get("users", {}).items():
            usage = UserUsage(**figures)
            self.users[user] = self.users.get(user, UserUsage()).plus(usage)
            own = self.prefixes.setdefault(user, {})
            for prefix, usage in ({name: UserUsage(**f) for name, f in split[user].items()} if split.get(user)
                                  else {UNRECORDED_PREFIX: usage}).items():
                own[prefix] = own.get(prefix, UserUsage()).plus(usage)
        for entry in record.get("workers", ()):
            kind = (entry["instance_type"], entry["purchase"])
            self.worker_s[kind] = self.worker_s.get(kind, 0.0) + entry["seconds"]
        self.idle_s += record.get("idle_s", 0.0)
        self.scheduler_cost_usd += record.get("scheduler_cost_usd", 0.0)
        start, end = record["start_ts"], record["end_ts"]
        self.start = start if self.start is None else min(self.start, start)
        self.end = end if self.end is None else max(self.end, end)

    @property
    def cost_usd(self) -> float:
        return sum(usage.cost_usd for usage in self.users.values()) + self.scheduler_cost_usd

    def as_json(self) -> dict[str, Any]:
        return {
            "start": iso(self.start) if self.start is not None else None,
            "end": iso(self.end) if self.end is not None else None,
            "users": {user: asdict(usage) for user, usage in sorted(self.users.items())},
            "workers": [{"instance_type": kind, "purchase": purchase, "seconds": seconds}
                        for (kind, purchase), seconds in sorted(self.worker_s.items())],
            "idle_s": self.idle_s, "scheduler_cost_usd": self.scheduler_cost_usd, "cost_usd": self.cost_usd,
        }


def summarize(records: Iterable[Mapping[str, Any]], since: float | None = None) -> Summary:
    """Sum the records whose period ends after ``since`` (periods are whole: a record is in or out)."""
    summary = Summary()
    for record in records:
        if record.get("event") == EVENT and (since is None or record["end_ts"] > since):
            summary.add(record)
    return summary


def carried(records: Iterable[Mapping[str, Any]], now: float) -> tuple[float, dict[str, float]]:
    """This UTC month's spend and today's compute seconds per user, from earlier records."""
    month_cost, day_compute = 0.0, {}
    for record in records:
        if record.get("event") != EVENT or utc_month(record["end_ts"]) != utc_month(now):
            continue
        month_cost += sum(figures["cost_usd"] for figures in record["users"].values()) + record["scheduler_cost_usd"]
        if utc_day(record["end_ts"]) == utc_day(now):
            for user, figures in record["users"].items():
                if figures["compute_s"]:
                    day_compute[user] = day_compute.get(user, 0.0) + figures["compute_s"]
    return month_cost, day_compute


def parse_lines(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The usage records among JSON lines; other lines (and a torn last line) are skipped."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("event") == EVENT and "end_ts" in record:
            records.append(record)
    return records


def read_file(path: Path, since: float | None = None) -> list[dict[str, Any]]:
    """Records stored in a local JSON-lines file (the local cluster's, or an instance's own copy)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [record for record in parse_lines(text.splitlines()) if since is None or record["end_ts"] > since]
