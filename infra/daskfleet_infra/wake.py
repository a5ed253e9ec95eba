"""Users may wake their idle cluster: set its scheduler group's desired capacity, and nothing else.

Every cluster's member policy (membership) carries this grant; the separate wake policy is the
stack's own cluster's, kept because permission sets may name it. ``attach_policy`` and
``principal_label`` serve every policy the stack attaches to people.

The scheduler sets its own group to 0 when the cluster is idle; ``daskfleet.connect`` sets it
back to 1 with the user's own AWS login. Auto scaling groups take no resource policies, so the
permission is an identity policy (``daskfleet-<cluster>-wake``) attached to each configured
user's IAM user or role in this account. Roles that IAM Identity Center manages
(``aws-reserved/sso.amazonaws.com/...``) and principals of other accounts cannot be changed
from here: their administrators add the exported policy (stack output ``wakePolicyArn``) to
the permission set or principal themselves. The group's maximum of 1 bounds what a user can start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from daskfleet import conventions

from .config import User
from .lookups import Account

#: IAM Identity Center's roles: IAM refuses any change to them.
SSO_ROLE_PATH = "/aws-reserved/sso.amazonaws.com/"
_PRINCIPAL = re.compile(r"^arn:[a-z-]+:iam::(?P<account>\d{12}):(?P<kind>user|role)(?P<path>/(?:[^/]+/)*)(?P<name>[^/]+)$")


@dataclass(frozen=True)
class WakeArgs:
    cluster: str
    account: Account
    users: Sequence[User]


def wake_policy(cluster: str, account: Account) -> dict[str, Any]:
    """Set the desired capacity of this cluster's scheduler group (its maximum is 1), and see it."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WakeOwnClustersScheduler",
                "Effect": "Allow",
                "Action": ["autoscaling:SetDesiredCapacity"],
                "Resource": [account.group_arn(cluster, "scheduler")],
                "Condition": {"StringEquals": {f"autoscaling:ResourceTag/{conventions.TAG_CLUSTER}": cluster}},
            },
            {
                # Describe cannot be scoped to a group; it shows capacities and instance states, no data.
                "Sid": "SeeWhetherItSleeps",
                "Effect": "Allow",
                "Action": ["autoscaling:DescribeAutoScalingGroups"],
                "Resource": "*",
            },
        ],
    }


def attachable(principal_arn: str, account: Account) -> tuple[str, str] | None:
    """("user" | "role", name) of a principal this stack may attach a policy to, or None."""
    match = _PRINCIPAL.match(principal_arn)
    if match is None or match["account"] != account.account_id or match["path"].startswith(SSO_ROLE_PATH):
        return None
    return match["kind"], match["name"]


def principal_label(principal_arn: str) -> str:
    """A principal's own name for the resources attaching a policy to it, e.g. ``role-data-alice``.

    Named after the principal, not its place in a list, so adding one renames no attachment
    (a renamed attachment is created, then the old one deleted, which detaches the policy).
    """
    return re.sub(r"[^A-Za-z0-9-]+", "-", principal_arn.split(":", 5)[-1]).strip("-")


def attach_policy(
    parent: pulumi.Resource, name: str, policy: aws.iam.Policy, principals: Sequence[tuple[str, str]], account: Account,
    *, what: str,
) -> None:
    """Attach ``policy`` to each (label, principal ARN) this stack may change; say which it may not."""
    child = pulumi.ResourceOptions(parent=parent)
    for label, principal_arn in principals:
        target = attachable(principal_arn, account)
        if target is None:
            pulumi.log.info(
                f"{label}: {principal_arn} cannot be changed by this stack; add {what} to it or its permission set",
                resource=parent,
            )
        elif target[0] == "role":
            aws.iam.RolePolicyAttachment(f"{name}-{label}", role=target[1], policy_arn=policy.arn, opts=child)
        else:
            aws.iam.UserPolicyAttachment(f"{name}-{label}", user=target[1], policy_arn=policy.arn, opts=child)


class Wake(pulumi.ComponentResource):
    """The users' wake policy, attached to every configured principal this stack may change."""

    policy_arn: pulumi.Output[str]

    def __init__(self, name: str, args: WakeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Wake", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        policy = aws.iam.Policy(
            f"{name}-policy",
            name=conventions.resource_name(args.cluster, "wake"),
            description=f"daskfleet {args.cluster}: users wake the idle cluster (scheduler group desired capacity)",
            policy=json.dumps(wake_policy(args.cluster, args.account)),
            opts=child,
        )
        attach_policy(self, name, policy, [(user.name, user.principal_arn) for user in args.users], args.account,
                      what="the wake policy (output wakePolicyArn)")
        self.policy_arn = policy.arn
        self.register_outputs({"policy_arn": self.policy_arn})
