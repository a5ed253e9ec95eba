"""Storage: the cluster key and a private, encrypted, versioned, TLS-only bucket."""

from __future__ import annotations

import json

from infra.helpers import allows, statements

from daskfleet_infra.storage import SCRATCH_PREFIX


def bucket_part(record, type_):
    (resource,) = record.of_type(type_)
    assert resource.inputs["bucket"] == record.one("aws:s3/bucket:Bucket").id
    return resource.inputs


def test_the_cluster_key_rotates(example):
    key = example.one("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    assert example.one("aws:kms/alias:Alias").inputs == {"name": "alias/daskfleet/analytics", "targetKeyId": key.outputs["keyId"]}


def test_the_bucket_is_encrypted_with_the_cluster_key_and_no_bucket_key(example):
    """No S3 Bucket Key: the key's encryption context then names each object, so grants can name prefixes."""
    (rule,) = bucket_part(example, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "aws:kms", "kmsMasterKeyId": example.one("aws:kms/key:Key").outputs["arn"],
    }
    assert rule["bucketKeyEnabled"] is False


def test_the_bucket_is_versioned_private_and_owner_enforced(example):
    assert bucket_part(example, "aws:s3/bucketVersioning:BucketVersioning")["versioningConfiguration"]["status"] == "Enabled"
    blocks = bucket_part(example, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(blocks[name] is True for name in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    ownership = bucket_part(example, "aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    bucket = example.one("aws:s3/bucket:Bucket").inputs
    assert not any(key in bucket for key in ("acl", "grants", "policy", "serverSideEncryptionConfiguration", "lifecycleRules"))


def test_the_bucket_refuses_requests_without_tls(example):
    bucket_arn = example.one("aws:s3/bucket:Bucket").outputs["arn"]
    (statement,) = [s for s in statements(bucket_part(example, "aws:s3/bucketPolicy:BucketPolicy")["policy"])
                    if s["Sid"] == "DenyInsecureTransport"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
    assert statement["Resource"] == [bucket_arn, f"{bucket_arn}/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_scratch_objects_expire_and_so_do_their_old_versions(example):
    rules = {rule["id"]: rule for rule in bucket_part(example, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")["rules"]}
    scratch = rules["expire-scratch"]
    assert scratch["status"] == "Enabled" and scratch["filter"] == {"prefix": SCRATCH_PREFIX}
    assert scratch["expiration"] == {"days": 7} and scratch["noncurrentVersionExpiration"] == {"noncurrentDays": 7}
    assert rules["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}


def test_only_ephemeral_stacks_destroy_a_bucket_with_objects_in_it(example, adopted):
    assert example.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is False
    assert adopted.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is True


def test_users_may_decrypt_with_the_key_only_through_secrets_manager(example):
    policy = json.loads(example.one("aws:kms/key:Key").inputs["policy"])
    users = [statement for statement in policy["Statement"] if statement["Sid"] == "UsersDecryptTheirClientSecret"]
    (grant,) = users
    assert grant["Principal"]["AWS"] == ["arn:aws:iam::123456789012:role/alice", "arn:aws:iam::123456789012:user/bob"]
    assert grant["Action"] == "kms:Decrypt"
    assert grant["Condition"] == {"StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}}
    assert not allows({"Statement": users}, "kms:Encrypt", "*")
    (admin,) = [s for s in policy["Statement"] if s["Sid"] == "AccountIamPoliciesGovernTheKey"]
    assert admin["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
