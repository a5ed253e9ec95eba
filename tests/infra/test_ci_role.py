"""The optional CI role program (infra/ci-role): trusted by one repository's branches and PRs, scoped by daskfleet's names."""

from __future__ import annotations

import json
import sys

import pytest

from infra.program import INFRA_DIR

from daskfleet import conventions

for directory in (INFRA_DIR / "policy", INFRA_DIR / "ci-role"):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
import ci_role  # noqa: E402
from daskfleet_policies.iam import document_problems  # noqa: E402

PROVIDER = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
POLICY = ci_role.permissions(partition="aws", account="123456789012", state_bucket="acme-pulumi-state",
                             secrets_provider_key_arn="arn:aws:kms:eu-west-1:123456789012:key/abcd")
#: Statements on services without resource-level scope for creation, or keys named only after creation: the
#: policy pack (written for the clusters' own roles) reports them; everything holding data is named.
BROAD_BY_NECESSITY = {"NetworkComputeAndDns", "ClusterKeyThroughSecretsManagerAndS3"}


def test_only_this_repositorys_branches_and_pull_requests_may_assume_it():
    (statement,) = ci_role.trust_policy(PROVIDER, "acme/daskfleet")["Statement"]
    assert statement["Principal"] == {"Federated": PROVIDER}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {
        "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"},
        "StringLike": {"token.actions.githubusercontent.com:sub": [
            "repo:acme/daskfleet:ref:refs/heads/*", "repo:acme/daskfleet:pull_request"]},
    }


@pytest.mark.parametrize("repository", ["*", "acme/*", "acme", "acme/daskfleet:ref:refs/tags/x"])
def test_a_repository_that_would_widen_the_trust_is_refused(repository):
    with pytest.raises(ValueError, match="is not ORG/REPO"):
        ci_role.trust_policy(PROVIDER, repository)


def test_data_and_identities_are_named_and_roles_pass_only_to_ec2_and_lambda():
    statements = {s["Sid"]: s for s in POLICY["Statement"]}
    assert statements["PassNodeRoles"]["Resource"] == [f"arn:aws:iam::123456789012:role/{conventions.NAME_PREFIX}-*"]
    assert statements["PassNodeRoles"]["Condition"]["StringEquals"]["iam:PassedToService"] == [
        "ec2.amazonaws.com", "lambda.amazonaws.com"]
    assert statements["ClusterSecrets"]["Resource"] == ["arn:aws:secretsmanager:*:123456789012:secret:daskfleet/*"]
    assert statements["PulumiState"]["Resource"] == ["arn:aws:s3:::acme-pulumi-state", "arn:aws:s3:::acme-pulumi-state/*"]
    flagged = {problem.split("(", 1)[1].split(")", 1)[0] for problem in document_problems(json.dumps(POLICY))}
    assert flagged == BROAD_BY_NECESSITY


def granting(action: str) -> list[dict]:
    """Every statement whose actions (wildcards included) match ``action``."""
    from fnmatch import fnmatchcase

    return [statement for statement in POLICY["Statement"]
            if any(fnmatchcase(action.lower(), pattern.lower()) for pattern in statement["Action"])]


def test_no_statement_passes_roles_without_the_service_condition():
    (passing,) = granting("iam:PassRole")
    assert passing["Sid"] == "PassNodeRoles" and "iam:PassedToService" in passing["Condition"]["StringEquals"]


@pytest.mark.parametrize("action", ["iam:CreatePolicy", "iam:GetPolicyVersion", "iam:ListPolicyVersions",
                                    "iam:DeletePolicy", "iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy"])
def test_what_the_program_declares_in_iam_is_granted_on_daskfleet_names_only(action):
    (statement,) = granting(action)
    assert all(resource.rsplit(":", 1)[1].split("/", 1)[1] == f"{conventions.NAME_PREFIX}-*"
               for resource in statement["Resource"])


def test_the_program_declares_the_provider_and_the_role_under_mocks():
    from infra.program import evaluate_program

    record = evaluate_program(
        {"repository": "acme/daskfleet", "stateBucket": "s3://acme-pulumi-state",
         "secretsProviderKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/abcd"},
        program_dir=INFRA_DIR / "ci-role", project="daskfleet-ci-role")
    (provider,) = record.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert provider.inputs["url"] == "https://token.actions.githubusercontent.com"
    role = record.one("aws:iam/role:Role")
    assert role.inputs["name"] == "daskfleet-ci"
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"][0] == "repo:acme/daskfleet:ref:refs/heads/*"
    policy = json.loads(record.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    assert {s["Sid"] for s in policy["Statement"]} == {s["Sid"] for s in POLICY["Statement"]}
    assert "roleArn" in record.outputs
