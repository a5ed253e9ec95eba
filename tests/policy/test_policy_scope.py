"""A cluster's policies reach the fleet bucket and key only within its own prefix (cluster-data-access-in-scope)."""

import json

import pytest
from policy.harness import UNKNOWN, stack_resource, stack_violations

from daskfleet_policies.scope import key_in_scope

POLICY = "cluster-data-access-in-scope"
BUCKET_NAME = "daskfleet-fleet-0a1b2c3"
BUCKET = f"arn:aws:s3:::{BUCKET_NAME}"
KEY = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
VIA_S3 = {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}


def document(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def objects(*resources, actions=("s3:GetObject", "s3:PutObject")):
    return {"Sid": "Objects", "Effect": "Allow", "Action": list(actions), "Resource": list(resources)}


def listing(*prefixes):
    statement = {"Sid": "List", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [BUCKET]}
    if prefixes:
        statement["Condition"] = {"StringLike": {"s3:prefix": list(prefixes)}}
    return statement


def key(contexts=None, secret=None, actions=("kms:Decrypt", "kms:GenerateDataKey")):
    statement = {"Sid": "Key", "Effect": "Allow", "Action": list(actions), "Resource": [KEY]}
    like = {}
    if contexts is not None:
        like["kms:EncryptionContext:aws:s3:arn"] = contexts
    if secret is not None:
        like["kms:EncryptionContext:SecretARN"] = secret
    statement["Condition"] = {"StringEquals": VIA_S3, **({"StringLike": like} if like else {})}
    return statement


def role_policy(cluster, *statements, role="worker"):
    return stack_resource("aws:iam/rolePolicy:RolePolicy", f"{cluster}-{role}",
                          {"role": f"daskfleet-{cluster}-{role}", "policy": document(*statements)})


def member_policy(cluster, *statements):
    return stack_resource("aws:iam/policy:Policy", f"{cluster}-member",
                          {"name": f"daskfleet-{cluster}-member", "policy": document(*statements)})


BUCKET_RESOURCE = stack_resource("aws:s3/bucket:Bucket", "fleet", {"bucket": BUCKET_NAME})
IN_SCOPE = (
    objects(f"{BUCKET}/clusters/alice/*", "arn:aws:s3:::lab-raw-data/*"),
    objects(f"{BUCKET}/envs/*", f"{BUCKET}/shared/reference/*", actions=("s3:GetObject",)),
    listing("clusters/alice/*", "envs/*", "shared/reference/*"),
    key([f"{BUCKET}/clusters/alice/*", f"{BUCKET}/envs/*", BUCKET]),
    key(secret="arn:aws:secretsmanager:eu-west-1:111122223333:secret:daskfleet/alice/tls/worker-??????",
        actions=("kms:Decrypt",)),
)


@pytest.mark.parametrize(("pattern", "cluster", "inside"), [
    ("clusters/alice/*", "alice", True),
    ("clusters/alice/sub/file.csv", "alice", True),
    ("shared/reference/*", "alice", True),
    ("envs/*", "alice", True),
    ("*", "alice", False),
    ("clusters/*", "alice", False),
    ("clusters/al*", "alice", False),
    ("clu*", "alice", False),
    ("clusters/bob/*", "alice", False),
    ("clusters/alice-team/*", "alice", False),
    ("clusters/bob/x.csv", "alice", False),
    ("c?usters/alice/*", "alice", False),
])
def test_a_key_pattern_is_in_scope_when_it_can_reach_no_other_clusters_prefix(pattern, cluster, inside):
    assert key_in_scope(pattern, cluster) is inside


@pytest.mark.parametrize("holder", [role_policy, member_policy])
def test_a_clusters_own_scope_passes(holder):
    assert stack_violations(POLICY, [BUCKET_RESOURCE, holder("alice", *IN_SCOPE)]) == []


@pytest.mark.parametrize(("statement", "shown"), [
    (objects(f"{BUCKET}/*"), f"'{BUCKET}/*', outside clusters/alice/"),
    (objects(f"{BUCKET}/clusters/*"), "outside clusters/alice/"),
    (objects(f"{BUCKET}/clusters/bob/*"), "outside clusters/alice/"),
    (objects("arn:aws:s3:::daskfleet-*/clusters/bob/*"), "outside clusters/alice/"),
    (objects("*"), "'*' (every bucket, every cluster's prefix)"),
    ({"Sid": "Objects", "Effect": "Allow", "Action": "s3:*", "NotResource": [f"{BUCKET}/clusters/alice/*"]},
     "on every resource but those under NotResource"),
    (listing(), "lists the fleet bucket without an s3:prefix condition"),
    (listing("clusters/alice/*", "clusters/*"), "lists the fleet bucket under"),
    (key(), "without an encryption context"),
    (key([f"{BUCKET}/*"]), "in encryption contexts"),
    (key([f"{BUCKET}/clusters/bob/*"]), "in encryption contexts"),
    (key(secret="arn:aws:secretsmanager:eu-west-1:111122223333:secret:daskfleet/bob/tls/worker-??????"),
     "in encryption contexts"),
])
def test_a_hand_widened_grant_is_refused_naming_the_cluster_and_the_resource(statement, shown):
    holder = role_policy("alice", *IN_SCOPE, statement)
    ((urn, message),) = stack_violations(POLICY, [BUCKET_RESOURCE, holder])
    assert urn == holder.urn
    assert message.startswith("cluster alice: ") and shown in message


def test_other_policies_and_unknown_documents_are_not_judged():
    others = [
        stack_resource("aws:iam/rolePolicy:RolePolicy", "ci", {"role": "ci-deployer", "policy": document(objects("*"))}),
        stack_resource("aws:iam/policy:Policy", "p", {"name": "data-lake-admin", "policy": document(objects("*"))}),
        stack_resource("aws:iam/rolePolicy:RolePolicy", "pending", {"role": "daskfleet-alice-worker", "policy": UNKNOWN}),
    ]
    assert stack_violations(POLICY, [BUCKET_RESOURCE, *others]) == []


def test_a_bucket_named_only_by_the_stack_counts_as_the_fleets():
    """A fleet bucket not named daskfleet-... is still known by the stack's own bucket resource."""
    bucket = stack_resource("aws:s3/bucket:Bucket", "data", {"bucket": "acme-analytics-data"})
    holder = role_policy("alice", objects("arn:aws:s3:::acme-analytics-data/clusters/bob/*"))
    assert len(stack_violations(POLICY, [bucket, holder])) == 1
    assert stack_violations(POLICY, [holder]) == []  # unknown to the stack: another bucket's data
