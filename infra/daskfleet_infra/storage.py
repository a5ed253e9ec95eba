"""The fleet's data at rest: a customer-managed KMS key and a private, TLS-only, versioned bucket, shared by its clusters.

The key encrypts the bucket and every cluster's secrets. Its policy leaves administration to
the account's IAM and lets each configured user decrypt only through Secrets Manager (their
client certificate; each secret's own policy says whose); node roles, members and publishers
get the key through their own IAM policies, for their scope's objects only (data_access).
Each cluster keeps its data under ``clusters/<cluster>/``; the bucket policy denies every
cluster's node roles anything else but the published environments and the declared data
prefixes, in statements that do not grow with the fleet. Objects use no S3 Bucket Key, so
the key's encryption context names each object and grants can be scoped to prefixes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from daskfleet import conventions

from .data_access import bucket_policy_backstop
from .lookups import Account

SCRATCH_PREFIX = "scratch/"
#: Where the image lock object lived before it became the fleet's (one per stack, in the shared bucket).
IMAGE_LOCK_OLD_NAME = "environments-image-lock"
IMAGE_LOCK_OLD_PARENT = ("daskfleet:aws:PublishedEnvironments", "environments")


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
    #: The fleet's clusters: each gets its own scratch prefix, clusters/<cluster>/scratch/.
    clusters: Sequence[str] = ()
    #: Fleet-bucket prefixes the clusters' data entries declare (the node roles' backstop leaves them to role policies).
    shared_prefixes: Sequence[str] = ()
    #: (object key, lock text) of the images' lock, or None.
    image_lock: tuple[str, str] | None = None


def key_policy(account: Account, user_principal_arns: Sequence[str]) -> dict[str, Any]:
    """The fleet key's policy ("Resource": "*" in a key policy means this key).

    Users decrypt through Secrets Manager here, so a login that no stack can change (IAM Identity
    Center) still reads its own certificate; which secret is whose, each secret's policy says.
    Everything through S3 is granted by identity policies scoped to the caller's prefixes.
    """
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
    return {"Version": "2012-10-17", "Statement": statements}


def bucket_policy(
    bucket_arn: str, *, account: Account | None = None, publishers: Sequence[str] = (), deployer: str | None = None,
    shared_prefixes: Sequence[str] = (),
) -> dict[str, Any]:
    """TLS only; published environments (envs/) written only by the publishers; node roles kept to their scope.

    Reading envs/ and each cluster's prefix is granted by identity policies (data_access), so the
    policy grows with the publishers alone, never with the clusters or their members.
    """
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
            # Nobody but the publishers writes what every node installs.
            "Sid": "OnlyPublishersWriteEnvironments",
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
            "Resource": [environments],
            "Condition": {"ArnNotLike": {"aws:PrincipalArn": writers}},
        })
    if account is not None:
        statements += bucket_policy_backstop(account, bucket_arn, shared_prefixes)
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
            policy=json.dumps(key_policy(args.account, args.user_principal_arns)),
            opts=child,
        )
        aws.kms.Alias(f"{name}-key", name=conventions.kms_alias(args.cluster), target_key_id=key.key_id, opts=child)
        # Pulumi names the bucket after this resource name plus "-" and a random suffix, which makes
        # conventions.bucket_name_prefix(cluster); renaming the resource would replace the bucket.
        bucket = aws.s3.Bucket(
            conventions.bucket_name_prefix(args.cluster).removesuffix("-"), force_destroy=args.ephemeral, opts=child,
        )
        self._secure_bucket(name, bucket, key, args)
        self._expire_scratch(name, bucket, args.scratch_expiration_days, args.clusters)
        if args.image_lock is not None:
            self._store_image_lock(bucket, key, args.image_lock)
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
                # No S3 Bucket Key: with one, the key's encryption context would be the bucket, not the object,
                # and no grant could be scoped to a cluster's prefix.
                bucket_key_enabled=False,
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
                arn, account=args.account, publishers=args.publisher_arns, deployer=args.account.deployer_arn,
                shared_prefixes=args.shared_prefixes,
            ))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )

    def _expire_scratch(self, name: str, bucket: aws.s3.Bucket, days: int, clusters: Sequence[str]) -> None:
        """Objects under scratch/ and each cluster's clusters/<cluster>/scratch/ (and their old versions) go after
        ``days``; stale multipart uploads after a week."""

        def expire(rule_id: str, prefix: str) -> aws.s3.BucketLifecycleConfigurationRuleArgs:
            return aws.s3.BucketLifecycleConfigurationRuleArgs(
                id=rule_id,
                status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=prefix),
                expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=days),
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                    noncurrent_days=days,
                ),
            )

        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                expire("expire-scratch", SCRATCH_PREFIX),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=7,
                    ),
                ),
                *(expire(f"expire-scratch-{cluster}", conventions.cluster_data_prefix(cluster) + SCRATCH_PREFIX)
                  for cluster in sorted(clusters)),
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self._versioning]),
        )

    def _store_image_lock(self, bucket: aws.s3.Bucket, key: aws.kms.Key, image_lock: tuple[str, str]) -> None:
        """The lock the images were built from, so a publish uploads only what they lack (one for the fleet)."""
        object_key, text = image_lock
        old_parent = f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::{'::'.join(IMAGE_LOCK_OLD_PARENT)}"
        aws.s3.BucketObjectv2(
            "environments-image-lock", bucket=bucket.bucket, key=object_key, content=text,
            content_type="application/yaml", server_side_encryption="aws:kms", kms_key_id=key.arn,
            # It was declared by the one cluster's environments component before stacks held fleets.
            opts=pulumi.ResourceOptions(parent=self, aliases=[pulumi.Alias(name=IMAGE_LOCK_OLD_NAME, parent=old_parent)]),
        )
