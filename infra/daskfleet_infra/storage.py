"""The cluster's data at rest: a customer-managed KMS key and a private, TLS-only, versioned bucket.

The key encrypts the bucket and the cluster's secrets. Its policy leaves administration to
the account's IAM and lets each configured user decrypt only through Secrets Manager (their
client certificate); node roles get Decrypt through their own IAM policies.
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

SCRATCH_PREFIX = "scratch/"


@dataclass(frozen=True)
class StorageArgs:
    cluster: str
    account: Account
    #: Ephemeral stacks may destroy a bucket that still holds objects, and their key goes sooner.
    ephemeral: bool
    scratch_expiration_days: int
    #: IAM principals of the configured users, who decrypt their client secret and read published environments.
    user_principal_arns: Sequence[str]
    #: IAM principals who may publish environments: the only ones who write under envs/ (besides the deployer).
    publisher_arns: Sequence[str] = ()


def key_policy(account: Account, user_principal_arns: Sequence[str], publisher_arns: Sequence[str] = ()) -> dict[str, Any]:
    """The cluster key's policy ("Resource": "*" in a key policy means this key)."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "AccountIamPoliciesGovernTheKey",
            "Effect": "Allow",
            "Principal": {"AWS": account.arn("iam", "root", regional=False)},
            "Action": "kms:*",
            "Resource": "*",
        }
    ]
    if user_principal_arns:
        statements.append({
            "Sid": "UsersDecryptTheirClientSecret",
            "Effect": "Allow",
            "Principal": {"AWS": sorted(set(user_principal_arns))},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{account.region}.{account.dns_suffix}"}},
        })
        statements.append({
            "Sid": "UsersReadPublishedEnvironmentsThroughS3",
            "Effect": "Allow",
            "Principal": {"AWS": sorted(set(user_principal_arns))},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{account.region}.{account.dns_suffix}"}},
        })
    if publisher_arns:
        statements.append({
            "Sid": "PublishersEncryptEnvironmentsThroughS3",
            "Effect": "Allow",
            "Principal": {"AWS": sorted(set(publisher_arns))},
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{account.region}.{account.dns_suffix}"}},
        })
    return {"Version": "2012-10-17", "Statement": statements}


def bucket_policy(
    bucket_arn: str, *, readers: Sequence[str] = (), publishers: Sequence[str] = (), deployer: str | None = None,
) -> dict[str, Any]:
    """TLS only; published environments (envs/) read by the users and written only by the publishers."""
    environments = f"{bucket_arn}/{conventions.ENV_OBJECT_PREFIX}*"
    statements: list[dict[str, Any]] = [{
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]
    writers = sorted(set(publishers) | ({deployer} if deployer else set()))
    if writers:
        statements.append({
            # Nodes may write the rest of the bucket, never what every node installs.
            "Sid": "OnlyPublishersWriteEnvironments",
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
            "Resource": [environments],
            "Condition": {"ArnNotLike": {"aws:PrincipalArn": writers}},
        })
    if publishers:
        statements.append({
            "Sid": "PublishersWriteEnvironments",
            "Effect": "Allow",
            "Principal": {"AWS": sorted(set(publishers))},
            "Action": ["s3:PutObject", "s3:GetObject"],
            "Resource": [environments],
        })
    if readers or publishers:
        statements.append({
            "Sid": "UsersReadEnvironments",
            "Effect": "Allow",
            "Principal": {"AWS": sorted(set(readers) | set(publishers))},
            "Action": ["s3:GetObject"],
            "Resource": [environments],
        })
        statements.append({
            "Sid": "UsersListEnvironments",
            "Effect": "Allow",
            "Principal": {"AWS": sorted(set(readers) | set(publishers))},
            "Action": ["s3:ListBucket"],
            "Resource": [bucket_arn],
            "Condition": {"StringLike": {"s3:prefix": [f"{conventions.ENV_OBJECT_PREFIX}*"]}},
        })
    return {"Version": "2012-10-17", "Statement": statements}


class Storage(pulumi.ComponentResource):
    """The cluster key and the cluster bucket with encryption, versioning, blocks, policy and lifecycle."""

    key_arn: pulumi.Output[str]
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        key = aws.kms.Key(
            f"{name}-key",
            description=f"daskfleet cluster {args.cluster}: bucket and secrets",
            enable_key_rotation=True,
            deletion_window_in_days=7 if args.ephemeral else 30,
            policy=json.dumps(key_policy(args.account, args.user_principal_arns, args.publisher_arns)),
            opts=child,
        )
        aws.kms.Alias(f"{name}-key", name=conventions.kms_alias(args.cluster), target_key_id=key.key_id, opts=child)
        # Pulumi names the bucket after this resource name plus "-" and a random suffix, which makes
        # conventions.bucket_name_prefix(cluster); renaming the resource would replace the bucket.
        bucket = aws.s3.Bucket(
            conventions.bucket_name_prefix(args.cluster).removesuffix("-"), force_destroy=args.ephemeral, opts=child,
        )
        self._secure_bucket(name, bucket, key, args)
        self._expire_scratch(name, bucket, args.scratch_expiration_days)
        self.key_arn = key.arn
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"key_arn": self.key_arn, "bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn})

    def _secure_bucket(self, name: str, bucket: aws.s3.Bucket, key: aws.kms.Key, args: StorageArgs) -> None:
        """Owner-enforced, never public, encrypted with the cluster key, versioned, TLS only."""
        child = pulumi.ResourceOptions(parent=self)
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="aws:kms", kms_master_key_id=key.arn,
                ),
                bucket_key_enabled=True,
            )],
            opts=child,
        )
        self._versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(bucket_policy(
                arn, readers=args.user_principal_arns, publishers=args.publisher_arns, deployer=args.account.deployer_arn,
            ))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )

    def _expire_scratch(self, name: str, bucket: aws.s3.Bucket, days: int) -> None:
        """Objects under scratch/ (and their old versions) go after ``days``; stale multipart uploads after a week."""
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-scratch",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=SCRATCH_PREFIX),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=days),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=days,
                    ),
                ),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=7,
                    ),
                ),
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self._versioning]),
        )
