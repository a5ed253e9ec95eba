"""A stack from before fleets plans with no replacement: every resource it had is carried over, changed in place.

The snapshot (tests/infra/data/single_cluster_2fe8ba3.json) is the example stack as the program of
commit 2fe8ba3 declared it, made with ``python -m infra.urns`` (tests/infra/data/README.md). Each of
its resources must answer to a URN or alias of today's program (as the engine matches them), keep its
type, and change only inputs that AWS updates in place (``UPDATED_IN_PLACE``): a changed name, bucket,
role or any other input would replace the resource, or delete it and create another.
"""

from __future__ import annotations

import json
import re
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
    # A person's certificate secret names them in a tag (daskfleet clusters finds it by it), and describes a
    # membership record, holding no key since the certificate vendor (issue 16).
    "aws:secretsmanager/secret:Secret": {"tags", "description"},
    "aws:secretsmanager/secretVersion:SecretVersion": {"secretString"},
}
#: Removed on purpose (issue 16): every private key, CSR and certificate the stack made but the CA's, and the node
#: certificates' secrets (each with its version and policy): the vendor now signs short-lived certificates for keys
#: made where they are used (people's machines, nodes at boot); no node reads Secrets Manager, so its endpoint goes
#: (a Lambda endpoint, for the vendor, is new).
REMOVED = re.compile(r"(\$tls:index/(privateKey:PrivateKey|certRequest:CertRequest|locallySignedCert:LocallySignedCert)"
                     r"::pki-(client-[a-z]+|scheduler|worker)"
                     r"|\$aws:secretsmanager/(secret:Secret|secretVersion:SecretVersion|secretPolicy:SecretPolicy)"
                     r"::pki-(scheduler|worker)"
                     r"|\$aws:ec2/vpcEndpoint:VpcEndpoint::network-secretsmanager)$")


def test_every_resource_of_a_single_cluster_stack_is_carried_over_and_changed_only_in_place(example):
    before = json.loads(SNAPSHOT.read_text())
    answers = carried_over(example)
    now = snapshot(example)
    gone, retyped, replaced = [], [], []
    for urn, old in before.items():
        resource = answers.get(urn)
        if resource is None:
            if not REMOVED.search(urn):
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
    assert [urn for urn, n in Counter(answers[urn].urn for urn in before if urn in answers).items() if n > 1] == []
    # alice's, bob's, the scheduler's and the worker's key, request and certificate; the nodes' secrets; the endpoint
    assert sum(1 for urn in before if REMOVED.search(urn)) == 4 * 3 + 2 * 3 + 1


def test_the_kept_resources_moved_under_the_clusters_component_and_only_member_access_is_new(example):
    before = json.loads(SNAPSHOT.read_text())
    answers = carried_over(example)
    kept = {answers[urn].urn for urn in before if not REMOVED.search(urn)}
    new = sorted(resource.type for resource in example.resources if resource.urn not in kept)
    assert new == sorted([
        "daskfleet:aws:Cluster", "daskfleet:aws:Membership", "aws:iam/policy:Policy",
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "aws:iam/userPolicyAttachment:UserPolicyAttachment",
        # The certificate vendor (issue 16): its function and role, the CA secret only it reads, whom it signs for.
        "daskfleet:aws:CertificateVendor", "aws:cloudwatch/logGroup:LogGroup", "aws:iam/role:Role",
        "aws:iam/rolePolicy:RolePolicy", "aws:lambda/function:Function",
        "aws:secretsmanager/secret:Secret", "aws:secretsmanager/secretVersion:SecretVersion",
        "aws:secretsmanager/secretPolicy:SecretPolicy", "aws:ssm/parameter:Parameter",
        # Revocation (issue 16): the cluster's record of its users, which denies those removed from the stack.
        "daskfleet:aws:Revocation", "pulumi-python:dynamic:Resource",
        # Nodes reach the vendor through the VPC (issue 16).
        "aws:ec2/vpcEndpoint:VpcEndpoint",
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
