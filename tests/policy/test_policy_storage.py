"""S3 buckets must be paired with an SSE-KMS configuration and a full public-access block; secrets use a customer key."""

import pytest
from policy.harness import UNKNOWN, depends, resource_violations, stack_resource, stack_violations, urn_of

BUCKET = "aws:s3/bucket:Bucket"
ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
SECRET = "aws:secretsmanager/secret:Secret"
KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

ENCRYPTED = "s3-bucket-encrypted-with-kms"
BLOCKED = "s3-bucket-public-access-blocked"


def bucket(name="data", bucket_name="daskfleet-team-a-data-1a2b3c", **outputs):
    return stack_resource(BUCKET, name, {"bucket": bucket_name, **outputs})


def encryption(bucket_ref, name="data-encryption", algorithm="aws:kms", key=KEY_ARN):
    default = {"sseAlgorithm": algorithm}
    if key is not None:
        default["kmsMasterKeyId"] = key
    rules = [{"applyServerSideEncryptionByDefault": default, "bucketKeyEnabled": True}]
    return stack_resource(ENCRYPTION, name, {"bucket": bucket_ref, "rules": rules})


def public_access_block(bucket_ref, name="data-public-access", **overrides):
    flags = dict.fromkeys(("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"), True)
    return stack_resource(PUBLIC_ACCESS_BLOCK, name, {"bucket": bucket_ref, **flags, **overrides})


def both(resources):
    return stack_violations(ENCRYPTED, resources) + stack_violations(BLOCKED, resources)


def test_a_bucket_guarded_by_name_after_deployment_passes():
    data = bucket(id="daskfleet-team-a-data-1a2b3c")
    assert both([data, encryption("daskfleet-team-a-data-1a2b3c"), public_access_block("daskfleet-team-a-data-1a2b3c")]) == []


def test_a_new_bucket_guarded_at_preview_passes_through_the_recorded_dependency():
    """At preview a new bucket's id is unknown, so the guards' bucket reads as unknown."""
    data = stack_resource(BUCKET, "data", {"bucket": "daskfleet-team-a-data-1a2b3c", "id": UNKNOWN})
    guards = [
        depends(encryption(UNKNOWN, key=UNKNOWN), "bucket", data),
        depends(public_access_block(UNKNOWN), "bucket", data),
    ]
    assert both([data, *guards]) == []


def test_an_unknown_bucket_reference_without_a_dependency_proves_nothing():
    data = bucket()
    violations = both([data, encryption(UNKNOWN), public_access_block(UNKNOWN)])
    assert [urn for urn, _ in violations] == [urn_of(BUCKET, "data")] * 2


def test_a_bucket_without_an_encryption_configuration_fails_at_the_bucket():
    data = bucket()
    [(urn, message)] = stack_violations(ENCRYPTED, [data, public_access_block(data.props["bucket"])])
    assert urn == urn_of(BUCKET, "data")
    assert "bucket data has no BucketServerSideEncryptionConfiguration" in message


@pytest.mark.parametrize(
    ("algorithm", "key", "reason"),
    [
        ("AES256", None, "sseAlgorithm is 'AES256', not aws:kms"),
        ("aws:kms", None, "kmsMasterKeyId is not set"),
        ("aws:kms", "", "kmsMasterKeyId is not set"),
    ],
)
def test_encryption_weaker_than_kms_with_the_cluster_key_fails(algorithm, key, reason):
    data = bucket()
    [(urn, message)] = stack_violations(ENCRYPTED, [data, encryption(data.props["bucket"], algorithm=algorithm, key=key)])
    assert urn == urn_of(BUCKET, "data")
    assert reason in message and "data-encryption" in message


def test_dsse_kms_counts_as_kms():
    data = bucket()
    assert stack_violations(ENCRYPTED, [data, encryption(data.props["bucket"], algorithm="aws:kms:dsse")]) == []


def test_a_guard_for_another_bucket_does_not_cover_this_one_whatever_its_name():
    data, logs = bucket("data", "team-a-data"), bucket("logs", "team-a-logs")
    resources = [data, logs, encryption("team-a-logs", name="data-encryption"), public_access_block("team-a-logs")]
    assert [urn for urn, _ in both(resources)] == [urn_of(BUCKET, "data")] * 2


def test_the_deprecated_bucket_v2_is_held_to_the_same_rules():
    legacy = stack_resource("aws:s3/bucketV2:BucketV2", "legacy", {"bucket": "legacy"})
    assert len(both([legacy])) == 2


@pytest.mark.parametrize("flag", ["blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"])
def test_a_public_access_block_with_any_block_off_fails(flag):
    data = bucket()
    [(urn, message)] = stack_violations(BLOCKED, [data, public_access_block(data.props["bucket"], **{flag: False})])
    assert urn == urn_of(BUCKET, "data")
    assert f"{flag} not true" in message


def test_a_bucket_without_a_public_access_block_fails():
    data = bucket()
    [(_, message)] = stack_violations(BLOCKED, [data, encryption(data.props["bucket"])])
    assert "has no BucketPublicAccessBlock" in message


def test_one_good_guard_is_enough_even_beside_a_weak_one():
    data = bucket()
    name = data.props["bucket"]
    resources = [data, encryption(name, name="weak", algorithm="AES256"), encryption(name, name="strong")]
    assert stack_violations(ENCRYPTED, resources) == []


@pytest.mark.parametrize(("props", "fails"), [({"kmsKeyId": KEY_ARN}, False), ({"kmsKeyId": UNKNOWN}, False), ({}, True)])
def test_secrets_are_encrypted_with_a_customer_key(props, fails):
    messages = resource_violations("secrets-encrypted-with-customer-key", SECRET, {"name": "daskfleet/a/tls/worker", **props})
    assert bool(messages) is fails
    if fails:
        assert "kmsKeyId is not set" in messages[0]


PERSON_KEYS = "no-person-private-key-in-the-stack"
CERT_REQUEST = "tls:index/certRequest:CertRequest"


@pytest.mark.parametrize(("uri", "fails"), [
    ("spiffe://analytics/role/client", True), ("spiffe://analytics/role/admin", True),
    ("spiffe://analytics/role/worker", False), ("spiffe://analytics/role/scheduler", False),
])
def test_the_stack_makes_no_key_for_a_person(uri, fails):
    messages = resource_violations(PERSON_KEYS, CERT_REQUEST, {"uris": [uri], "privateKeyPem": "x"})
    assert bool(messages) == fails
    assert not fails or "certificate vendor" in messages[0]


NODE_KEYS = "no-node-private-key-in-the-stack"


@pytest.mark.parametrize(("uri", "fails"), [
    ("spiffe://analytics/role/scheduler", True), ("spiffe://analytics/role/worker", True),
    ("spiffe://analytics/role/client", False), ("spiffe://analytics/role/metrics", False),
])
def test_the_stack_makes_no_key_for_a_node(uri, fails):
    messages = resource_violations(NODE_KEYS, CERT_REQUEST, {"uris": [uri], "privateKeyPem": "x"})
    assert bool(messages) == fails
    assert not fails or "nodes make their keys at boot" in messages[0]
