"""Who the nodes are to AWS: a scheduler role and a worker role, each allowed only its own cluster's things.

``node_policy`` (pure) writes each role's policy from ARNs: the cluster's data scope in the fleet
bucket (data_access: its own prefix read-write, the published environments and its data entries)
and extra buckets read-only, the role's own TLS secret and the cluster's parameters read-only,
the fleet key through S3 for the scope's objects and through Secrets Manager for its own secret
only, the cluster's own log group, and what
Session Manager (instead of SSH) needs on an instance. The scheduler alone may scale and
terminate instances of its own worker group, and set its own group's desired capacity (to 0
when the cluster is idle). Each node may mark an instance of its own group unhealthy: its agent
does so for its own instance when it cannot start (IAM has no condition key that names the
instance of a SetInstanceHealth call, so the group is the narrowest scope). No AWS-managed policy is attached:
AmazonSSMManagedInstanceCore would let a node read every SSM parameter of the account.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from daskfleet import conventions

from .data_access import DataScope, key_statements, s3_statements
from .lookups import Account

#: What the SSM Agent needs for Session Manager sessions (shell and port forwarding), nothing more:
#: register the instance, and open the session's control and data channels. None of these has
#: resource-level permissions, so "*" is the only resource; none reads or writes data. Relied on:
#: the AWS-managed policy AWSCloud9SSMInstanceProfile, which is exactly this statement
#: (https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCloud9SSMInstanceProfile.html),
#: and "Reference: ec2messages, ssmmessages, and other API operations" (ssmmessages creates the
#: session channels; https://docs.aws.amazon.com/systems-manager/latest/userguide/systems-manager-setting-up-messageAPIs.html).
#: Left out on purpose: ec2messages:* (Run Command's older channel; SSM Agent 3.3.40.0+ also takes commands
#: over ssmmessages, so ssm:SendCommand on the caller's side decides who runs commands), State Manager's
#: ssm:ListInstanceAssociations / ssm:UpdateInstanceAssociationStatus, and ssm:GetParameter(s) on "*".
SESSION_MANAGER_ACTIONS: tuple[str, ...] = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
)
#: What a node may do to an instance of its own group: mark it unhealthy (its own, when it cannot start).
NODE_SELF_ACTIONS: tuple[str, ...] = ("autoscaling:SetInstanceHealth",)
#: What the scheduler may do to instances of its own worker group (its scaler and drain logic).
WORKER_GROUP_ACTIONS: tuple[str, ...] = (
    "autoscaling:SetDesiredCapacity",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
    "autoscaling:SetInstanceProtection",
    "autoscaling:CompleteLifecycleAction",
)


@dataclass(frozen=True)
class IdentityArgs:
    cluster: str
    account: Account
    bucket_arn: pulumi.Input[str]
    extra_read_buckets: Sequence[str]
    key_arn: pulumi.Input[str]
    log_group_arn: pulumi.Input[str]
    #: The fleet's certificate vendor function: nodes get their certificates there, proving their role.
    vendor_function: str
    #: The cluster's data entries (config.DataEntry), beyond its own prefix.
    data: Sequence[Any] = ()
    #: Tags of the cluster's own resources beyond the provider's defaults (None: the defaults say it all).
    tags: Mapping[str, str] | None = None


def trust_policy(account: Account) -> dict[str, Any]:
    """EC2 may assume the role for the instances it launches with the role's instance profile."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": f"ec2.{account.dns_suffix}"}, "Action": "sts:AssumeRole"}],
    }


