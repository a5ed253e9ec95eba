"""Names: every AWS name the program gives follows one rule in daskfleet.conventions and fits AWS's limits.

The names are pinned as they render for the example cluster: a rename replaces the resource (a
bucket, a role the instances hold), so it must be a decision, not a side effect.
"""

from __future__ import annotations

import ast
import re

import pytest

from infra.program import INFRA_DIR

from daskfleet import conventions

#: The longest cluster name conventions.CLUSTER_NAME_PATTERN accepts.
LONGEST_CLUSTER = "a" + "b" * 38 + "c"
#: Name tags of the example stack with a NAT gateway (every created network part), by convention.
NAME_TAG_PARTS = [
    (), ("private",), ("private", "eu-west-1a"), ("private", "eu-west-1b"), ("s3",), ("endpoints",),
    ("ssm",), ("ssmmessages",), ("ec2messages",), ("lambda",), ("logs",), ("ec2",), ("autoscaling",),
    ("nat",), ("public",), ("scheduler",), ("worker",),
]


def names(record, type_: str) -> list[str]:
    return sorted(resource.inputs["name"] for resource in record.of_type(type_))


def name_tags(record) -> set[str]:
    tags = {resource.inputs["tags"]["Name"] for resource in record.resources if "Name" in (resource.inputs.get("tags") or {})}
    return tags | {node_tags["Name"] for node_tags in record.instance_tags.values()}


def test_the_program_names_its_resources_as_it_always_has(with_nat):
    assert names(with_nat, "aws:iam/role:Role") == [
        "daskfleet-analytics-budget-action", "daskfleet-analytics-cert-vendor", "daskfleet-analytics-scheduler",
        "daskfleet-analytics-scheduler-dns", "daskfleet-analytics-worker",
    ]
    assert names(with_nat, "aws:iam/policy:Policy") == [
        "daskfleet-analytics-budget-stop", "daskfleet-analytics-env-publish", "daskfleet-analytics-env-read",
        "daskfleet-analytics-member", "daskfleet-analytics-wake",
    ]
    assert names(with_nat, "aws:iam/instanceProfile:InstanceProfile") == ["daskfleet-analytics-scheduler", "daskfleet-analytics-worker"]
    assert names(with_nat, "aws:iam/rolePolicy:RolePolicy") == [
        "daskfleet-budget-action", "daskfleet-cert-vendor", "daskfleet-node", "daskfleet-node", "daskfleet-scheduler-dns"]
    assert names(with_nat, "aws:autoscaling/group:Group") == ["daskfleet-analytics-scheduler", "daskfleet-analytics-worker"]
    assert names(with_nat, "aws:autoscaling/lifecycleHook:LifecycleHook") == ["daskfleet-drain"]
    assert names(with_nat, "aws:lambda/function:Function") == ["daskfleet-analytics-cert-vendor", "daskfleet-analytics-scheduler-dns"]
    assert names(with_nat, "aws:cloudwatch/eventRule:EventRule") == ["daskfleet-analytics-scheduler-dns"]
    assert names(with_nat, "aws:cloudwatch/logGroup:LogGroup") == [
        "/aws/lambda/daskfleet-analytics-cert-vendor", "/aws/lambda/daskfleet-analytics-scheduler-dns", "/daskfleet/analytics"]
    assert names(with_nat, "aws:kms/alias:Alias") == ["alias/daskfleet/analytics"]
    assert names(with_nat, "aws:budgets/budget:Budget") == ["daskfleet-analytics"]
    # Pulumi names the bucket after its resource name plus a random suffix (the mocks do the same).
    (bucket,) = with_nat.of_type("aws:s3/bucket:Bucket")
    assert bucket.name == "daskfleet-analytics"
    assert re.fullmatch(r"daskfleet-analytics-[0-9a-f]{7}", with_nat.outputs["bucketName"])
    assert name_tags(with_nat) == {"-".join(("daskfleet-analytics", *parts)) for parts in NAME_TAG_PARTS}


def test_the_program_takes_its_names_from_conventions(with_nat):
    cluster = "analytics"
    assert names(with_nat, "aws:iam/instanceProfile:InstanceProfile") == sorted(
        conventions.iam_role_name(cluster, role) for role in conventions.NODE_ROLES
    )
    assert names(with_nat, "aws:lambda/function:Function") == sorted(
        [conventions.scheduler_dns_function_name(cluster), conventions.vendor_function_name(cluster)])
    assert names(with_nat, "aws:kms/alias:Alias") == [conventions.kms_alias(cluster)]
    assert names(with_nat, "aws:budgets/budget:Budget") == [conventions.budget_name(cluster)]
    assert names(with_nat, "aws:autoscaling/lifecycleHook:LifecycleHook") == [conventions.DRAIN_HOOK_NAME]
    assert with_nat.outputs["bucketName"].startswith(conventions.bucket_name_prefix(cluster))
    assert name_tags(with_nat) == {conventions.resource_name(cluster, *parts) for parts in NAME_TAG_PARTS}


def test_names_of_the_longest_cluster_name_fit_aws_limits():
    assert re.fullmatch(conventions.CLUSTER_NAME_PATTERN, LONGEST_CLUSTER)
    for role in conventions.NODE_ROLES:
        assert len(conventions.iam_role_name(LONGEST_CLUSTER, role)) <= 64  # IAM role and instance profile
        assert len(conventions.node_group_name(LONGEST_CLUSTER, role)) <= 255
    assert len(conventions.vendor_function_name(LONGEST_CLUSTER)) <= 64  # function and role names
    # Lambda function, its IAM role and its EventBridge rule: 64 each.
    assert len(conventions.scheduler_dns_function_name(LONGEST_CLUSTER)) <= 64
    # An S3 bucket name: at most 63, of which Pulumi's random suffix takes 7.
    assert len(conventions.bucket_name_prefix(LONGEST_CLUSTER)) + 7 <= 63
    assert len(conventions.kms_alias(LONGEST_CLUSTER)) <= 256
    assert len(conventions.budget_name(LONGEST_CLUSTER)) <= 100
    assert len(conventions.budget_action_role_name(LONGEST_CLUSTER)) <= 64
    assert len(conventions.budget_stop_policy_name(LONGEST_CLUSTER)) <= 128


@pytest.mark.parametrize("name_of", [conventions.iam_role_name, conventions.node_group_name])
def test_only_node_roles_have_roles_and_groups(name_of):
    with pytest.raises(ValueError, match="unknown node role 'client'"):
        name_of("analytics", "client")


#: String literals that would spell a cluster resource's name instead of asking conventions.
_SPELLED_NAME = re.compile(r"^(alias/|/)?daskfleet[-/]")


def test_no_program_module_spells_a_name_or_https_port_itself():
    """A name written twice will drift: the program's modules ask conventions for every name and port."""
    modules = [INFRA_DIR / "__main__.py", *sorted((INFRA_DIR / "daskfleet_infra").glob("*.py"))]
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not _SPELLED_NAME.match(node.value), f"{path.name}:{node.lineno} spells {node.value!r}"
            if isinstance(node, ast.Constant) and type(node.value) is int:
                assert node.value != conventions.HTTPS_PORT, f"{path.name}:{node.lineno} spells the HTTPS port"
