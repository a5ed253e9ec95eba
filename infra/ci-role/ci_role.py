"""The CI role's trust and permissions, written purely (``trust_policy``, ``permissions``), declared by ``CiRole``.

Trust: web identities from GitHub's OIDC provider with audience sts.amazonaws.com whose subject is
one of this repository's branches or its pull requests. Permissions: what ``make up``/``destroy``
of the daskfleet program, the janitor, the smoke test's port forward and the Pulumi backend need,
named by daskfleet's resource names wherever the service allows it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from daskfleet import conventions

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
AUDIENCE = "sts.amazonaws.com"
REPOSITORY_PATTERN = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
ROLE_NAME = f"{conventions.NAME_PREFIX}-ci"


def subjects(repository: str) -> list[str]:
    """The OIDC subjects allowed: the repository's branches and its (same-repository) pull requests."""
    if not re.fullmatch(REPOSITORY_PATTERN, repository):
        raise ValueError(f"repository: {repository!r} is not ORG/REPO")
    return [f"repo:{repository}:ref:refs/heads/*", f"repo:{repository}:pull_request"]


def trust_policy(provider_arn: str, repository: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {f"{GITHUB_OIDC_HOST}:aud": AUDIENCE},
                "StringLike": {f"{GITHUB_OIDC_HOST}:sub": subjects(repository)},
            },
        }],
    }


def permissions(*, partition: str, account: str, state_bucket: str, secrets_provider_key_arn: str) -> dict[str, Any]:
    """Deploy, tear down and sweep daskfleet clusters; read and write the Pulumi state."""
    named = f"{conventions.NAME_PREFIX}-*"

    def arn(service: str, resource: str, region: str = "*") -> str:
        return f"arn:{partition}:{service}:{region}:{account}:{resource}"

    def statement(sid: str, actions: list[str], resources: list[str], condition: dict | None = None) -> dict[str, Any]:
        body = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
        return {**body, "Condition": condition} if condition else body

    return {"Version": "2012-10-17", "Statement": [
        # EC2, auto scaling, Route 53 and Budgets creation and description have no resource-level scope.
        statement("NetworkComputeAndDns", ["ec2:*", "autoscaling:*", "route53:*", "elasticloadbalancing:Describe*",
                                           "budgets:*", "ce:GetCostAndUsage", "tag:GetResources", "sts:GetCallerIdentity",
                                           "iam:GetContextKeysForPrincipalPolicy"], ["*"]),
        # Named one by one: a wildcard such as iam:*Role would also grant iam:PassRole without PassNodeRoles' condition.
        statement("NodeAndUpdaterRoles", ["iam:CreateRole", "iam:GetRole", "iam:UpdateRole", "iam:UpdateRoleDescription",
                                          "iam:UpdateAssumeRolePolicy", "iam:DeleteRole", "iam:TagRole", "iam:UntagRole",
                                          "iam:ListRoleTags", "iam:PutRolePolicy", "iam:GetRolePolicy",
                                          "iam:DeleteRolePolicy", "iam:ListRolePolicies", "iam:AttachRolePolicy",
                                          "iam:DetachRolePolicy", "iam:ListAttachedRolePolicies",
                                          "iam:CreateInstanceProfile", "iam:GetInstanceProfile", "iam:DeleteInstanceProfile",
                                          "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
                                          "iam:TagInstanceProfile", "iam:UntagInstanceProfile", "iam:ListInstanceProfileTags",
                                          "iam:ListInstanceProfilesForRole"],
                  [f"arn:{partition}:iam::{account}:role/{named}", f"arn:{partition}:iam::{account}:instance-profile/{named}"]),
        # The clusters' managed policies (budget stop, wake, environment publish and read), and the janitor's sweep of them.
        statement("ClusterManagedPolicies", ["iam:CreatePolicy", "iam:GetPolicy", "iam:DeletePolicy", "iam:TagPolicy",
                                             "iam:UntagPolicy", "iam:ListPolicyTags", "iam:CreatePolicyVersion",
                                             "iam:GetPolicyVersion", "iam:ListPolicyVersions", "iam:DeletePolicyVersion",
                                             "iam:ListEntitiesForPolicy"],
                  [f"arn:{partition}:iam::{account}:policy/{named}"]),
        statement("ListIam", ["iam:ListRoles", "iam:ListInstanceProfiles", "iam:ListPolicies"], ["*"]),
        statement("PassNodeRoles", ["iam:PassRole"], [f"arn:{partition}:iam::{account}:role/{named}"],
                  {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "lambda.amazonaws.com"]}}),
        statement("ClusterKeys", ["kms:CreateKey", "kms:ListKeys", "kms:ListAliases"], ["*"]),
        statement("ClusterKeyAdministration", ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy",
                                               "kms:GetKeyRotationStatus", "kms:EnableKeyRotation", "kms:ListResourceTags",
                                               "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion",
                                               "kms:CreateAlias", "kms:DeleteAlias", "kms:UpdateAlias"],
                  [arn("kms", "key/*"), arn("kms", f"alias/{conventions.NAME_PREFIX}/*")]),
        statement("ClusterKeyThroughSecretsManagerAndS3", ["kms:Decrypt", "kms:GenerateDataKey"], [arn("kms", "key/*")],
                  {"StringLike": {"kms:ViaService": ["secretsmanager.*.amazonaws.com", "s3.*.amazonaws.com"]},
                   "Null": {f"aws:ResourceTag/{conventions.TAG_CLUSTER}": "false"}}),
        statement("ClusterBuckets", ["s3:*"], [f"arn:{partition}:s3:::{named}", f"arn:{partition}:s3:::{named}/*"]),
        statement("ListBuckets", ["s3:ListAllMyBuckets", "s3:GetBucketLocation"], ["*"]),
        statement("ClusterSecrets", ["secretsmanager:*"], [arn("secretsmanager", f"secret:{conventions.NAME_PREFIX}/*")]),
        statement("ListSecrets", ["secretsmanager:ListSecrets"], ["*"]),
        statement("ClusterParameters", ["ssm:PutParameter", "ssm:GetParameter", "ssm:GetParameters", "ssm:DeleteParameter",
                                        "ssm:AddTagsToResource", "ssm:RemoveTagsFromResource", "ssm:ListTagsForResource"],
                  [arn("ssm", f"parameter/{conventions.NAME_PREFIX}/*")]),
        statement("DescribeParameters", ["ssm:DescribeParameters", "ssm:DescribeInstanceInformation"], ["*"]),
        statement("ClusterLogGroups", ["logs:*"], [arn("logs", f"log-group:/{conventions.NAME_PREFIX}/*"),
                                                   arn("logs", f"log-group:/aws/lambda/{named}")]),
        statement("DescribeLogGroups", ["logs:DescribeLogGroups"], ["*"]),
        statement("DnsUpdaters", ["lambda:*"], [arn("lambda", f"function:{named}")]),
        statement("ListFunctions", ["lambda:ListFunctions"], ["*"]),
        statement("LaunchEventRules", ["events:*"], [arn("events", f"rule/{named}")]),
        statement("ListRules", ["events:ListRules"], ["*"]),
        statement("SmokePortForwardDocument", ["ssm:StartSession"],
                  [f"arn:{partition}:ssm:*::document/AWS-StartPortForwardingSessionToRemoteHost"]),
        statement("SmokePortForwardToClusterInstances", ["ssm:StartSession"], [arn("ec2", "instance/*")],
                  {"StringLike": {f"ssm:resourceTag/{conventions.TAG_CLUSTER}": "*"}}),
        statement("OwnSessions", ["ssm:TerminateSession"], [arn("ssm", "session/${aws:userid}-*")]),
        statement("PulumiState", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
                  [f"arn:{partition}:s3:::{state_bucket}", f"arn:{partition}:s3:::{state_bucket}/*"]),
        statement("PulumiSecretsProvider", ["kms:Encrypt", "kms:Decrypt"], [secrets_provider_key_arn]),
    ]}


