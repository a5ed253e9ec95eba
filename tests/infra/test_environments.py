"""Published environments under the program's mocks: nodes read them; only publishers write them or move the pointer."""

from __future__ import annotations

import json

import pytest
import yaml
from infra.helpers import allows, statements
from infra.mocks import DEPLOYER_ROLE
from infra.program import evaluate_program, example_config

from daskfleet import conventions
from daskfleet.environments.lockfile import parse_lock

ACCOUNT = "123456789012"
PUBLISHER = f"arn:aws:iam::{ACCOUNT}:role/env-publisher"
WRITES = ("s3:PutObject", "s3:DeleteObject", "ssm:PutParameter", "ssm:DeleteParameter")


def bucket_statements(record) -> dict[str, dict]:
    policy = record.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"]
    return {statement["Sid"]: statement for statement in statements(policy)}


def key_statements(record) -> dict[str, dict]:
    return {statement["Sid"]: statement for statement in statements(record.one("aws:kms/key:Key").inputs["policy"])}


def envs_objects(record) -> str:
    return f"{record.one('aws:s3/bucket:Bucket').outputs['arn']}/{conventions.ENV_OBJECT_PREFIX}*"


def users(record) -> list[str]:
    return sorted(entry.split("=", 1)[1] for entry in record.config["users"])


def test_nodes_read_the_package_objects(example):
    objects = f"{example.one('aws:s3/bucket:Bucket').outputs['arn']}/{conventions.package_object_key('sha256:' + 'a' * 64)}"
    for role in conventions.NODE_ROLES:
        policy = example.one("aws:iam/rolePolicy:RolePolicy", f"identity-{role}").inputs["policy"]
        assert allows(policy, "s3:GetObject", objects), role
        pointer = f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter{conventions.published_env_parameter_name('analytics')}"
        assert allows(policy, "ssm:GetParameter", pointer) and not allows(policy, "ssm:PutParameter", pointer)


