"""Keep the scheduler's stable private DNS name on whichever instance its group launched last.

Nodes without NAT reach no Route 53 API (it has no VPC endpoint), so the record is kept from
outside the VPC: an EventBridge rule on the scheduler group's "EC2 Instance Launch
Successful" events invokes a small Lambda function (dns_updater/handler.py) that UPSERTs the
A record. Its role may write only its own log group, describe instances, and change only
that one A record of the cluster's zone.

``updater_policy`` (pure) writes the role's policy from ARNs. The group is named by
conventions rather than taken from Compute, so this component is complete before the
scheduler group launches its first instance (Compute boots after it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from daskfleet import conventions

from .dns_updater import handler as updater
from .lookups import Account

HANDLER_FILE = Path(updater.__file__)
RUNTIME = "python3.12"
TIMEOUT_SECONDS = 30
MEMORY_MB = 128


@dataclass(frozen=True)
class SchedulerDnsArgs:
    cluster: str
    account: Account
    zone_id: pulumi.Input[str]
    #: The scheduler's stable name, conventions.scheduler_dns_name(...), directly in the zone.
    scheduler_dns_name: str
    log_retention_days: int
    tags: Mapping[str, str] | None = None


def launch_event_pattern(group_name: str) -> dict[str, Any]:
    """The EventBridge pattern matching successful launches into ``group_name`` only."""
    return {
        "source": [updater.EVENT_SOURCE],
        "detail-type": [updater.LAUNCH_SUCCESSFUL],
        "detail": {"AutoScalingGroupName": [group_name]},
    }


def trust_policy() -> dict[str, Any]:
    """Lambda may assume the role for this function."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }


def updater_policy(*, account: Account, zone_id: str, record_name: str, log_group_arn: str) -> dict[str, Any]:
    """The function's whole policy: its own logs, a read-only describe, and one A record of one zone."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OwnLogGroup",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            },
            {
                # DescribeInstances has no resource-level permissions; it reads instance state only.
                "Sid": "FindLaunchedInstance",
                "Effect": "Allow",
                "Action": ["ec2:DescribeInstances"],
                "Resource": "*",
            },
            {
                "Sid": "KeepSchedulerRecord",
                "Effect": "Allow",
                "Action": ["route53:ChangeResourceRecordSets"],
                "Resource": [f"arn:{account.partition}:route53:::hostedzone/{zone_id}"],
                "Condition": {"ForAllValues:StringEquals": {
                    "route53:ChangeResourceRecordSetsNormalizedRecordNames": [record_name],
                    "route53:ChangeResourceRecordSetsRecordTypes": ["A"],
                    "route53:ChangeResourceRecordSetsActions": ["UPSERT"],
                }},
            },
        ],
    }


class SchedulerDns(pulumi.ComponentResource):
    """The scheduler's DNS updater: log group, role and policy, function, launch rule, target and permission."""

    function_arn: pulumi.Output[str]
    rule_arn: pulumi.Output[str]

    def __init__(self, name: str, args: SchedulerDnsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:SchedulerDns", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        function = conventions.scheduler_dns_function_name(args.cluster)
        group_name = conventions.node_group_name(args.cluster, "scheduler")
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=f"/aws/lambda/{function}", retention_in_days=args.log_retention_days, tags=args.tags,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-updater",
            name=function,
            description=f"daskfleet {args.cluster}: keeps the scheduler's DNS record",
            assume_role_policy=json.dumps(trust_policy()),
            tags=args.tags,
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-updater",
            role=role.name,
            name=f"{conventions.NAME_PREFIX}-scheduler-dns",
            policy=pulumi.Output.all(args.zone_id, logs.arn).apply(
                lambda values: json.dumps(updater_policy(
                    account=args.account, zone_id=values[0], record_name=args.scheduler_dns_name,
                    log_group_arn=values[1],
                ))
            ),
            opts=child,
        )
        updater_function = aws.lambda_.Function(
            f"{name}-updater",
            name=function,
            description=f"daskfleet {args.cluster}: points {args.scheduler_dns_name} at the launched scheduler",
            runtime=RUNTIME,
            handler=f"{HANDLER_FILE.stem}.handler",
            # Relative to the project directory (the program's working directory), so the asset reads
            # the same on every operator's machine and does not show as a change.
            code=pulumi.AssetArchive({HANDLER_FILE.name: pulumi.FileAsset(os.path.relpath(HANDLER_FILE))}),
            role=role.arn,
            timeout=TIMEOUT_SECONDS,
            memory_size=MEMORY_MB,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables={
                updater.ZONE_ID_ENV: args.zone_id,
                updater.RECORD_NAME_ENV: args.scheduler_dns_name,
                updater.GROUP_NAME_ENV: group_name,
            }),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=logs.name),
            tags=args.tags,
            # Its first invocation must find its permissions in place.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        rule = aws.cloudwatch.EventRule(
            f"{name}-launches",
            name=function,
            description=f"daskfleet {args.cluster}: a scheduler instance was launched",
            event_pattern=json.dumps(launch_event_pattern(group_name)),
            tags=args.tags,
            opts=child,
        )
        permission = aws.lambda_.Permission(
            f"{name}-launches",
            action="lambda:InvokeFunction",
            function=updater_function.name,
            principal="events.amazonaws.com",
            source_arn=rule.arn,
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-launches",
            rule=rule.name,
            arn=updater_function.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[permission]),
        )
        self.function_arn = updater_function.arn
        self.rule_arn = rule.arn
        self.register_outputs({"function_arn": self.function_arn, "rule_arn": self.rule_arn})
