"""AWS's size limits on the policies a fleet writes, checked before anything is declared.

Which policies grow with what: the bucket policy with the publishers (never with the clusters:
its node-role statements serve them all), the key policy with the users, a node role's and a
member policy with the cluster's data entries. A stack over a limit stops here with one error
naming the policy, its size, the limit and what to change, instead of failing half-way through
``pulumi up``. Sizes are measured on documents rendered with the longest names the stack's
resources can have (the bucket's random suffix, a key id), without whitespace, as IAM counts.
"""

from __future__ import annotations

import json
from typing import Any

from daskfleet import conventions

from .config import StackConfig, StackConfigError
from .data_access import bucket_arn, shared_data_prefixes
from .environments import publish_policy
from .identity import node_policy
from .lookups import Account
from .membership import member_policy
from .storage import bucket_policy, key_policy

#: IAM: a role's inline policies together; a managed policy (characters, whitespace not counted).
ROLE_INLINE_POLICY_LIMIT = 10_240
MANAGED_POLICY_LIMIT = 6_144
#: S3 bucket policy, KMS key policy (bytes).
BUCKET_POLICY_LIMIT = 20 * 1024
KEY_POLICY_LIMIT = 32 * 1024
#: Pulumi appends "-" and 7 random characters to the bucket's resource name; a key id is a UUID.
_BUCKET_SUFFIX = "-0000000"
_KEY_ID = "00000000-0000-0000-0000-000000000000"


def policy_size(document: dict[str, Any]) -> int:
    """Characters of a policy as AWS counts them (no whitespace between tokens)."""
    return len(json.dumps(document, separators=(",", ":")))


def check_policy_sizes(config: StackConfig, account: Account) -> None:
    """Raise one StackConfigError naming every policy of the stack that would exceed AWS's limit."""
    bucket = bucket_arn(account, conventions.bucket_name_prefix(config.cluster).removesuffix("-") + _BUCKET_SUFFIX)
    key = account.arn("kms", f"key/{_KEY_ID}")
    fleet = config.fleet
    problems = []
    people = sorted({user.principal_arn for cluster in fleet for user in cluster.people})
    publishers = sorted({arn for cluster in fleet for arn in cluster.settings.publisher_arns})
    shared = shared_data_prefixes([entry for cluster in fleet for entry in cluster.data])
    size = policy_size(bucket_policy(bucket, account=account, publishers=publishers, deployer=account.deployer_arn,
                                     shared_prefixes=shared))
    if size > BUCKET_POLICY_LIMIT:
        problems.append(f"environmentPublishers: the bucket policy would be {size} bytes, more than S3's "
                        f"{BUCKET_POLICY_LIMIT}, because it names each of the {len(publishers)} publishers (by default "
                        "every cluster's people); name fewer publishers in environmentPublishers")
    size = policy_size(key_policy(account, people))
    if size > KEY_POLICY_LIMIT:
        problems.append(f"users: the key policy would be {size} bytes, more than KMS's {KEY_POLICY_LIMIT}, because "
                        f"it names each of the {len(people)} users' principals; split the fleet into two stacks")
    for cluster in fleet:
        log_group = account.arn("logs", f"log-group:{conventions.log_group_name(cluster.name)}")
        where = f"clusters.{cluster.name}" if cluster.name in config.clusters else "data"
        for role in conventions.NODE_ROLES:
            size = policy_size(node_policy(
                cluster=cluster.name, role=role, account=account, bucket_arn=bucket,
                extra_read_buckets=config.extra_read_buckets, key_arn=key, log_group_arn=log_group, data=cluster.data,
                vendor_function=conventions.vendor_function_name(config.cluster),
            ))
            if size > ROLE_INLINE_POLICY_LIMIT:
                problems.append(f"{where}: the {role} role of cluster {cluster.name} would have a {size}-character "
                                f"policy, more than IAM's {ROLE_INLINE_POLICY_LIMIT}; declare fewer data entries "
                                "(or extraReadBuckets)")
        documents = {
            "member": member_policy(cluster.name, account, bucket_arn=bucket, key_arn=key, log_group_arn=log_group,
                                    data=cluster.data),
            "publish": publish_policy(cluster.name, account, bucket, key),
        }
        for kind, document in documents.items():
            size = policy_size(document)
            if size > MANAGED_POLICY_LIMIT:
                problems.append(f"{where}: the {kind} policy of cluster {cluster.name} would be {size} characters, "
                                f"more than IAM's {MANAGED_POLICY_LIMIT} for a managed policy; declare fewer data entries")
    if problems:
        raise StackConfigError(*problems)
