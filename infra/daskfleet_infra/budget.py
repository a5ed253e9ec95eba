"""What the cluster may cost: a monthly AWS Budget over the cluster's cost-allocation tag, and its backstop.

The tag (conventions.TAG_CLUSTER) must be activated once per account as a cost-allocation
tag in the Billing console before spend shows up under it. The scheduler stops the cluster
itself at ``hardStopPercent`` of the budget, from its own ledger; AWS Budgets data lags by
hours, so the Budgets *action* here is only the backstop: at the same percentage of actual
spend it attaches a policy to the scheduler's role that denies raising the worker group's
desired capacity. Scaling down (retiring and terminating workers) stays possible.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from daskfleet import conventions

from .lookups import Account

#: What the backstop denies the scheduler: raising (or setting) its worker group's desired capacity.
DENIED_SCALING_ACTIONS: tuple[str, ...] = ("autoscaling:SetDesiredCapacity",)


@dataclass(frozen=True)
class BudgetArgs:
    cluster: str
    account: Account
    monthly_usd: int
    thresholds_percent: Sequence[int]
    emails: Sequence[str]
    hard_stop_percent: int
    scheduler_role_name: pulumi.Input[str]
    tags: Mapping[str, str] | None = None


def cluster_cost_filter(cluster: str) -> str:
    """The Budgets TagKeyValue filter selecting the cluster's spend: user:<tag key>$<value>."""
    return f"user:{conventions.TAG_CLUSTER}${cluster}"


def deny_scaling_policy(account: Account, cluster: str) -> dict[str, Any]:
    """The policy the Budgets action attaches to the scheduler's role: no raising its worker group's capacity."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "BudgetStopDeniesScalingUp",
            "Effect": "Deny",
            "Action": list(DENIED_SCALING_ACTIONS),
            "Resource": [account.group_arn(cluster, "worker")],
        }],
    }


def action_execution_trust(account: Account) -> dict[str, Any]:
    """AWS Budgets may assume the action's role, for this account's budgets only."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": f"budgets.{account.dns_suffix}"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account.account_id}},
        }],
    }


def action_execution_policy(account: Account, cluster: str, deny_policy_arn: str) -> dict[str, Any]:
    """The action's role may attach and detach exactly the deny policy, on exactly the scheduler's role."""
    scheduler_role = account.arn("iam", f"role/{conventions.iam_role_name(cluster, 'scheduler')}", regional=False)
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AttachTheDenyPolicyToTheSchedulerRole",
            "Effect": "Allow",
            "Action": ["iam:AttachRolePolicy", "iam:DetachRolePolicy"],
            "Resource": [scheduler_role],
            "Condition": {"ArnEquals": {"iam:PolicyARN": deny_policy_arn}},
        }],
    }


class Budget(pulumi.ComponentResource):
    """A monthly cost budget notifying by e-mail at each threshold, and the hard-stop backstop action."""

    def __init__(self, name: str, args: BudgetArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Budget", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
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
            tags=args.tags,
            opts=child,
        )
        self.budget_name = budget.name
        self.stop_action_id: pulumi.Output[str] | None = None
        if args.hard_stop_percent:
            self.stop_action_id = self._backstop(name, args, budget, child)
        self.register_outputs({"budget_name": self.budget_name, "stop_action_id": self.stop_action_id})

    def _backstop(self, name: str, args: BudgetArgs, budget: aws.budgets.Budget, child: pulumi.ResourceOptions) -> pulumi.Output[str]:
        deny = aws.iam.Policy(
            f"{name}-stop-deny-scaling",
            name=conventions.budget_stop_policy_name(args.cluster),
            description=f"daskfleet {args.cluster}: attached by the budget action; denies raising the worker group's capacity",
            policy=json.dumps(deny_scaling_policy(args.account, args.cluster)),
            tags=args.tags,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-stop-action",
            name=conventions.budget_action_role_name(args.cluster),
            description=f"daskfleet {args.cluster}: AWS Budgets attaches the budget-stop policy to the scheduler role",
            assume_role_policy=json.dumps(action_execution_trust(args.account)),
            tags=args.tags,
            opts=child,
        )
        grant = aws.iam.RolePolicy(
            f"{name}-stop-action",
            role=role.name,
            name=f"{conventions.NAME_PREFIX}-budget-action",
            policy=deny.arn.apply(lambda arn: json.dumps(action_execution_policy(args.account, args.cluster, arn))),
            opts=child,
        )
        action = aws.budgets.BudgetAction(
            f"{name}-stop",
            budget_name=budget.name,
            action_type="APPLY_IAM_POLICY",
            approval_model="AUTOMATIC",
            notification_type="ACTUAL",
            action_threshold=aws.budgets.BudgetActionActionThresholdArgs(
                action_threshold_type="PERCENTAGE", action_threshold_value=float(args.hard_stop_percent),
            ),
            definition=aws.budgets.BudgetActionDefinitionArgs(
                iam_action_definition=aws.budgets.BudgetActionDefinitionIamActionDefinitionArgs(
                    policy_arn=deny.arn, roles=[args.scheduler_role_name],
                ),
            ),
            execution_role_arn=role.arn,
            subscribers=[aws.budgets.BudgetActionSubscriberArgs(address=email, subscription_type="EMAIL")
                         for email in args.emails],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[grant]),
        )
        return action.action_id
