"""What one cluster reaches in S3 and through the fleet's key: written once, for its nodes and its members alike.

A cluster's scope in the fleet's bucket is its own prefix ``clusters/<cluster>/`` (read-write),
the published environments under ``envs/`` (read) and the prefixes its ``data`` entries declare
(read or read-write); other buckets' entries add prefixes of those buckets. The fleet key
decrypts (and, where writable, encrypts) only objects in that scope: S3 names each object in
the key's encryption context (``kms:EncryptionContext:aws:s3:arn``), which is why the bucket
uses no S3 Bucket Key (with one, the context is the bucket's ARN). Objects written while the
bucket still used one carry the bucket's ARN as their context; that context may be decrypted
through S3 too, so published environments from before stay readable, and S3's own permissions
still confine which of those objects a role can fetch.

``bucket_policy_backstop`` is the bucket's side: whatever a role policy says, the bucket denies
every cluster's node roles any object outside their own prefix, the shared environments and the
declared data prefixes. One statement serves every cluster (the role's ``daskfleet:cluster`` tag
names its prefix), so the bucket policy does not grow with the fleet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from daskfleet import conventions

from .config import DataEntry
from .lookups import Account

#: Reading, writing and deleting objects, and what multipart uploads need.
OBJECT_READ_ACTIONS: tuple[str, ...] = ("s3:GetObject",)
OBJECT_WRITE_ACTIONS: tuple[str, ...] = (
    "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
)
LIST_ACTIONS: tuple[str, ...] = ("s3:ListBucket",)
#: Listing actions the bucket refuses nodes outside their prefixes.
BUCKET_LIST_ACTIONS: tuple[str, ...] = ("s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads")
#: The role tag naming a node role's cluster; the bucket policy reads it as a policy variable.
PRINCIPAL_CLUSTER = "${aws:PrincipalTag/" + conventions.TAG_CLUSTER + "}"


def bucket_arn(account: Account, bucket: str) -> str:
    return f"arn:{account.partition}:s3:::{bucket}"


@dataclass(frozen=True)
class DataScope:
    """One cluster's S3 scope: the fleet bucket (by ARN), its own prefix, the environments and its data entries."""

    cluster: str
    account: Account
    #: The fleet's bucket.
    bucket_arn: str
    entries: tuple[DataEntry, ...] = ()

    @property
    def own_prefix(self) -> str:
        return conventions.cluster_data_prefix(self.cluster)

    def _entry_bucket(self, entry: DataEntry) -> str:
        return self.bucket_arn if entry.bucket is None else bucket_arn(self.account, entry.bucket)

    def fleet_prefixes(self, *, writable: bool) -> list[str]:
        """Prefixes of the fleet bucket in scope: its own (writable) and the data entries of that access."""
        declared = [entry.prefix for entry in self.entries if entry.bucket is None and entry.writable == writable]
        return [self.own_prefix, *declared] if writable else [conventions.ENV_OBJECT_PREFIX, *declared]

    def object_arns(self, *, writable: bool, fleet_only: bool = False) -> list[str]:
        """Object ARNs (``bucket/prefix*``) in scope with that access; ``fleet_only`` leaves other buckets out."""
        arns = [f"{self.bucket_arn}/{prefix}*" for prefix in self.fleet_prefixes(writable=writable)]
        if not fleet_only:
            arns += [f"{self._entry_bucket(entry)}/{entry.prefix}*" for entry in self.entries
                     if entry.bucket is not None and entry.writable == writable]
        return arns

    def listings(self, *, fleet_only: bool = False) -> list[tuple[str, list[str]]]:
        """(bucket ARN, prefixes it may be listed under) for the fleet bucket and each other bucket in scope."""
        buckets: dict[str, list[str]] = {self.bucket_arn: self.fleet_prefixes(writable=True) + self.fleet_prefixes(writable=False)}
        if not fleet_only:
            for entry in self.entries:
                if entry.bucket is not None:
                    buckets.setdefault(self._entry_bucket(entry), []).append(entry.prefix)
        return [(arn, sorted(set(prefixes))) for arn, prefixes in buckets.items()]

    def key_contexts(self, *, writable: bool) -> list[str]:
        """The ``aws:s3:arn`` encryption contexts the fleet key may be used under: the fleet bucket's objects in scope."""
        contexts = [f"{self.bucket_arn}/{prefix}*" for prefix in self.fleet_prefixes(writable=writable)]
        # Objects from before the bucket stopped using an S3 Bucket Key name the bucket itself (module docstring).
        return contexts if writable else [*contexts, self.bucket_arn]


