"""What a cluster's members may do with their own AWS login: one managed policy per cluster, attached to each of them.

The member policy (``daskfleet-<cluster>-member``) lets a member wake the cluster (its scheduler
group's desired capacity, whose maximum of 1 bounds what a member can start), see the groups,
find their own certificates (``daskfleet clusters``), read the cluster's worker spec and
published environment, read and write the cluster's prefix ``clusters/<cluster>/`` of the fleet
bucket (and its data entries in that bucket) through the fleet key, and read the cluster's usage
records. Nothing of another cluster: a member of several clusters holds one policy per cluster.

Roles that IAM Identity Center manages, and principals of other accounts, cannot be changed from
here: their administrators add the exported policy (stack output ``clusters.<name>.memberPolicyArn``)
to the permission set, as for the wake policy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from daskfleet import conventions

from .config import DataEntry, User
from .data_access import DataScope, key_statements, s3_statements
from .lookups import Account
from .wake import attach_policy, wake_policy


@dataclass(frozen=True)
class MembershipArgs:
    cluster: str
    account: Account
    #: Everyone issued a certificate for the cluster (members and admins).
    people: Sequence[User]
    bucket_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    log_group_arn: pulumi.Input[str]
    data: Sequence[DataEntry] = ()
    tags: Mapping[str, str] | None = None
    #: The fleet's certificate vendor function, which members invoke to log in.
    vendor_function: str | None = None
    #: Principals that log in for a read-only ``metrics`` certificate (the stack's ``metricsScrapers``).
    metrics_scrapers: Sequence[str] = ()


def member_policy(
    cluster: str, account: Account, *, bucket_arn: str, key_arn: str, log_group_arn: str, data: Sequence[DataEntry] = (),
    vendor_function: str | None = None,
) -> dict[str, Any]:
    """Everything a member's login needs of ``cluster``, and nothing of any other cluster."""
    scope = DataScope(cluster, account, bucket_arn, tuple(data))
    pointer = account.arn("ssm", f"parameter{conventions.published_env_parameter_name(cluster)}")
    spec = account.arn("ssm", f"parameter{conventions.spec_parameter_name(cluster, 'worker')}")
    return {
        "Version": "2012-10-17",
        "Statement": [
            *wake_policy(cluster, account)["Statement"],
            {
                # Metadata only (names and tags, never values): how `daskfleet clusters` finds the caller's certificates.
                "Sid": "FindOwnCertificates",
                "Effect": "Allow",
                "Action": ["secretsmanager:ListSecrets"],
                "Resource": "*",
            },
            {
                "Sid": "ReadTheSchedulersAddressAndPublishedEnvironment",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter", "ssm:GetParameterHistory"],
                "Resource": [spec, pointer],
            },
            *([{
                # `daskfleet login` / connect: the vendor signs for whom the request's proof says, nobody else.
                "Sid": "AskTheCertificateVendor",
                "Effect": "Allow",
                "Action": ["lambda:InvokeFunction"],
                "Resource": [account.arn("lambda", f"function:{vendor_function}")],
            }] if vendor_function else []),
            *s3_statements(scope, fleet_only=True, sid="Member"),
            *key_statements(scope, key_arn, sid="Member"),
            {
                # Members of one cluster trust each other (README, "Security model"): its records are theirs.
                "Sid": "ReadTheClustersUsageRecords",
                "Effect": "Allow",
                "Action": ["logs:FilterLogEvents"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            },
        ],
    }


def scraper_policy(cluster: str, account: Account, vendor_function: str) -> dict[str, Any]:
    """What a metrics scraper's login may do: find the cluster's vendor (its worker spec) and ask it; nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "FindTheCertificateVendor",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter"],
                "Resource": [account.arn("ssm", f"parameter{conventions.spec_parameter_name(cluster, 'worker')}")],
            },
            {
                # `daskfleet login CLUSTER --metrics`: the vendor signs a metrics certificate for the listed principals.
                "Sid": "AskTheCertificateVendor",
                "Effect": "Allow",
                "Action": ["lambda:InvokeFunction"],
                "Resource": [account.arn("lambda", f"function:{vendor_function}")],
            },
        ],
    }


class Membership(pulumi.ComponentResource):
    """The cluster's member policy, attached to every person of the cluster this stack may change."""

    policy_arn: pulumi.Output[str]

    def __init__(self, name: str, args: MembershipArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Membership", name, None, opts)
        policy = aws.iam.Policy(
            f"{name}-policy",
            name=conventions.member_policy_name(args.cluster),
            description=f"daskfleet {args.cluster}: what its members' own logins may do (wake, data prefix, records)",
            policy=pulumi.Output.all(args.bucket_arn, args.key_arn, args.log_group_arn).apply(
                lambda arns: json.dumps(member_policy(
                    args.cluster, args.account, bucket_arn=arns[0], key_arn=arns[1], log_group_arn=arns[2], data=args.data,
                    vendor_function=args.vendor_function,
                ))
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # One attachment per principal: two users sharing one (e.g. a permission set's role) get it once.
        principals = {user.principal_arn: user.name for user in reversed(args.people)}
        attach_policy(self, name, policy, sorted((label, arn) for arn, label in principals.items()), args.account,
                      what="the member policy (output clusters.<name>.memberPolicyArn)")
        self.policy_arn = policy.arn
        if args.metrics_scrapers and args.vendor_function:
            scrapers = aws.iam.Policy(
                f"{name}-scraper-policy",
                name=conventions.metrics_scraper_policy_name(args.cluster),
                description=f"daskfleet {args.cluster}: what a metrics scraper's login may do (ask the certificate vendor)",
                policy=json.dumps(scraper_policy(args.cluster, args.account, args.vendor_function)),
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            attach_policy(self, f"{name}-scraper", scrapers,
                          [(arn.rsplit("/", 1)[-1], arn) for arn in sorted(args.metrics_scrapers)], args.account,
                          what="the metrics scraper policy")
        self.register_outputs({"policy_arn": self.policy_arn})