def node_policy(
    *,
    cluster: str,
    role: conventions.Role,
    account: Account,
    bucket_arn: str,
    extra_read_buckets: Sequence[str],
    key_arn: str,
    log_group_arn: str,
    data: Sequence[Any] = (),
    vendor_function: str,
) -> dict[str, Any]:
    """The role's inline policy: every data action scoped to this cluster's resources. A node reads no secret: it
    gets its certificate from ``vendor_function``, proving this role."""

    def bucket(name: str) -> str:
        return f"arn:{account.partition}:s3:::{name}"

    parameter_path = conventions.parameter_path_prefix(cluster).rstrip("/")
    scope = DataScope(cluster, account, bucket_arn, tuple(data))
    statements: list[dict[str, Any]] = [
        *s3_statements(scope, sid="Cluster"),
        {
            "Sid": "ClusterParameters",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
            "Resource": [account.arn("ssm", f"parameter{parameter_path}"), account.arn("ssm", f"parameter{parameter_path}/*")],
        },
        *key_statements(scope, key_arn, sid="Cluster"),
        {
            # A node's certificate: 24 h, from the fleet's vendor, for a key made at its boot (its request proves
            # this role). No node reads a secret.
            "Sid": "AskTheCertificateVendor",
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": [account.arn("lambda", f"function:{vendor_function}")],
        },
        {
            "Sid": "ClusterLogGroup",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": [log_group_arn, f"{log_group_arn}:*"],
        },
        {
            "Sid": "SessionManager",
            "Effect": "Allow",
            "Action": list(SESSION_MANAGER_ACTIONS),
            "Resource": "*",
        },
    ]
    if extra_read_buckets:
        statements += [
            {
                "Sid": "ExtraBucketsList",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": [bucket(name) for name in extra_read_buckets],
            },
            {
                "Sid": "ExtraBucketsRead",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"{bucket(name)}/*" for name in extra_read_buckets],
            },
        ]
    # A node that cannot start (configuration-class exit, or gave up) marks its own instance unhealthy,
    # so its group replaces it rather than billing it idle.
    statements.append({
        "Sid": "MarkOwnGroupsInstanceUnhealthy",
        "Effect": "Allow",
        "Action": list(NODE_SELF_ACTIONS),
        "Resource": [account.group_arn(cluster, role)],
        "Condition": {"StringEquals": {f"autoscaling:ResourceTag/{conventions.TAG_CLUSTER}": cluster}},
    })
    if role == "worker":
        # A worker that has drained (its agent retired it) lets its instance go without waiting out the hook.
        statements.append({
            "Sid": "CompleteOwnGroupsDrainHook",
            "Effect": "Allow",
            "Action": ["autoscaling:CompleteLifecycleAction"],
            "Resource": [account.group_arn(cluster, "worker")],
            "Condition": {"StringEquals": {f"autoscaling:ResourceTag/{conventions.TAG_CLUSTER}": cluster}},
        })
    if role == "scheduler":
        statements += [
            {
                # Usage records of earlier schedulers: a new scheduler restores this month's spend and today's use.
                "Sid": "ReadClusterUsageRecords",
                "Effect": "Allow",
                "Action": ["logs:FilterLogEvents"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            },
            {
                "Sid": "ScaleOwnWorkerGroup",
                "Effect": "Allow",
                "Action": list(WORKER_GROUP_ACTIONS),
                "Resource": [account.group_arn(cluster, "worker")],
                "Condition": {"StringEquals": {f"autoscaling:ResourceTag/{conventions.TAG_CLUSTER}": cluster}},
            },
            {
                # Idle to zero; and a scheduler that keeps failing to start stands its cluster down.
                "Sid": "StopOwnSchedulerGroup",
                "Effect": "Allow",
                "Action": ["autoscaling:SetDesiredCapacity"],
                "Resource": [account.group_arn(cluster, "scheduler")],
                "Condition": {"StringEquals": {f"autoscaling:ResourceTag/{conventions.TAG_CLUSTER}": cluster}},
            },
            {
                # These reads cannot be scoped to a resource; they return no data beyond instance state.
                "Sid": "SeeGroupsAndInstances",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLifecycleHooks",
                    "ec2:DescribeInstances",
                ],
                "Resource": "*",
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}


class Identity(pulumi.ComponentResource):
    """Scheduler and worker roles with their instance profiles and least-privilege policies."""

    role_arns: dict[str, pulumi.Output[str]]
    role_names: dict[str, pulumi.Output[str]]
    instance_profile_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Identity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = args.account
        self.role_arns, self.role_names, self.instance_profile_arns, self.policies = {}, {}, {}, []
        for node_role in conventions.NODE_ROLES:
            role = aws.iam.Role(
                f"{name}-{node_role}",
                name=conventions.iam_role_name(args.cluster, node_role),
                description=f"daskfleet {args.cluster} {node_role} instances",
                assume_role_policy=json.dumps(trust_policy(account)),
                # The bucket policy reads the role's daskfleet:cluster tag to find its prefix (data_access).
                tags=args.tags,
                opts=child,
            )
            self.policies.append(aws.iam.RolePolicy(
                f"{name}-{node_role}",
                role=role.name,
                name=f"{conventions.NAME_PREFIX}-node",
                policy=pulumi.Output.all(args.bucket_arn, args.key_arn, args.log_group_arn).apply(
                    lambda arns, node_role=node_role: json.dumps(node_policy(
                        cluster=args.cluster, role=node_role, account=account,
                        bucket_arn=arns[0], extra_read_buckets=args.extra_read_buckets, key_arn=arns[1],
                        log_group_arn=arns[2], data=args.data, vendor_function=args.vendor_function,
                    ))
                ),
                opts=child,
            ))
            profile = aws.iam.InstanceProfile(
                f"{name}-{node_role}", name=conventions.iam_role_name(args.cluster, node_role), role=role.name,
                tags=args.tags, opts=child,
            )
            self.role_arns[node_role] = role.arn
            self.role_names[node_role] = role.name
            self.instance_profile_arns[node_role] = profile.arn
        self.register_outputs({"role_arns": self.role_arns, "instance_profile_arns": self.instance_profile_arns})
