"""IAM: no data or secret action, nor a whole service, on every resource; no account-wide managed policies."""

import json

import pytest
from policy.harness import UNKNOWN, resource_violations

POLICY = "aws:iam/policy:Policy"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ROLE = "aws:iam/role:Role"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"

WILDCARDS = "iam-no-wildcard-data-access"
MANAGED = "iam-no-broad-managed-policies"

BUCKET_ARN = "arn:aws:s3:::daskfleet-team-a-data-1a2b3c"
SECRETS_ARN = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:daskfleet/team-a/*"
PARAMETERS_ARN = "arn:aws:ssm:eu-west-1:111122223333:parameter/daskfleet/team-a/*"
KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def allow(action, resource, **extra):
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def document(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


WORKER_POLICY = document(
    allow(["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], f"{BUCKET_ARN}/*"),
    allow("s3:ListBucket", BUCKET_ARN),
    allow("secretsmanager:GetSecretValue", SECRETS_ARN),
    allow(["ssm:GetParameter", "ssm:GetParameters"], PARAMETERS_ARN),
    allow("kms:Decrypt", KEY_ARN),
    allow(["ec2:DescribeInstances", "ec2:DescribeTags", "autoscaling:Describe*"], "*"),
    allow(
        ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
        "*",
        Condition={"StringEquals": {"autoscaling:ResourceTag/daskfleet:cluster": "team-a"}},
    ),
    allow("s3:ListAllMyBuckets", "*"),
    {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
)


@pytest.mark.parametrize("resource_type", [POLICY, ROLE_POLICY, "aws:iam/userPolicy:UserPolicy"])
def test_a_policy_scoped_to_the_clusters_resources_passes(resource_type):
    assert resource_violations(WILDCARDS, resource_type, {"policy": WORKER_POLICY}) == []


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("s3:GetObject", "*"),
        ("s3:*", "*"),
        ("s3:Get*", "arn:aws:s3:::*"),
        ("s3:GetObject", "arn:aws:s3:::*/*"),
        ("*", "*"),
        ("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:eu-west-1:111122223333:secret:*"),
        ("secretsmanager:*", "*"),
        ("ssm:GetParameter*", "*"),
        ("ssm:Get*", "arn:aws:ssm:*:*:parameter/*"),
        ("kms:Decrypt", "*"),
        ("kms:*", "arn:aws:kms:eu-west-1:111122223333:key/*"),
        ("dynamodb:Query", "*"),
        ("iam:PassRole", "*"),
        ("ec2:*", "*"),
        ("S3:GETOBJECT", "*"),
    ],
)
def test_data_secret_or_whole_service_actions_on_everything_fail(action, resource):
    [message] = resource_violations(WILDCARDS, POLICY, {"policy": document(allow(action, resource, Sid="Broad"))})
    assert message.startswith(f"Statement[0] (Broad) allows {action} on '{resource}'")


@pytest.mark.parametrize(
    "action",
    ["ec2:DescribeInstances", "ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel", "kms:DescribeKey",
     "logs:DescribeLogGroups", "secretsmanager:ListSecrets"],
)
def test_harmless_actions_on_everything_pass(action):
    assert resource_violations(WILDCARDS, POLICY, {"policy": document(allow(action, "*"))}) == []


def test_conditions_do_not_excuse_a_wildcard_on_secrets():
    statement = allow("secretsmanager:GetSecretValue", "*", Condition={"StringEquals": {"aws:ResourceTag/team": "a"}})
    assert resource_violations(WILDCARDS, POLICY, {"policy": document(statement)})


def test_allow_with_not_action_on_everything_fails():
    statement = {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}
    [message] = resource_violations(WILDCARDS, POLICY, {"policy": document(statement)})
    assert "every action but those under NotAction" in message


def test_allow_with_not_resource_counts_as_everything():
    statement = {"Effect": "Allow", "Action": "s3:GetObject", "NotResource": f"{BUCKET_ARN}/private/*"}
    [message] = resource_violations(WILDCARDS, POLICY, {"policy": document(statement)})
    assert "every resource but those under NotResource" in message


def test_a_lone_statement_object_and_string_fields_are_read():
    policy = json.dumps({"Version": "2012-10-17", "Statement": allow("s3:PutObject", "*")})
    assert resource_violations(WILDCARDS, ROLE_POLICY, {"policy": policy, "role": "team-a-worker"})


def test_a_policy_document_given_as_an_object_is_read():
    policy = {"Version": "2012-10-17", "Statement": [allow(["kms:Decrypt"], "*")]}
    assert resource_violations(WILDCARDS, POLICY, {"policy": policy})


def test_inline_role_policies_are_checked_and_named():
    props = {
        "assumeRolePolicy": document(
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ),
        "inlinePolicies": [{"name": "data", "policy": WORKER_POLICY}, {"name": "oops", "policy": document(allow("s3:*", "*"))}],
    }
    [message] = resource_violations(WILDCARDS, ROLE, props)
    assert message.startswith("inlinePolicies[1] (oops): Statement[0] allows s3:* on '*'")


def test_a_document_not_known_until_deployment_is_checked_then():
    assert resource_violations(WILDCARDS, POLICY, {"policy": UNKNOWN}) == []


def test_a_document_that_is_not_json_fails():
    [message] = resource_violations(WILDCARDS, POLICY, {"policy": "{not json"})
    assert "not valid JSON" in message


@pytest.mark.parametrize(
    ("arn", "fails"),
    [
        ("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore", True),  # ssm:GetParameter(s) on "*"
        ("arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy", False),
        ("arn:aws:iam::111122223333:policy/AmazonS3FullAccess", False),  # a customer policy, checked by its document
        ("arn:aws:iam::aws:policy/AmazonS3FullAccess", True),
        ("arn:aws:iam::aws:policy/AmazonEC2FullAccess", True),
        ("arn:aws:iam::aws:policy/AdministratorAccess", True),
        ("arn:aws:iam::aws:policy/SecretsManagerReadWrite", True),
        ("arn:aws:iam::aws:policy/service-role/AmazonEC2RoleforSSM", True),
        ("arn:aws-us-gov:iam::aws:policy/AmazonS3ReadOnlyAccess", True),
        (UNKNOWN, False),
    ],
)
def test_account_wide_managed_policies_fail(arn, fails):
    assert bool(resource_violations(MANAGED, ATTACHMENT, {"role": "team-a-worker", "policyArn": arn})) is fails


def test_managed_policy_arns_on_a_role_are_checked():
    props = {"assumeRolePolicy": "{}", "managedPolicyArns": ["arn:aws:iam::aws:policy/AmazonS3FullAccess"]}
    [message] = resource_violations(MANAGED, ROLE, props)
    assert "AmazonS3FullAccess" in message
