"""The usage figures as Prometheus metrics, served with distributed's own on the scheduler's HTTPS /metrics.

Base units (seconds, US dollars), counters end in ``_total``, labels are bounded: users (from
certificates, plus ``idle`` and ``unknown``), instance types and purchase options, and task prefixes
(at most the policy's ``prefixes_per_user`` per user, plus ``(other)`` and ``(idle)``: a prefix keeps
its series for the scheduler's life, so every series only grows).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from .service import UsageAccounting


class UsageCollector:
    """Reads the accounting of the scheduler in this process at each scrape."""

    def __init__(self) -> None:
        self.accounting: UsageAccounting | None = None

    def collect(self) -> Iterator[Any]:
        accounting = self.accounting
        if accounting is None:
            return
        totals = accounting.totals()
        per_user = [
            ("daskfleet_user_compute_seconds", "Task compute time of each user's tasks", "compute_s"),
            ("daskfleet_user_tasks", "Tasks of each user that ran to an end (result or error)", "tasks"),
            ("daskfleet_user_worker_seconds", "Worker time charged to each user (idle: charged to nobody)", "worker_s"),
            ("daskfleet_user_cost_usd", "Cost charged to each user in US dollars (idle: charged to nobody)", "cost_usd"),
        ]
        for name, doc, field in per_user:
            family = CounterMetricFamily(name, doc, labels=["user"])
            for user, usage in sorted(totals.users.items()):
                family.add_metric([user], getattr(usage, field))
            yield family
        yield from prefix_families(totals)
        workers = CounterMetricFamily("daskfleet_worker_seconds", "Worker wall-clock time by instance type and purchase option",
                                      labels=["instance_type", "purchase"])
        for (instance_type, purchase), seconds in sorted(totals.worker_s.items()):
            workers.add_metric([instance_type, purchase], seconds)
        yield workers
        yield CounterMetricFamily("daskfleet_idle_seconds", "Worker time with no task running", value=totals.idle_s)
        yield CounterMetricFamily("daskfleet_scheduler_cost_usd", "The scheduler's own cost in US dollars",
                                  value=totals.scheduler_cost_usd)
        refused = CounterMetricFamily("daskfleet_graphs_refused", "Graphs refused by a limit or the budget stop", labels=["reason"])
        for reason in ("budget", "compute-hours", "max-workers"):
            refused.add_metric([reason], accounting.refused.get(reason, 0))
        yield refused
        yield from self._gauges(accounting)

    def _gauges(self, accounting: UsageAccounting) -> Iterator[Any]:
        if accounting.desired_workers is not None:
            yield GaugeMetricFamily("daskfleet_desired_workers", "Workers the scaler wants now", value=accounting.desired_workers)
        ceiling = accounting.worker_ceiling()
        if ceiling is not None:
            yield GaugeMetricFamily("daskfleet_worker_ceiling", "Most workers allowed now by the budget stop and user limits",
                                    value=ceiling)
        yield GaugeMetricFamily("daskfleet_month_spend_usd", "This UTC month's spend so far by the scheduler's ledger",
                                value=accounting.ledger.month_cost_usd())
        state = accounting.budget.state
        if state is not None:
            yield GaugeMetricFamily("daskfleet_month_projected_spend_usd", "This month's spend if the cluster runs as now",
                                    value=state.projected_usd)
            if state.threshold_usd is not None:
                yield GaugeMetricFamily("daskfleet_budget_stop_threshold_usd", "Spend at which the scheduler stops the cluster",
                                        value=state.threshold_usd)
        yield GaugeMetricFamily("daskfleet_budget_stopped", "1 while the cluster is stopped for its budget",
                                value=1 if accounting.budget.active else 0)


def prefix_families(totals: Any) -> Iterator[Any]:
    """Per user and task prefix: compute seconds and cost (only with prefix accounting)."""
    if not totals.prefixes:
        return
    per_prefix = [
        ("daskfleet_prefix_compute_seconds", "Task compute time per user and task prefix ((other): past the bound)", "compute_s"),
        ("daskfleet_prefix_cost_usd", "Cost charged per user and task prefix in US dollars ((idle): idle time)", "cost_usd"),
    ]
    for name, doc, field in per_prefix:
        family = CounterMetricFamily(name, doc, labels=["user", "prefix"])
        for user, prefixes in sorted(totals.prefixes.items()):
            for prefix, usage in sorted(prefixes.items()):
                family.add_metric([user, prefix], getattr(usage, field))
        yield family


#: One collector per process (the default registry refuses a second with the same names); it follows
#: the scheduler most recently installed.
COLLECTOR = UsageCollector()
REGISTRY.register(COLLECTOR)


def serve(accounting: UsageAccounting) -> None:
    COLLECTOR.accounting = accounting