def test_only_the_publishers_and_the_deployer_write_under_envs(example):
    deny = bucket_statements(example)["OnlyPublishersWriteEnvironments"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Resource"] == [envs_objects(example)]
    assert set(deny["Action"]) == {"s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"}
    writers = deny["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    assert sorted(writers) == sorted({*users(example), f"arn:aws:iam::{ACCOUNT}:role/{DEPLOYER_ROLE}"})
    node_roles = [role.outputs["arn"] for role in example.of_type("aws:iam/role:Role") if role.name.startswith("identity-")]
    assert node_roles and not set(node_roles) & set(writers)  # the nodes' own bucket grant stops short of envs/
    # Publishers (by default the configured users) write through their publish policy, read through the read one.
    publish = example.one("aws:iam/policy:Policy", "environments-publish").inputs["policy"]
    read = example.one("aws:iam/policy:Policy", "environments-read").inputs["policy"]
    package = envs_objects(example).removesuffix("*") + "packages/0a1b"
    assert allows(publish, "s3:PutObject", package) and not allows(read, "s3:PutObject", package)
    assert allows(read, "s3:GetObject", package)
    assert not allows(publish, "s3:PutObject", envs_objects(example).removesuffix("envs/*") + "clusters/analytics/x")
    attached = {a.inputs.get("role") or a.inputs.get("user") for a in
                [*example.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment"),
                 *example.of_type("aws:iam/userPolicyAttachment:UserPolicyAttachment")]
                if a.name.startswith("environments-publish-")}
    assert attached == {arn.rsplit("/", 1)[1] for arn in users(example)}
    assert not {"PublishersWriteEnvironments", "UsersReadEnvironments"} & set(bucket_statements(example))


@pytest.fixture(scope="module")
def one_publisher():
    """The example stack with one listed publisher."""
    return evaluate_program({**example_config(), "environmentPublishers": [PUBLISHER]})


def publish_attachments(record) -> set[str]:
    publish = record.one("aws:iam/policy:Policy", "environments-publish")
    return {a.name for a in record.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
            if a.inputs["policyArn"] == publish.outputs["arn"]}


def test_listed_publishers_replace_the_default_and_alone_move_the_pointer(one_publisher):
    record = one_publisher
    assert PUBLISHER in bucket_statements(record)["OnlyPublishersWriteEnvironments"]["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
    publish = record.one("aws:iam/policy:Policy", "environments-publish")
    (encrypt,) = [s for s in statements(publish.inputs["policy"]) if s["Sid"] == "PublishFleetKeyForEnvironmentsThroughS3"]
    assert encrypt["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert encrypt["Condition"]["StringLike"]["kms:EncryptionContext:aws:s3:arn"][0] == envs_objects(record)
    pointer = f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter{conventions.published_env_parameter_name('analytics')}"
    assert allows(publish.inputs["policy"], "ssm:PutParameter", pointer)
    assert allows(publish.inputs["policy"], "ssm:GetParameterHistory", pointer)
    attached = {a.inputs["role"] for a in record.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if a.inputs["policyArn"] == publish.outputs["arn"]}
    assert attached == {"env-publisher"}
    # Every other policy of the program: nobody else moves the pointer.
    others = [p.inputs["policy"] for p in record.of_type("aws:iam/policy:Policy") if p.name != "environments-publish"]
    others += [p.inputs["policy"] for p in record.of_type("aws:iam/rolePolicy:RolePolicy")]
    assert not any(allows(policy, "ssm:PutParameter", pointer) for policy in others)
    read = record.one("aws:iam/policy:Policy", "environments-read")
    assert allows(read.inputs["policy"], "ssm:GetParameterHistory", pointer)
    assert not allows(read.inputs["policy"], "ssm:PutParameter", pointer)


def test_a_new_publisher_renames_no_existing_attachment(one_publisher):
    """Attachments are named after their principal: a renamed one would be created, then the old one deleted,
    detaching the publish policy from a principal that keeps it."""
    before = publish_attachments(one_publisher)
    after = publish_attachments(evaluate_program(
        {**example_config(), "environmentPublishers": [f"arn:aws:iam::{ACCOUNT}:role/a-first-publisher", PUBLISHER]}))
    assert before == {"environments-publish-publisher-role-env-publisher"} and before < after


def test_nobody_may_write_resource_star(every_record):
    documents = [p.inputs["policy"] for p in every_record.of_type("aws:iam/policy:Policy")]
    documents += [p.inputs["policy"] for p in every_record.of_type("aws:iam/rolePolicy:RolePolicy")]
    for document in documents:
        for statement in statements(document):
            if statement["Effect"] != "Allow" or statement["Resource"] != "*" and "*" not in statement["Resource"]:
                continue
            actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            assert not [a for a in actions if a.startswith(WRITES) or a in ("s3:*", "ssm:*", "*")], statement


def test_specs_name_the_bucket_and_the_roll_fraction(example):
    for role in conventions.NODE_ROLES:
        spec = json.loads(example.parameters[conventions.spec_parameter_name("analytics", role)])
        assert spec["bucket"] == example.outputs["bucketName"]
    record = evaluate_program({**example_config(), "environmentRollFraction": 0.5})
    spec = json.loads(record.parameters[conventions.spec_parameter_name("analytics", "scheduler")])
    assert spec["rollout"] == {"max_fraction": 0.5}


def _lock_file(tmp_path, sha="a" * 64) -> tuple[str, str]:
    document = {
        "version": 1,
        "metadata": {"content_hash": {"linux-64": "c" * 64}, "channels": [{"url": "conda-forge", "used_env_vars": []}],
                     "platforms": ["linux-64"], "sources": ["environment.yml"]},
        "package": [{"name": "numpy", "version": "2.4.6", "manager": "conda", "platform": "linux-64", "dependencies": {},
                     "url": "https://conda.anaconda.org/conda-forge/linux-64/numpy-2.4.6-py311h_0.conda",
                     "hash": {"md5": "b" * 32, "sha256": sha}, "category": "main", "optional": False}],
    }
    path = tmp_path / "conda-lock.yml"
    path.write_text(yaml.safe_dump(document))
    return str(path), parse_lock(path.read_text(), path).fingerprint("linux-64")


def test_the_images_lock_goes_to_the_bucket_when_it_gives_the_stacks_fingerprint(tmp_path):
    lock, fingerprint = _lock_file(tmp_path)
    record = evaluate_program({**example_config(), "environmentFingerprint": fingerprint, "environmentLock": lock})
    stored = record.one("aws:s3/bucketObjectv2:BucketObjectv2")
    assert stored.inputs["key"] == conventions.image_lock_object_key(fingerprint)
    assert stored.inputs["serverSideEncryption"] == "aws:kms" and stored.inputs["kmsKeyId"] == record.one("aws:kms/key:Key").outputs["arn"]
    # One for the fleet, in the shared storage; a stack from before fleets had it under its environments component.
    assert stored.parent == record.one("daskfleet:aws:Storage").urn
    from infra.urns import alias_urns

    assert "urn:pulumi:test::daskfleet::daskfleet:aws:PublishedEnvironments$aws:s3/bucketObjectv2:BucketObjectv2::" \
           "environments-image-lock" in alias_urns(record)[stored.urn]


@pytest.mark.parametrize("problem", ["mismatch", "missing"])
def test_an_environment_lock_that_is_not_the_images_stops_the_program(tmp_path, problem):
    lock, fingerprint = _lock_file(tmp_path)
    if problem == "missing":
        lock = str(tmp_path / "nope.yml")
    from infra.evaluate import ProgramError

    with pytest.raises(ProgramError) as caught:
        evaluate_program({**example_config(), "environmentLock": lock})
    assert caught.value.kind == "StackConfigError" and caught.value.message.startswith(
        "daskfleet stack configuration: environmentLock: ")
    assert ("cannot read" in caught.value.message) if problem == "missing" else (
        f"gives {fingerprint} for linux-64, but environmentFingerprint is" in caught.value.message)
