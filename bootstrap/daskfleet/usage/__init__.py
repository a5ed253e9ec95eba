"""Per-user usage, limits and the budget stop: pure parts (policy, ledger, limits, budget, records) and the
adapters binding them to a scheduler (service, plugin, metrics). ``install`` is the one call the agent makes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..trust.guards import SchedulerGuard
    from .policy import UsagePolicy
    from .service import UsageAccounting

logger = logging.getLogger("daskfleet.usage")


class UsageSource(Protocol):
    """What the scheduler's usage needs from the place it runs in (the node source provides it)."""

    def instance_kind(self) -> tuple[str, str]:
        """This node's (instance type, purchase option) for its price."""

    def usage_forwarder(self) -> Any:
        """Where usage records go besides the local file (called with each line; ``close`` flushes), or None."""

    def usage_history(self, since: float) -> list[str] | None:
        """Usage record lines stored since ``since`` (epoch seconds), or None when the local file is the store."""


def install(
    scheduler: Any,
    guard: SchedulerGuard,
    policy: UsagePolicy,
    *,
    records_path: Path,
    source: UsageSource,
    clock: Callable[[], float] = time.time,
) -> UsageAccounting:
    """Account usage on ``scheduler`` (call after ``guard.install``, before it starts); returns the accounting,
    whose ``worker_ceiling`` is the scaler's ceiling provider."""
    from ..trust.audit import AuditLog
    from . import metrics, profiles, records
    from .ledger import month_start
    from .plugin import UsagePlugin
    from .service import UsageAccounting

    since = month_start(clock()).timestamp()
    lines = source.usage_history(since)
    history = records.parse_lines(lines) if lines is not None else records.read_file(records_path, since)
    instance_type, purchase = source.instance_kind()
    price = policy.price(instance_type)
    if price is None and policy.prices_usd_per_hour:
        logger.warning("usage: no price for the scheduler's instance type %s; its cost counts as 0", instance_type)
    accounting = UsageAccounting(
        scheduler, guard, policy,
        records=AuditLog(records_path, source.usage_forwarder(), label="usage"),
        history=[record for record in history if record["end_ts"] > since],
        scheduler_usd_per_s=price.per_second(purchase) if price else 0.0,
        clock=clock,
    )
    month_cost, day_compute = records.carried(accounting.records, clock())
    accounting.ledger.restore(month_cost, day_compute)
    accounting.start()
    profiles.serve(scheduler, guard)
    scheduler.add_plugin(UsagePlugin(accounting), name=UsagePlugin.name)
    metrics.serve(accounting)
    return accounting
