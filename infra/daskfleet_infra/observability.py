"""Where the nodes' logs go: the cluster log group, with a retention so logs do not pile up forever."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from daskfleet import conventions


@dataclass(frozen=True)
class ObservabilityArgs:
    cluster: str
    log_retention_days: int


class Observability(pulumi.ComponentResource):
    """The cluster's CloudWatch log group (the only one its nodes may write)."""

    log_group_name: pulumi.Output[str]
    log_group_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Observability", name, None, opts)
        group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=conventions.log_group_name(args.cluster),
            retention_in_days=args.log_retention_days,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.log_group_name = group.name
        self.log_group_arn = group.arn
        self.register_outputs({"log_group_name": self.log_group_name, "log_group_arn": self.log_group_arn})
