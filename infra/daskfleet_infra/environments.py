"""Who may publish a new environment to the running cluster, who may read it, and the images' own lock.

Publishing (``daskfleet env publish``) writes archives under ``envs/`` in the cluster bucket and
then moves the pointer, an SSM parameter whose versions are the history. The bucket and key
policies (Storage) let only the publishers write under ``envs/``; this component declares the
identity policies for the pointer, the one resource that takes no resource policy: publishers
may move it and read its history, users may read it (``daskfleet env status``, ``env sync``).
Each is attached to the principals this stack may change; others get the exported policy
added by their administrators, as with the wake policy. When ``environmentLock`` is set, the
image's lock is stored in the bucket, so a publish uploads only what the images lack.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from daskfleet import conventions

from .lookups import Account
from .wake import attach_policy


@dataclass(frozen=True)
class PublishedEnvironmentsArgs:
    cluster: str
    account: Account
    #: (label, principal ARN) of those who may publish; and of the users, who may read.
    publishers: Sequence[tuple[str, str]]
    readers: Sequence[tuple[str, str]]
    bucket_name: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    #: (object key, lock text) of the image's lock, or None.
    image_lock: tuple[str, str] | None = None


def _pointer_and_spec(cluster: str, account: Account) -> list[str]:
    return [
        account.arn("ssm", f"parameter{conventions.published_env_parameter_name(cluster)}"),
        account.arn("ssm", f"parameter{conventions.spec_parameter_name(cluster, 'worker')}"),
    ]


def publish_policy(cluster: str, account: Account) -> dict[str, Any]:
    """Move the cluster's pointer and read its history; read the worker spec (it names the bucket)."""
    pointer, spec = _pointer_and_spec(cluster, account)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "MoveThePublishedEnvironment", "Effect": "Allow",
             "Action": ["ssm:PutParameter", "ssm:GetParameter", "ssm:GetParameterHistory"], "Resource": [pointer]},
            {"Sid": "FindTheClusterBucket", "Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": [spec]},
        ],
    }


def read_policy(cluster: str, account: Account) -> dict[str, Any]:
    """Read the cluster's pointer, its history and the worker spec."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "ReadThePublishedEnvironment", "Effect": "Allow",
                       "Action": ["ssm:GetParameter", "ssm:GetParameterHistory"],
                       "Resource": _pointer_and_spec(cluster, account)}],
    }


class PublishedEnvironments(pulumi.ComponentResource):
    """The publish and read policies, attached where this stack may, and the image's lock in the bucket."""

    publish_policy_arn: pulumi.Output[str]
    read_policy_arn: pulumi.Output[str]

    def __init__(self, name: str, args: PublishedEnvironmentsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:PublishedEnvironments", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        publish = aws.iam.Policy(
            f"{name}-publish",
            name=conventions.resource_name(args.cluster, "env-publish"),
            description=f"daskfleet {args.cluster}: publish environments to the running cluster (its pointer)",
            policy=json.dumps(publish_policy(args.cluster, args.account)),
            opts=child,
        )
        read = aws.iam.Policy(
            f"{name}-read",
            name=conventions.resource_name(args.cluster, "env-read"),
            description=f"daskfleet {args.cluster}: read the cluster's published environment",
            policy=json.dumps(read_policy(args.cluster, args.account)),
            opts=child,
        )
        attach_policy(self, f"{name}-publish", publish, args.publishers, args.account,
                      what="the publish policy (output environmentPublishPolicyArn)")
        attach_policy(self, f"{name}-read", read, args.readers, args.account,
                      what="the read policy (output environmentReadPolicyArn)")
        if args.image_lock is not None:
            key, text = args.image_lock
            aws.s3.BucketObjectv2(
                f"{name}-image-lock", bucket=args.bucket_name, key=key, content=text,
                content_type="application/yaml", server_side_encryption="aws:kms", kms_key_id=args.key_arn, opts=child,
            )
        self.publish_policy_arn = publish.arn
        self.read_policy_arn = read.arn
        self.register_outputs({"publish_policy_arn": self.publish_policy_arn, "read_policy_arn": self.read_policy_arn})
