"""A stack from before fleets plans with no replacement: every resource it had is carried over, changed in place.

The snapshot (tests/infra/data/single_cluster_2fe8ba3.json) is the example stack as the program of
commit 2fe8ba3 declared it, made with ``python -m infra.urns`` (tests/infra/data/README.md). Each of
its resources must answer to a URN or alias of today's program (as the engine matches them), keep its
type, and change only inputs that AWS updates in place (``UPDATED_IN_PLACE``): a changed name, bucket,
role or any other input would replace the resource, or delete it and create another.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from infra.urns import carried_over, snapshot

SNAPSHOT = Path(__file__).parent / "data" / "single_cluster_2fe8ba3.json"
#: Inputs that may change on an existing stack, each updated in place by the provider (type -> inputs).
UPDATED_IN_PLACE = {
    # Policy documents: the fleet's scoping (data_access) and the KMS/S3 grants moved to identity policies.
    "aws:iam/rolePolicy:RolePolicy": {"policy"},
    "aws:iam/policy:Policy": {"policy"},
    "aws:s3/bucketPolicy:BucketPolicy": {"policy"},
    "aws:kms/key:Key": {"policy"},
    # Node specs gain the fleet key's ARN.
    "aws:ssm/parameter:Parameter": {"value"},
    # No S3 Bucket Key (object-scoped encryption context); each cluster's scratch prefix expires.
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": {"rules"},
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": {"rules"},
    # A person's certificate secret names them in a tag (daskfleet clusters finds it by it).
    "aws:secretsmanager/secret:Secret": {"tags"},
}


def test_every_resource_of_a_single_cluster_stack_is_carried_over_and_changed_only_in_place(example):
    before = json.loads(SNAPSHOT.read_text())
    answers = carried_over(example)
    now = snapshot(example)
    gone, retyped, replaced = [], [], []
    for urn, old in before.items():
        resource = answers.get(urn)
        if resource is None:
            gone.append(urn)
            continue
        new = now[resource.urn]
        if new["type"] != old["type"]:
            retyped.append(f"{urn}: {old['type']} -> {new['type']}")
        changed = {key for key in set(old["inputs"]) | set(new["inputs"]) if old["inputs"].get(key) != new["inputs"].get(key)}
        unexpected = changed - UPDATED_IN_PLACE.get(old["type"], set())
        if unexpected:
            replaced.append(f"{urn}: {', '.join(sorted(unexpected))}")
    assert gone == [] and retyped == [] and replaced == []
    # No two old resources fold into one new one.
    assert [urn for urn, n in Counter(answers[urn].urn for urn in before).items() if n > 1] == []


def test_the_kept_resources_moved_under_the_clusters_component_and_only_member_access_is_new(example):
    before = json.loads(SNAPSHOT.read_text())
    answers = carried_over(example)
    kept = {answers[urn].urn for urn in before}
    new = sorted(resource.type for resource in example.resources if resource.urn not in kept)
    assert new == sorted([
        "daskfleet:aws:Cluster", "daskfleet:aws:Membership", "aws:iam/policy:Policy",
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    ])
    moved = [resource for resource in example.resources if resource.urn in kept and resource.urn not in before]
    assert moved and all("daskfleet:aws:Cluster$" in resource.urn for resource in moved)


def test_the_check_can_fail_a_renamed_resource_is_seen(example):
    """The carry-over check sees a rename: an old URN nothing answers to is reported gone."""
    before = json.loads(SNAPSHOT.read_text())
    answers = carried_over(example)
    renamed = next(urn for urn in before if urn.endswith("::identity-scheduler") and "Role::" in urn)
    assert renamed in answers
    assert renamed.replace("::identity-scheduler", "::identity-scheduler-v2") not in answers
