"""The certificate vendor as the program declares it: one function per stack running daskfleet's own handler, whose
role alone (with the administrators) reads the clusters' CA keys, and which members invoke to log in."""

from __future__ import annotations

import os

from infra.helpers import allows
import pytest
from infra.evaluate import VENDOR_DEPS_STUB
from infra.program import INFRA_DIR, ProgramError, evaluate_program

from daskfleet import conventions
from daskfleet.aws import vendor_lambda
from daskfleet.trust.vendor import VendorPolicy
from daskfleet_infra.vendor import DEPENDENCIES_ENV, HANDLER, PACKAGE_DIR

ACCOUNT = "123456789012"
REGION = "eu-west-1"
CA_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{conventions.ca_secret_name('analytics')}-AbCdEf"
FUNCTION = conventions.vendor_function_name("analytics")


def test_one_vendor_function_per_stack_runs_daskfleet_s_own_handler(example):
    function = example.one("aws:lambda/function:Function", "cert-vendor-function").inputs
    assert function["name"] == FUNCTION and function["handler"] == HANDLER
    assert HANDLER == f"{vendor_lambda.__name__}.{vendor_lambda.handler.__name__}"
    # The same package the local cluster runs in process, relative to the project directory.
    assert function["code"]["assets"]["daskfleet"] == {"archive": "path",
                                                       "path": os.path.relpath(PACKAGE_DIR, INFRA_DIR)}
    assert function["environment"]["variables"][vendor_lambda.CLUSTERS_ENV] == "analytics"
    # Beside it, what `make vendor-deps` installed for the function's runtime (here: the tests' stand-in).
    assert function["code"]["assets"]["cryptography"] == {"archive": "path",
                                                          "path": os.path.relpath(VENDOR_DEPS_STUB / "cryptography", INFRA_DIR)}
    assert set(function["code"]["assets"]) == {"daskfleet", "cryptography"}
    assert example.outputs["certificateVendor"] == FUNCTION


def test_without_the_vendors_dependencies_the_program_stops_before_declaring_the_function(tmp_path):
    """A bare `pulumi up` skips `make vendor-deps`: a function without cryptography would fail every node's boot."""
    with pytest.raises(ProgramError) as stopped:
        evaluate_program(env={DEPENDENCIES_ENV: str(tmp_path)})
    assert stopped.value.kind == "StackConfigError"
    assert stopped.value.message == (
        f"daskfleet stack configuration: certificate vendor: {tmp_path} holds no cryptography (the function's compiled "
        f"dependencies); run `make vendor-deps` (`make preview` and `make up` run it), or set {DEPENDENCIES_ENV} to "
        "where you built them")
    assert "aws:lambda/function:Function" not in stopped.value.declared


def test_only_the_vendor_role_reads_a_ca_secret(example):
    readers = [policy.name for policy in example.of_type("aws:iam/rolePolicy:RolePolicy") + example.of_type("aws:iam/policy:Policy")
               if allows(policy.inputs["policy"], "secretsmanager:GetSecretValue", CA_SECRET)]
    assert readers == ["cert-vendor-role"]
    vendor = example.one("aws:iam/rolePolicy:RolePolicy", "cert-vendor-role").inputs["policy"]
    for other in (conventions.node_tls_secret_name("analytics", "worker"), conventions.client_tls_secret_name("analytics", "alice")):
        assert not allows(vendor, "secretsmanager:GetSecretValue", CA_SECRET.replace(conventions.ca_secret_name("analytics"), other))
    for parameter in (conventions.vendor_policy_parameter_name("analytics"), conventions.deny_list_parameter_name("analytics")):
        assert allows(vendor, "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{parameter}")
    assert not allows(vendor, "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter"
                                                  f"{conventions.spec_parameter_name('analytics', 'worker')}")


def test_members_and_node_roles_invoke_the_vendor_and_no_other_function(example):
    """Users log in there; nodes get their certificates there at boot, proving their instance role."""
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION}"
    other_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION}-other"
    member = example.one("aws:iam/policy:Policy", "member-policy").inputs["policy"]
    assert allows(member, "lambda:InvokeFunction", function_arn)
    for role in conventions.NODE_ROLES:
        node = example.one("aws:iam/rolePolicy:RolePolicy", f"identity-{role}").inputs["policy"]
        assert allows(node, "lambda:InvokeFunction", function_arn)
        assert not allows(node, "lambda:InvokeFunction", other_arn)
        for function in example.of_type("aws:lambda/function:Function"):
            if function.inputs.get("name") != FUNCTION:
                assert not allows(node, "lambda:InvokeFunction", function.outputs["arn"]), function.inputs.get("name")


def test_the_listed_metrics_scraper_gets_metrics_certificates_and_may_ask_the_vendor_only(example, adopted):
    from infra.scenarios import SCRAPER  # noqa: PLC0415

    policy = VendorPolicy.from_json(adopted.parameters[conventions.vendor_policy_parameter_name("analytics")])
    assert policy.metrics_principals == (SCRAPER,)
    assert VendorPolicy.from_json(example.parameters[conventions.vendor_policy_parameter_name("analytics")]
                                  ).metrics_principals == ()
    scraper = adopted.one("aws:iam/policy:Policy", "member-scraper-policy")
    assert scraper.inputs["name"] == conventions.metrics_scraper_policy_name("analytics")
    document = scraper.inputs["policy"]
    assert allows(document, "lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION}")
    assert allows(document, "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter"
                                                f"{conventions.spec_parameter_name('analytics', 'worker')}")
    assert not allows(document, "ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter"
                                                    f"{conventions.vendor_policy_parameter_name('analytics')}")
    attached = adopted.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "member-scraper-prometheus")
    assert attached.inputs["role"] == "prometheus"
    assert all(r.name != "member-scraper-policy" for r in example.of_type("aws:iam/policy:Policy"))
