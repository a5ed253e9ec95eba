"""The budget stop, decided purely from the scheduler's own ledger (AWS Budgets data lags by hours).

The month's spend is projected from what the ledger charged this UTC month and what the
cluster costs per second now. The stop comes when the spend so far, plus the current rate for
``lead_s`` seconds (the time it takes to let the workers go), reaches the threshold:
``hard_stop_percent`` of ``monthly_usd``. It lifts when a new month starts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .ledger import next_month_start
from .policy import UsagePolicy


@dataclass(frozen=True)
class BudgetState:
    spent_usd: float
    rate_usd_per_s: float
    projected_usd: float
    threshold_usd: float | None
    stop: bool
    resets: dt.datetime

    def message(self) -> str:
        return (
            f"the cluster's spend this month is ${self.spent_usd:,.2f} (projected ${self.projected_usd:,.2f} by month end "
            f"at ${self.rate_usd_per_s * 3600:,.2f}/h); the budget stop is at ${self.threshold_usd or 0:,.2f}. "
            f"It resets at {self.resets:%Y-%m-%d %H:%M} UTC"
        )


@dataclass(frozen=True)
class BudgetPolicy:
    monthly_usd: float | None
    hard_stop_percent: int
    lead_s: float

    @classmethod
    def from_usage(cls, policy: UsagePolicy) -> BudgetPolicy:
        return cls(policy.budget_monthly_usd, policy.budget_hard_stop_percent, policy.budget_stop_lead_s)

    @property
    def threshold_usd(self) -> float | None:
        if self.monthly_usd is None or self.hard_stop_percent == 0:
            return None
        return self.monthly_usd * self.hard_stop_percent / 100.0

    def assess(self, spent_usd: float, rate_usd_per_s: float, now: float) -> BudgetState:
        resets = next_month_start(now)
        remaining = max((resets - dt.datetime.fromtimestamp(now, dt.timezone.utc)).total_seconds(), 0.0)
        projected = spent_usd + rate_usd_per_s * remaining
        threshold = self.threshold_usd
        stop = threshold is not None and spent_usd + rate_usd_per_s * min(self.lead_s, remaining) >= threshold
        return BudgetState(spent_usd, rate_usd_per_s, projected, threshold, stop, resets)


class BudgetStop:
    """Whether the cluster is stopped for its budget; ``update`` says when that changes (pure, clock-fed).

    Once stopped, it stays stopped until the month it stopped in is over (so letting the workers go,
    which lowers the rate, does not restart them).
    """

    def __init__(self, policy: BudgetPolicy):
        self.policy = policy
        self.active = False
        self.state: BudgetState | None = None
        self._until: dt.datetime | None = None

    def update(self, spent_usd: float, rate_usd_per_s: float, now: float) -> str | None:
        """'stopped' or 'lifted' when the stop starts or ends, else None."""
        self.state = self.policy.assess(spent_usd, rate_usd_per_s, now)
        if self.active and dt.datetime.fromtimestamp(now, dt.timezone.utc) >= self._until:
            self.active, self._until = False, None
            if not self.state.stop:
                return "lifted"
        if self.state.stop and not self.active:
            self.active, self._until = True, self.state.resets
            return "stopped"
        return None