def s3_statements(scope: DataScope, *, fleet_only: bool = False, sid: str = "") -> list[dict[str, Any]]:
    """Allow statements listing, reading and writing exactly the scope (``fleet_only``: the fleet bucket alone)."""
    statements: list[dict[str, Any]] = []
    for index, (arn, prefixes) in enumerate(scope.listings(fleet_only=fleet_only)):
        statements.append({
            "Sid": f"{sid}List{'FleetBucket' if index == 0 else f'DataBucket{index}'}",
            "Effect": "Allow",
            "Action": list(LIST_ACTIONS),
            "Resource": [arn],
            "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in prefixes]}},
        })
    statements.append({
        "Sid": f"{sid}FindBuckets", "Effect": "Allow", "Action": ["s3:GetBucketLocation"],
        "Resource": [arn for arn, _ in scope.listings(fleet_only=fleet_only)],
    })
    statements.append({
        "Sid": f"{sid}ReadWriteOwnPrefixes", "Effect": "Allow", "Action": list(OBJECT_WRITE_ACTIONS),
        "Resource": scope.object_arns(writable=True, fleet_only=fleet_only),
    })
    statements.append({
        "Sid": f"{sid}ReadEnvironmentsAndData", "Effect": "Allow", "Action": list(OBJECT_READ_ACTIONS),
        "Resource": scope.object_arns(writable=False, fleet_only=fleet_only),
    })
    return statements


def key_statements(scope: DataScope, key_arn: str, *, sid: str = "") -> list[dict[str, Any]]:
    """The fleet key through S3, for the scope's objects only (their ARN is the encryption context)."""
    via_s3 = f"s3.{scope.account.region}.{scope.account.dns_suffix}"
    return [
        {
            "Sid": f"{sid}FleetKeyForOwnPrefixesThroughS3",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": [key_arn],
            "Condition": {
                "StringEquals": {"kms:ViaService": via_s3},
                "StringLike": {"kms:EncryptionContext:aws:s3:arn": scope.key_contexts(writable=True)},
            },
        },
        {
            "Sid": f"{sid}FleetKeyReadsEnvironmentsAndDataThroughS3",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": [key_arn],
            "Condition": {
                "StringEquals": {"kms:ViaService": via_s3},
                "StringLike": {"kms:EncryptionContext:aws:s3:arn": scope.key_contexts(writable=False)},
            },
        },
    ]


def environments_statements(
    account: Account, bucket: str, key_arn: str, *, write: bool, sid: str = "",
) -> list[dict[str, Any]]:
    """Read (``write``: also write) the published environments under ``envs/`` of the fleet's bucket, through S3."""
    objects = f"{bucket}/{conventions.ENV_OBJECT_PREFIX}*"
    via_s3 = f"s3.{account.region}.{account.dns_suffix}"
    return [
        {"Sid": f"{sid}ListEnvironments", "Effect": "Allow", "Action": list(LIST_ACTIONS), "Resource": [bucket],
         "Condition": {"StringLike": {"s3:prefix": [f"{conventions.ENV_OBJECT_PREFIX}*"]}}},
        {"Sid": f"{sid}{'Write' if write else 'Read'}Environments", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject"] if write else ["s3:GetObject"], "Resource": [objects]},
        {"Sid": f"{sid}FleetKeyForEnvironmentsThroughS3", "Effect": "Allow",
         "Action": ["kms:Decrypt", "kms:GenerateDataKey"] if write else ["kms:Decrypt"], "Resource": [key_arn],
         "Condition": {"StringEquals": {"kms:ViaService": via_s3},
                       "StringLike": {"kms:EncryptionContext:aws:s3:arn": [objects, bucket]}}},
    ]


def node_role_patterns(account: Account) -> list[str]:
    """ARN patterns of every cluster's scheduler and worker roles in the account."""
    return [account.arn("iam", f"role/{conventions.node_role_name_pattern(role)}", regional=False)
            for role in conventions.NODE_ROLES]


def bucket_policy_backstop(account: Account, bucket: str, shared_prefixes: Iterable[str]) -> list[dict[str, Any]]:
    """Deny statements: a cluster's node roles touch no object and list no prefix outside their scope.

    ``shared_prefixes`` are the fleet-bucket prefixes any cluster's ``data`` declares; a role's own
    policy decides which of them it reaches. The statements do not grow with the number of clusters.
    """
    own = f"{conventions.CLUSTER_DATA_PREFIX}{PRINCIPAL_CLUSTER}/"
    prefixes = sorted({own, conventions.ENV_OBJECT_PREFIX, *shared_prefixes})
    nodes = {"ArnLike": {"aws:PrincipalArn": node_role_patterns(account)}}
    return [
        {
            "Sid": "NodeRolesOnlyTheirClustersObjects",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "NotResource": [bucket, *(f"{bucket}/{prefix}*" for prefix in prefixes)],
            "Condition": nodes,
        },
        {
            "Sid": "NodeRolesListOnlyTheirClustersPrefixes",
            "Effect": "Deny",
            "Principal": "*",
            "Action": list(BUCKET_LIST_ACTIONS),
            "Resource": [bucket],
            "Condition": {**nodes, "StringNotLike": {"s3:prefix": [f"{prefix}*" for prefix in prefixes]}},
        },
    ]


def shared_data_prefixes(entries: Sequence[DataEntry]) -> list[str]:
    """The fleet-bucket prefixes declared by data entries (of any cluster)."""
    return sorted({entry.prefix for entry in entries if entry.bucket is None})
