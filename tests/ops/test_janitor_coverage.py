"""The janitor covers every AWS resource type the Pulumi program creates, and the tests seed each of them.

A resource type the program starts declaring must be given a janitor kind here (removed by
its own remover) or the kind that takes it along; otherwise a failed destroy could leak it
and nothing would say so. tests/ops/seed.py creates one of each kind in REMOVED_AS for the
moto tests (lifecycle hooks inside their group).
"""

from __future__ import annotations

import pytest
from infra.program import evaluate_program
from infra.scenarios import SCENARIOS

from daskfleet.ops.leaks import DELETION_ORDER
from daskfleet.ops.removal import REMOVERS

#: Program resource type -> the janitor kind that removes it.
REMOVED_AS = {
    "aws:autoscaling/group:Group": "autoscaling-group",
    "aws:autoscaling/lifecycleHook:LifecycleHook": "lifecycle-hook",
    "aws:ec2/launchTemplate:LaunchTemplate": "launch-template",
    "aws:lambda/function:Function": "lambda-function",
    "aws:cloudwatch/eventRule:EventRule": "event-rule",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpc-endpoint",
    "aws:ec2/natGateway:NatGateway": "nat-gateway",
    "aws:ec2/eip:Eip": "elastic-ip",
    "aws:ec2/internetGateway:InternetGateway": "internet-gateway",
    "aws:ec2/securityGroup:SecurityGroup": "security-group",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/routeTable:RouteTable": "route-table",
    "aws:ec2/vpc:Vpc": "vpc",
    "aws:route53/zone:Zone": "hosted-zone",
    "aws:secretsmanager/secret:Secret": "secret",
    "aws:ssm/parameter:Parameter": "ssm-parameter",
    "aws:cloudwatch/logGroup:LogGroup": "log-group",
    "aws:s3/bucket:Bucket": "bucket",
    "aws:kms/key:Key": "kms-key",
    "aws:iam/instanceProfile:InstanceProfile": "instance-profile",
    "aws:iam/role:Role": "iam-role",
    "aws:iam/policy:Policy": "iam-policy",
    "aws:budgets/budget:Budget": "budget",
}
#: Program resource type -> the kind whose removal takes it along (it has no existence of its own).
GOES_WITH = {
    "aws:cloudwatch/eventTarget:EventTarget": "event-rule",
    "aws:lambda/permission:Permission": "lambda-function",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "security-group",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "security-group",
    "aws:ec2/route:Route": "route-table",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "route-table",
    "aws:secretsmanager/secretVersion:SecretVersion": "secret",
    "aws:secretsmanager/secretPolicy:SecretPolicy": "secret",
    "aws:kms/alias:Alias": "kms-key",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": "bucket",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "bucket",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": "bucket",
    "aws:s3/bucketVersioning:BucketVersioning": "bucket",
    "aws:s3/bucketPolicy:BucketPolicy": "bucket",
    "aws:s3/bucketObjectv2:BucketObjectv2": "bucket",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": "bucket",
    "aws:iam/rolePolicy:RolePolicy": "iam-role",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": "iam-policy",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment": "iam-policy",
    "aws:budgets/budgetAction:BudgetAction": "budget",
}
#: What instances the groups launch carry (launch-template tag specifications), removed in their own right.
LAUNCHED = {"instance", "volume", "network-interface"}


@pytest.fixture(scope="module", params=["nat", "adopted"])
def declared_types(request, program_evaluations) -> set[str]:
    config, kwargs = SCENARIOS[request.param]
    record = evaluate_program(config, **kwargs, shared=program_evaluations)
    return {r.type for r in record.resources if r.custom and r.type.startswith("aws:") }


def test_every_resource_type_the_program_declares_is_removed_or_goes_with_one_that_is(declared_types):
    unknown = declared_types - set(REMOVED_AS) - set(GOES_WITH)
    assert not unknown, f"the janitor does not know how these leak or go: {sorted(unknown)}"


def test_every_kind_has_a_remover_and_a_place_in_the_order():
    kinds = set(REMOVED_AS.values()) | set(GOES_WITH.values()) | LAUNCHED
    assert kinds <= set(DELETION_ORDER) == set(REMOVERS)
