"""Where a cluster's nodes log: its own log group, with a retention so logs do not pile up forever.

Each cluster of a fleet has its own group (``/daskfleet/<cluster>``), not a stream prefix of a
shared one: CloudWatch Logs authorizes its reads (FilterLogEvents, StartQuery,
DescribeLogStreams) per log group, so only a group of its own keeps a cluster's usage records,
audit trail and node logs out of another cluster's reach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from daskfleet import conventions


@dataclass(frozen=True)
class ObservabilityArgs:
    cluster: str
    log_retention_days: int
    tags: Mapping[str, str] | None = None


class Observability(pulumi.ComponentResource):
    """The cluster's CloudWatch log group (the only one its nodes may write, and its members read)."""

    log_group_name: pulumi.Output[str]
    log_group_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Observability", name, None, opts)
        group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=conventions.log_group_name(args.cluster),
            retention_in_days=args.log_retention_days,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.log_group_name = group.name
        self.log_group_arn = group.arn
        self.register_outputs({"log_group_name": self.log_group_name, "log_group_arn": self.log_group_arn})
