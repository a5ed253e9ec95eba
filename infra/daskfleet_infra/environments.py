"""Who may publish a new environment to a cluster, and who may read what is published.

Publishing (``daskfleet env publish``) writes archives under ``envs/`` in the fleet's bucket
(shared by its clusters: an archive is content-addressed) and then moves the cluster's pointer,
an SSM parameter whose versions are the history. The bucket policy lets only the publishers
write under ``envs/``; the publish policy here grants them the pointer, the writes and the
fleet key for ``envs/`` objects. Each is attached to the principals this stack may change;
others get the exported policy added by their administrators, as with the member policy.

Members read the published environment through their member policy (membership). The stack's
own cluster also keeps the read policy it had before stacks held fleets (``env-read``), since
permission sets may name it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from daskfleet import conventions

from .data_access import environments_statements
from .lookups import Account
from .wake import attach_policy


@dataclass(frozen=True)
class PublishedEnvironmentsArgs:
    cluster: str
    account: Account
    #: (label, principal ARN) of those who may publish; and of the users, who may read (legacy read policy only).
    publishers: Sequence[tuple[str, str]]
    readers: Sequence[tuple[str, str]]
    bucket_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    #: Declare the read policy of a stack from before fleets (the stack's own cluster).
    read_policy: bool = False
    tags: Mapping[str, str] | None = None


def _pointer_and_spec(cluster: str, account: Account) -> list[str]:
    return [
        account.arn("ssm", f"parameter{conventions.published_env_parameter_name(cluster)}"),
        account.arn("ssm", f"parameter{conventions.spec_parameter_name(cluster, 'worker')}"),
    ]


def publish_policy(cluster: str, account: Account, bucket_arn: str, key_arn: str) -> dict[str, Any]:
    """Move the cluster's pointer and read its history; read the worker spec (it names the bucket); write envs/."""
    pointer, spec = _pointer_and_spec(cluster, account)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "MoveThePublishedEnvironment", "Effect": "Allow",
             "Action": ["ssm:PutParameter", "ssm:GetParameter", "ssm:GetParameterHistory"], "Resource": [pointer]},
            {"Sid": "FindTheClusterBucket", "Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": [spec]},
            *environments_statements(account, bucket_arn, key_arn, write=True, sid="Publish"),
        ],
    }


def read_policy(cluster: str, account: Account, bucket_arn: str, key_arn: str) -> dict[str, Any]:
    """Read the cluster's pointer, its history and the worker spec, and the published archives."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadThePublishedEnvironment", "Effect": "Allow",
             "Action": ["ssm:GetParameter", "ssm:GetParameterHistory"],
             "Resource": _pointer_and_spec(cluster, account)},
            *environments_statements(account, bucket_arn, key_arn, write=False, sid="Read"),
        ],
    }


class PublishedEnvironments(pulumi.ComponentResource):
    """The publish policy (and, for the stack's own cluster, the read policy), attached where this stack may."""

    publish_policy_arn: pulumi.Output[str]
    read_policy_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: PublishedEnvironmentsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:PublishedEnvironments", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        arns = pulumi.Output.all(args.bucket_arn, args.key_arn)
        publish = aws.iam.Policy(
            f"{name}-publish",
            name=conventions.resource_name(args.cluster, "env-publish"),
            description=f"daskfleet {args.cluster}: publish environments to the running cluster (its pointer)",
            policy=arns.apply(lambda values: json.dumps(publish_policy(args.cluster, args.account, *values))),
            tags=args.tags,
            opts=child,
        )
        attach_policy(self, f"{name}-publish", publish, args.publishers, args.account,
                      what="the publish policy (output environmentPublishPolicyArn)")
        self.publish_policy_arn = publish.arn
        self.read_policy_arn = None
        if args.read_policy:
            read = aws.iam.Policy(
                f"{name}-read",
                name=conventions.resource_name(args.cluster, "env-read"),
                description=f"daskfleet {args.cluster}: read the cluster's published environment",
                policy=arns.apply(lambda values: json.dumps(read_policy(args.cluster, args.account, *values))),
                tags=args.tags,
                opts=child,
            )
            attach_policy(self, f"{name}-read", read, args.readers, args.account,
                          what="the read policy (output environmentReadPolicyArn)")
            self.read_policy_arn = read.arn
        self.register_outputs({"publish_policy_arn": self.publish_policy_arn, "read_policy_arn": self.read_policy_arn})
