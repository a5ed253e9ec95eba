"""The program's own resources, evaluated under Pulumi's mocks (infra.program), pass the whole policy pack.

``check_resources`` takes the recorded resources as they are: their inputs feed the resource
policies and their outputs the stack policies, as in ``pulumi preview --policy-pack``.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import pytest

from daskfleet_policies import check_resources
from infra.program import ProgramRecord, evaluate_program, example_config

#: The example stack, and one that turns on what the example leaves off.
CONFIGS = {
    "example": example_config(),
    "nat-ephemeral-ipv6": {
        **example_config(),
        "natGateway": True,
        "ephemeral": True,
        "expires": "2031-03-31",
        "clientCidrs": ["10.100.0.0/16", "2001:db8:1234::/48"],
        "extraReadBuckets": ["shared-reference-data"],
        "operatorPrincipalArns": ["arn:aws:iam::123456789012:role/platform-oncall"],
        "workerOnDemandBase": 2,
    },
}
#: What the pack judges; a record without them would pass for want of anything to check.
JUDGED_TYPES = {
    "aws:s3/bucket:Bucket",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:ec2/launchTemplate:LaunchTemplate",
    "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:secretsmanager/secret:Secret",
}


@pytest.fixture(scope="module")
def records(program_evaluations) -> dict[str, ProgramRecord]:
    """Each configuration evaluated once, concurrently (each evaluation is its own process)."""
    with ThreadPoolExecutor(max_workers=len(CONFIGS)) as pool:
        futures = {name: pool.submit(evaluate_program, copy.deepcopy(config), shared=program_evaluations)
                   for name, config in CONFIGS.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("config", CONFIGS)
def test_the_programs_resources_pass_every_policy(records, config):
    record = records[config]
    assert JUDGED_TYPES <= {resource.type for resource in record.resources}
    violations = check_resources(record.resources)
    assert violations == [], "\n".join(str(violation) for violation in violations)


def test_the_same_records_fail_once_a_launch_template_weakens_imds(records):
    """The check above can fail: one edited input of the recorded program is caught."""
    resources = copy.deepcopy(records["example"].resources)
    template = next(r for r in resources if r.type == "aws:ec2/launchTemplate:LaunchTemplate")
    template.inputs["metadataOptions"]["httpTokens"] = "optional"
    [violation] = check_resources(resources)
    assert (violation.policy, violation.urn) == ("imdsv2-required", template.urn)


def test_the_same_records_fail_once_the_bucket_loses_its_encryption(records):
    resources = [
        r for r in records["example"].resources
        if r.type != "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ]
    [violation] = check_resources(resources)
    bucket = next(r for r in resources if r.type == "aws:s3/bucket:Bucket")
    assert (violation.policy, violation.urn) == ("s3-bucket-encrypted-with-kms", bucket.urn)