@dataclass(frozen=True)
class CiRoleArgs:
    repository: str
    oidc_provider_arn: str | None
    state_bucket: str
    secrets_provider_key_arn: str


class CiRole(pulumi.ComponentResource):
    """GitHub's OIDC provider (unless one exists) and the role this repository's workflows assume."""

    def __init__(self, name: str, args: CiRoleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:CiRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        subjects(args.repository)  # a wrong repository stops before anything is declared
        caller, partition = aws.get_caller_identity(), aws.get_partition()
        provider_arn: pulumi.Input[str] = args.oidc_provider_arn or aws.iam.OpenIdConnectProvider(
            f"{name}-github", url=f"https://{GITHUB_OIDC_HOST}", client_id_lists=[AUDIENCE], opts=child).arn
        role = aws.iam.Role(
            f"{name}-role", name=ROLE_NAME, max_session_duration=3600,
            description=f"GitHub Actions of {args.repository}: deploy, tear down and sweep daskfleet clusters",
            assume_role_policy=pulumi.Output.from_input(provider_arn).apply(
                lambda arn: json.dumps(trust_policy(arn, args.repository))),
            opts=child)
        aws.iam.RolePolicy(f"{name}-permissions", role=role.name, name=ROLE_NAME, policy=json.dumps(permissions(
            partition=partition.partition, account=caller.account_id, state_bucket=args.state_bucket.removeprefix("s3://"),
            secrets_provider_key_arn=args.secrets_provider_key_arn)), opts=child)
        self.role_arn = role.arn
        self.register_outputs({"role_arn": self.role_arn})
