"""Per-user limits, decided purely: may a user's graph run, and how many workers may the cluster hold for the users with work.

Every message gives the limit, the usage and when it resets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from ..trust.peers import Refusal
from .ledger import next_day_start
from .policy import UsagePolicy, limit_for


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Limits:
    """The per-user limits of a UsagePolicy."""

    policy: UsagePolicy

    def max_workers(self, user: str) -> int | None:
        value = limit_for(self.policy.user_max_workers, user)
        return None if value is None else int(value)

    def compute_hours_per_day(self, user: str) -> float | None:
        return limit_for(self.policy.user_compute_hours_per_day, user)

    def check_compute_hours(self, user: str, compute_today_s: float, now: float) -> Refusal | None:
        """A graph from a user who used their compute hours today is refused until the next UTC day."""
        hours = self.compute_hours_per_day(user)
        if hours is not None and compute_today_s >= hours * 3600:
            return Refusal(
                f"user {user} reached the limit of {hours:g} compute hours per day "
                f"(used {compute_today_s / 3600:.2f} h today); it resets at {_when(next_day_start(now))}"
            )
        return None

    def check_workers(self, user: str) -> Refusal | None:
        """A worker limit clamps the cluster; one of 0 allows no work at all, so the graph is refused."""
        if self.max_workers(user) == 0:
            return Refusal(f"user {user} may hold at most 0 workers (holds 0); this limit is set by the operator "
                           f"and does not reset by itself")
        return None

    def worker_ceiling(self, users_with_work: Iterable[str]) -> int | None:
        """The most workers the cluster may hold for its work: the sum of the worker limits of the users
        with work waiting or running; None (no ceiling) when nobody has work or anyone with work is unlimited."""
        total = 0
        users = list(users_with_work)
        for user in users:
            limit = self.max_workers(user)
            if limit is None:
                return None
            total += limit
        return total if users else None

    def clamp_notice(self, user: str, workers_held: int) -> str | None:
        """What a user is told when their work is admitted under a worker limit."""
        limit = self.max_workers(user)
        if limit is None:
            return None
        return (
            f"daskfleet: user {user} may hold at most {limit} worker(s) at once; the cluster is clamped to the sum "
            f"of the limits of the users with work (your tasks run on {workers_held} worker(s) now); "
            f"the clamp lifts when your work is done"
        )
