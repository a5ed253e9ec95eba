"""The ledger, limits and budget stop bound to a running scheduler (the thin adapter around the pure parts).

``UsageAccounting.worker_ceiling`` is the scaler's ceiling provider, ``set_desired_workers`` the
gauge its runner sets; both are found as ``scheduler.extensions["daskfleet-usage"]``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from tornado.ioloop import PeriodicCallback

from ..conventions import USER_ROLES
from ..notices import tell_client
from ..trust.attribution import GraphOrigin
from ..trust.audit import AuditLog
from ..trust.guards import SchedulerGuard
from ..trust.peers import Refusal
from .budget import BudgetPolicy, BudgetStop
from .ledger import Ledger, Totals, difference
from .limits import Limits
from .policy import UsagePolicy
from .records import EVENT, USAGE_OP, make_record

logger = logging.getLogger("daskfleet.usage")

EXTENSION = "daskfleet-usage"
#: How often the ledger settles workers and the budget is assessed (at most; records may be more often).
TICK_SECONDS = 5.0


class UsageAccounting:
    """Per-user usage, limits and the budget stop of one scheduler."""

    def __init__(
        self,
        scheduler: Any,
        guard: SchedulerGuard,
        policy: UsagePolicy,
        *,
        records: AuditLog,
        history: list[dict[str, Any]],
        scheduler_usd_per_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ):
        self.scheduler, self.guard, self.policy, self.clock = scheduler, guard, policy, clock
        self.audit = guard.audit
        self.ledger = Ledger(policy.prices_usd_per_hour, clock, scheduler_usd_per_s=scheduler_usd_per_s,
                             prefixes_per_user=policy.prefixes_per_user)
        self.limits = Limits(policy)
        self.budget = BudgetStop(BudgetPolicy.from_usage(policy))
        self.records_log = records
        self.records: list[dict[str, Any]] = list(history)
        self.desired_workers: int | None = None
        self.refused: dict[str, int] = {}
        self._clamp_told: set[str] = set()
        self._last_totals = self.ledger.totals()
        self._last_record = clock()

    # --- for the scaler -----------------------------------------------------------------------

    def worker_ceiling(self) -> int | None:
        """The most workers the cluster may hold now: 0 while the budget stop is active, else the sum of the
        worker limits of the users with work (None: no ceiling, when nobody with work is limited)."""
        if self.budget.active:
            return 0
        return self.limits.worker_ceiling(self.ledger.users_with_work())

    def set_desired_workers(self, count: int | None) -> None:
        """The scaler's desired worker count, served as the gauge daskfleet_desired_workers."""
        self.desired_workers = count

    # --- admission ----------------------------------------------------------------------------

    def admit(self, origin: GraphOrigin, msg: Mapping[str, Any]) -> Refusal | None:
        """The guard's admission check: the budget stop and the owner's limits (refusals are audited by the guard)."""
        user, now = origin.owner, self.clock()
        checks = (
            ("budget", lambda: Refusal("the cluster is stopped for its budget: " + self.budget.state.message())
             if self.budget.active and self.budget.state else None),
            ("compute-hours", lambda: self.limits.check_compute_hours(user, self.ledger.compute_today_s(user), now)),
            ("max-workers", lambda: self.limits.check_workers(user)),
        )
        for kind, check in checks:
            refusal = check()
            if refusal is not None:
                self.refused[kind] = self.refused.get(kind, 0) + 1
                return refusal
        self._tell_clamp(origin, len(msg.get("keys") or ()))
        return None

    def _tell_clamp(self, origin: GraphOrigin, keys: int) -> None:
        """Once per spell of work, tell a user whose graph could use more workers than their limit."""
        user = origin.owner
        if user not in self.ledger.users_with_work():
            self._clamp_told.discard(user)
        limit = self.limits.max_workers(user)
        if limit is None or keys <= limit or user in self._clamp_told:
            return
        notice = self.limits.clamp_notice(user, self.ledger.workers_held(user))
        self._clamp_told.add(user)
        self.audit.record("usage-clamped", identity=user, client=origin.client, max_workers=limit)
        self.tell(origin.client, notice)

    def tell(self, client: str, text: str) -> None:
        """A warning shown by the client (distributed's "warn" topic, which every client handles)."""
        tell_client(self.scheduler, client, text)

    # --- time passing -------------------------------------------------------------------------

    def tick(self) -> None:
        """Settle the ledger, assess the budget, and write a record when one is due."""
        self.ledger.tick()
        now = self.clock()
        change = self.budget.update(self.ledger.month_cost_usd(), self.ledger.rate_usd_per_s(), now)
        if change:
            self._budget_changed(change)
        if now - self._last_record >= self.policy.record_interval_s:
            self._close_period(now)

    def _budget_changed(self, change: str) -> None:
        state = self.budget.state
        assert state is not None
        if change == "stopped":
            text = ("daskfleet: the cluster is stopped for its budget: no new graphs are admitted and its workers "
                    "scale to 0. " + state.message())
        else:
            text = "daskfleet: a new month began; the budget stop is lifted. " + state.message()
        logger.warning(text)
        self.audit.record(f"budget-{change}", spent_usd=round(state.spent_usd, 4), projected_usd=round(state.projected_usd, 4),
                          threshold_usd=state.threshold_usd, resets=state.resets.isoformat())
        for client, peer in list(self.guard.identities.items()):
            if peer.role in USER_ROLES:
                self.tell(client, text)

    def write_record(self) -> dict[str, Any]:
        """Close the period since the last record: keep it, and write it to the records log."""
        self.ledger.tick()
        return self._close_period(self.clock())

    def _close_period(self, now: float) -> dict[str, Any]:
        """``write_record`` once the ledger is settled up to ``now``."""
        totals = self.ledger.totals()
        record = make_record(difference(totals, self._last_totals), self._last_record, now)
        self._last_totals, self._last_record = totals, now
        self.records.append(record)
        self.records_log.record(EVENT, **{key: value for key, value in record.items() if key != "event"})
        return record

    def live_records(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every record this scheduler holds (restored and its own) plus the open period, ending after ``since``."""
        self.ledger.tick()
        current = make_record(difference(self.ledger.totals(), self._last_totals), self._last_record, self.clock())
        return [record for record in [*self.records, current] if since is None or record["end_ts"] > since]

    def totals(self) -> Totals:
        self.ledger.tick()
        return self.ledger.totals()

    # --- binding ------------------------------------------------------------------------------

    def start(self) -> None:
        """Hook into the scheduler: admission, the usage operation and the periodic tick (the plugin is added by
        ``daskfleet.usage.install``)."""
        self.guard.admission_checks.append(self.admit)
        self.guard.add_handler(USAGE_OP, self._handle_usage)
        self.scheduler.extensions[EXTENSION] = self
        interval = min(TICK_SECONDS, self.policy.record_interval_s)
        self.scheduler.periodic_callbacks[EXTENSION] = PeriodicCallback(self.tick, interval * 1000)
        self.tick()  # a month already spent (restored from the records) stops the cluster before any graph

    def _handle_usage(self, since: float | None = None) -> list[dict[str, Any]]:
        return self.live_records(since)
