"""check_resources: the whole pack over plain records, in either key style, as a mocked program records them."""

import base64
import re

from policy.harness import urn_of

from daskfleet_policies import POLICIES, Violation, camel_case_keys, check_resources

KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def good_stack(style: str) -> list[dict]:
    """A bucket with its guards and a launch template, keyed as Pulumi's mocks record them (camelCase) or as Python args."""
    camel = [
        {"type": "aws:s3/bucket:Bucket", "name": "data", "id": "data_id", "props": {"forceDestroy": False}},
        {
            "type": "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            "name": "data-encryption",
            "props": {
                "bucket": "data_id",
                "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": KEY_ARN}}],
            },
        },
        {
            "type": "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            "name": "data-public-access",
            "props": {"bucket": "data_id", "blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True,
                      "restrictPublicBuckets": True},
        },
        {
            "type": "aws:ec2/launchTemplate:LaunchTemplate",
            "name": "worker",
            "props": {
                "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1.0},
                "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true"}}],
                "userData": base64.b64encode(b"#!/bin/sh\nexec daskfleet agent\n").decode(),
            },
        },
        {
            "type": "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
            "name": "scheduler-from-clients",
            "props": {"ipProtocol": "tcp", "fromPort": 8786.0, "toPort": 8786.0, "cidrIpv4": "10.20.0.0/16"},
        },
    ]
    if style == "camel":
        return camel
    return [{**record, "props": _snake(record["props"])} for record in camel]


def _snake(value):
    if isinstance(value, dict):
        return {re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m[1].lower(), k): _snake(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snake(v) for v in value]
    return value


def test_a_compliant_stack_has_no_violations_in_either_key_style():
    assert check_resources(good_stack("camel")) == []
    assert check_resources(good_stack("snake")) == []


def test_snake_case_is_converted_at_every_depth_and_other_keys_are_kept():
    assert camel_case_keys({"metadata_options": {"http_put_response_hop_limit": 1}, "tags": {"daskfleet:cluster": "a"}}) == {
        "metadataOptions": {"httpPutResponseHopLimit": 1},
        "tags": {"daskfleet:cluster": "a"},
    }


def test_violations_name_the_policy_and_the_resource():
    records = good_stack("snake")
    records[4]["props"]["cidr_ipv4"] = "0.0.0.0/0"
    [violation] = check_resources(records)
    rule_urn = urn_of("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "scheduler-from-clients")
    assert violation.policy == "no-world-open-ingress"
    assert violation.urn == rule_urn.replace("dev::daskfleet", "stack::project")
    assert str(violation).startswith(f"[no-world-open-ingress] {violation.urn}: rule allows tcp 8786-8786 from 0.0.0.0/0")


def test_stack_policies_pair_a_bucket_with_its_guards_by_the_recorded_id():
    records = good_stack("camel")
    records[0] = {**records[0], "id": "some-other-id"}
    found = {(violation.policy, violation.urn) for violation in check_resources(records)}
    bucket_urn = "urn:pulumi:stack::project::aws:s3/bucket:Bucket::data"
    assert found == {("s3-bucket-encrypted-with-kms", bucket_urn), ("s3-bucket-public-access-blocked", bucket_urn)}


def test_recorded_property_dependencies_pair_guards_whose_bucket_was_not_known():
    records = good_stack("camel")
    del records[0]["id"]
    for guard in records[1:3]:
        del guard["props"]["bucket"]
        guard["property_dependencies"] = {"bucket": ["data"]}
    assert check_resources(records) == []


def test_records_may_be_objects_like_pulumis_mock_resource_args():
    class MockResourceArgs:  # the attributes pulumi.runtime.MockResourceArgs has
        def __init__(self, typ, name, inputs):
            self.typ, self.name, self.inputs = typ, name, inputs

    [violation] = check_resources([MockResourceArgs("aws:ebs/volume:Volume", "scratch", {"size": 10.0})])
    assert violation.policy == "ebs-encrypted"


def test_a_subset_of_policies_can_be_run():
    records = [{"type": "aws:ebs/volume:Volume", "name": "scratch", "props": {}}]
    assert check_resources(records, [p for p in POLICIES if p.name != "ebs-encrypted"]) == []
    assert isinstance(check_resources(records)[0], Violation)


def test_stack_policies_judge_outputs_and_resource_policies_inputs_as_the_engine_does():
    records = good_stack("camel")
    del records[0]["id"]
    records[0]["outputs"] = {"bucket": "data-6f1c2e9", "forceDestroy": False}  # named by the provider
    for guard in records[1:3]:
        guard["props"]["bucket"] = "data-6f1c2e9"
    template = records[3]
    template["outputs"] = template["props"]
    template["props"] = {**template["props"], "metadataOptions": {"httpTokens": "optional", "httpPutResponseHopLimit": 1}}
    assert [violation.policy for violation in check_resources(records)] == ["imdsv2-required"]
