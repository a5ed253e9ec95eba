"""What the cluster may cost: a monthly AWS Budget over the cluster's cost-allocation tag.

The tag (conventions.TAG_CLUSTER) must be activated once per account as a cost-allocation
tag in the Billing console before spend shows up under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from daskfleet import conventions


@dataclass(frozen=True)
class BudgetArgs:
    cluster: str
    monthly_usd: int
    thresholds_percent: Sequence[int]
    emails: Sequence[str]


def cluster_cost_filter(cluster: str) -> str:
    """The Budgets TagKeyValue filter selecting the cluster's spend: user:<tag key>$<value>."""
    return f"user:{conventions.TAG_CLUSTER}${cluster}"


class Budget(pulumi.ComponentResource):
    """A monthly cost budget for the cluster, notifying by e-mail at each configured threshold."""

    def __init__(self, name: str, args: BudgetArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Budget", name, None, opts)
        budget = aws.budgets.Budget(
            f"{name}-monthly",
            name=conventions.budget_name(args.cluster),
            budget_type="COST",
            limit_amount=f"{args.monthly_usd:d}",
            limit_unit="USD",
            time_unit="MONTHLY",
            cost_filters=[aws.budgets.BudgetCostFilterArgs(name="TagKeyValue", values=[cluster_cost_filter(args.cluster)])],
            notifications=[
                aws.budgets.BudgetNotificationArgs(
                    notification_type="ACTUAL",
                    comparison_operator="GREATER_THAN",
                    threshold=float(threshold),
                    threshold_type="PERCENTAGE",
                    subscriber_email_addresses=list(args.emails),
                )
                for threshold in sorted(args.thresholds_percent)
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.budget_name = budget.name
        self.register_outputs({"budget_name": self.budget_name})
