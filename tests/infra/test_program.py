"""The whole program: invariants that hold for every resource, the outputs a user gets, errors at the edge."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.helpers import PROVIDER_TYPE, all_strings, aws_resources, is_taggable, provider, provider_default_tags, resource_class
from infra.program import INFRA_DIR

from daskfleet import conventions

#: The fleet's shared concerns, at the stack's root.
SHARED_COMPONENTS = {
    "daskfleet:aws:Network", "daskfleet:aws:SecurityGroups", "daskfleet:aws:Storage", "daskfleet:aws:CertificateVendor",
}
#: Each cluster's concerns, under its daskfleet:aws:Cluster (Wake only for the stack's own cluster).
CLUSTER_COMPONENTS = {
    "daskfleet:aws:Observability", "daskfleet:aws:Budget", "daskfleet:aws:Identity", "daskfleet:aws:Pki",
    "daskfleet:aws:NodeSpecs", "daskfleet:aws:Compute", "daskfleet:aws:SchedulerDns", "daskfleet:aws:Wake",
    "daskfleet:aws:PublishedEnvironments", "daskfleet:aws:Membership", "daskfleet:aws:Revocation",
}
#: The one resource that is not pulumi-aws's: the cluster's users, kept in step with its deny-list (revocations.py).
DYNAMIC_TYPE = "pulumi-python:dynamic:Resource"
#: Attachments and sub-configurations, which AWS does not tag; anything else gets the provider's default tags.
UNTAGGABLE = {
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment", "aws:iam/rolePolicy:RolePolicy", "aws:kms/alias:Alias",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketPolicy:BucketPolicy",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "aws:secretsmanager/secretPolicy:SecretPolicy",
    "aws:secretsmanager/secretVersion:SecretVersion", "aws:autoscaling/lifecycleHook:LifecycleHook",
    "aws:ec2/routeTableAssociation:RouteTableAssociation", "aws:ec2/route:Route",
    "aws:lambda/permission:Permission", "aws:cloudwatch/eventTarget:EventTarget",
}
#: The only places a private key may appear: the TLS resources that make or use it, and the secret holding it.
KEY_HOLDERS = {
    ("tls:index/certRequest:CertRequest", "privateKeyPem"),
    ("tls:index/selfSignedCert:SelfSignedCert", "privateKeyPem"),
    ("tls:index/locallySignedCert:LocallySignedCert", "caPrivateKeyPem"),
    ("aws:secretsmanager/secretVersion:SecretVersion", "secretString"),
}


def test_one_component_per_concern_and_every_resource_inside_one(every_record):
    components = [r for r in every_record.resources if r.type.startswith("daskfleet:")]
    (cluster,) = [c for c in components if c.type == "daskfleet:aws:Cluster"]  # a stack of one cluster
    shared = [c for c in components if c.parent.endswith("::pulumi:pulumi:Stack::daskfleet-test")]
    assert sorted(c.type for c in shared) == sorted([*SHARED_COMPONENTS, "daskfleet:aws:Cluster"])
    own = [c for c in components if c.parent == cluster.urn]
    assert sorted(c.type for c in own) == sorted(CLUSTER_COMPONENTS)
    component_urns = {c.urn for c in components if c.type != "daskfleet:aws:Cluster"}
    for resource in every_record.resources:
        if resource.type == PROVIDER_TYPE:
            assert resource.parent.endswith("::pulumi:pulumi:Stack::daskfleet-test"), resource.name
        elif not resource.type.startswith("daskfleet:"):
            assert resource.parent in component_urns, f"{resource.type} {resource.name} has no component parent"



def test_every_aws_resource_goes_through_the_one_explicit_provider(every_record):
    explicit = provider(every_record)
    assert explicit.inputs["region"] == every_record.config["region"]
    for resource in aws_resources(every_record):
        assert resource.provider == f"{explicit.urn}::{explicit.id}", f"{resource.type} {resource.name}"


def test_provider_default_tags_put_the_cost_allocation_tags_on_everything_taggable(every_record):
    config = every_record.config
    expected = {
        conventions.TAG_CLUSTER: config["cluster"], conventions.TAG_TEAM: config["team"],
        conventions.TAG_OWNER: config["owner"], conventions.TAG_COST_CENTER: config["costCenter"],
    }
    if config.get("ephemeral"):
        expected[conventions.TAG_EXPIRES] = config["expires"]
    assert provider_default_tags(every_record) == expected
    untaggable = set()
    for resource in aws_resources(every_record):
        if not is_taggable(resource.type):
            untaggable.add(resource.type)
            continue
        own_tags = resource.inputs.get("tags") or {}
        if isinstance(own_tags, dict):  # never overriding a cost tag with another value
            assert all(own_tags.get(key, value) == value for key, value in expected.items()), resource.name
            assert conventions.TAG_USER not in own_tags or resource.type == "aws:secretsmanager/secret:Secret"
    assert untaggable <= UNTAGGABLE, untaggable - UNTAGGABLE
    for group in every_record.of_type("aws:autoscaling/group:Group"):  # default tags do not reach ASGs
        assert expected.items() <= {tag["key"]: tag["value"] for tag in group.inputs["tags"]}.items()


def test_only_pulumi_aws_v7_resources_none_deprecated_and_no_warnings(every_record):
    for type_token in {r.type for r in every_record.resources if r.custom and r.type not in (PROVIDER_TYPE, DYNAMIC_TYPE)}:
        cls = resource_class(type_token)
        assert not cls.__name__.endswith("V2"), type_token
    assert every_record.warnings == []


def test_no_private_key_outside_the_tls_resources_and_the_secrets(every_record):
    for resource in every_record.resources:
        for key, value in resource.inputs.items():
            if (resource.type, key) in KEY_HOLDERS:
                continue
            for text in all_strings(value):
                assert "PRIVATE KEY" not in text, f"{resource.type} {resource.name} input {key}"
        if resource.type.startswith("aws:"):
            assert "PRIVATE KEY" not in json.dumps(resource.outputs) or resource.type.endswith("SecretVersion"), resource.name
    for role, text in every_record.user_data.items():
        assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text, role
    for name, value in every_record.parameters.items():
        assert "PRIVATE KEY" not in value, name
    assert "PRIVATE KEY" not in json.dumps(every_record.outputs)
    assert every_record.secret_outputs == frozenset()


def test_every_key_holder_is_marked_secret(example):
    for resource in example.resources:
        for key in resource.inputs:
            if (resource.type, key) in KEY_HOLDERS:
                assert key in resource.secret_inputs, f"{resource.type} {resource.name} {key}"


def test_no_resource_is_declared_inside_an_apply():
    """Resources declared in apply() are invisible to preview; none of the program's modules does it."""
    resource_modules = {"aws", "tls"}
    for path in [INFRA_DIR / "__main__.py", *sorted((INFRA_DIR / "daskfleet_infra").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "apply"):
                continue
            for inner in (node for argument in call.args for node in ast.walk(argument)):
                if isinstance(inner, ast.Call):
                    root = inner.func
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    assert not (isinstance(root, ast.Name) and root.id in resource_modules), f"{path.name}:{inner.lineno}"


#: What only tests may import: their own modules (infra.program, infra.mocks, ...) and Pulumi's mock runtime.
TEST_ONLY_MODULES = (
    "infra", "tests", "pytest", "moto", "pulumi.runtime.mocks", "pulumi.runtime.Mocks", "pulumi.runtime.set_mocks",
)


def test_nothing_under_infra_imports_test_machinery():
    """infra/ holds what `pulumi up` and the policy pack run; the mocks that evaluate the program live in tests/."""
    for path in sorted(INFRA_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                assert not any(name == test_only or name.startswith(test_only + ".") for test_only in TEST_ONLY_MODULES), (
                    f"{path.relative_to(INFRA_DIR)}:{node.lineno} imports {name}"
                )


# --- outputs ------------------------------------------------------------------------------------


def test_outputs_tell_users_where_the_cluster_is(example):
    outputs = example.outputs
    assert outputs["schedulerAddress"] == "tls://scheduler.analytics.daskfleet.internal:8786"
    assert outputs["dashboardUrl"] == "https://scheduler.analytics.daskfleet.internal:8787/status"
    assert outputs["bucketName"] == example.one("aws:s3/bucket:Bucket").outputs["bucket"]
    assert set(outputs["clientSecretArns"]) == {"alice", "bob"}
    assert outputs["forwardedSchedulerAddress"] == "tls://localhost:8786"
    assert (outputs["cluster"], outputs["region"]) == ("analytics", "eu-west-1")


def _instance(instance_id, state, launched, cluster="analytics", role="scheduler"):
    return {
        "InstanceId": instance_id, "State": {"Name": state}, "LaunchTime": launched,
        "Tags": [{"Key": conventions.TAG_CLUSTER, "Value": cluster}, {"Key": conventions.TAG_ROLE, "Value": role}],
    }


#: Mid-replacement: the old scheduler still running and listed first, the new one running, one already
#: shutting down, and instances the filters must leave out. (LaunchTime as the CLI prints it: ISO 8601 text.)
DESCRIBED_INSTANCES = {"Reservations": [
    {"Instances": [_instance("i-0old0000000000000", "running", "2031-03-01T09:00:00+00:00")]},
    {"Instances": [_instance("i-0gone000000000000", "shutting-down", "2031-03-01T08:00:00+00:00")]},
    {"Instances": [_instance("i-0new0000000000000", "running", "2031-03-02T09:00:00+00:00")]},
    {"Instances": [
        _instance("i-0other00000000000", "running", "2031-03-03T09:00:00+00:00", cluster="other"),
        _instance("i-0worker0000000000", "running", "2031-03-03T09:00:00+00:00", role="worker"),
    ]},
]}


@pytest.fixture
def fake_aws_cli(tmp_path):
    """An `aws` on PATH that logs each call's argv and answers describe-instances like the AWS CLI would:
    DESCRIBED_INSTANCES, narrowed by its tag and state --filters, through its JMESPath --query, as text."""
    (tmp_path / "instances.json").write_text(json.dumps(DESCRIBED_INSTANCES))
    script = tmp_path / "aws"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys, jmespath\n"
        f"here = {str(tmp_path)!r}\n"
        "args = sys.argv[1:]\n"
        "open(here + '/calls.jsonl', 'a').write(json.dumps(args) + '\\n')\n"
        "if args[:2] == ['ec2', 'describe-instances']:\n"
        "    at = args.index('--filters') + 1\n"
        "    filters = []\n"
        "    while at < len(args) and not args[at].startswith('--'):\n"
        "        name, values = args[at].removeprefix('Name=').split(',Values=')\n"
        "        filters.append((name, values))\n"
        "        at += 1\n"
        "    def value(instance, name):\n"
        "        if name == 'instance-state-name':\n"
        "            return instance['State']['Name']\n"
        "        return {tag['Key']: tag['Value'] for tag in instance['Tags']}.get(name.removeprefix('tag:'))\n"
        "    response = json.load(open(here + '/instances.json'))\n"
        "    for reservation in response['Reservations']:\n"
        "        reservation['Instances'] = [i for i in reservation['Instances'] if all(value(i, n) == v for n, v in filters)]\n"
        "    response['Reservations'] = [r for r in response['Reservations'] if r['Instances']]\n"
        "    assert args[args.index('--output') + 1] == 'text'\n"
        "    print(jmespath.search(args[args.index('--query') + 1], response))\n"
    )
    script.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize(("output", "port"), [("schedulerPortForwardCommand", 8786), ("dashboardPortForwardCommand", 8787)])
def test_the_port_forward_commands_run_a_session_through_the_newest_running_scheduler(example, fake_aws_cli, output, port):
    env = {**os.environ, "PATH": f"{fake_aws_cli}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", example.outputs[output]], env=env, check=True, timeout=30)
    describe, session = [json.loads(line) for line in Path(fake_aws_cli, "calls.jsonl").read_text().splitlines()]
    assert describe[:4] == ["ec2", "describe-instances", "--region", "eu-west-1"]
    assert session[:5] == ["ssm", "start-session", "--region", "eu-west-1", "--target"]
    # Not the old scheduler listed first, not one shutting down, not another cluster's or a worker.
    assert session[5] == "i-0new0000000000000"
    assert session[6:8] == ["--document-name", "AWS-StartPortForwardingSessionToRemoteHost"]
    assert session[8] == "--parameters"
    assert json.loads(session[9]) == {
        "host": ["scheduler.analytics.daskfleet.internal"], "portNumber": [str(port)], "localPortNumber": [str(port)],
    }


# --- errors at the edge -------------------------------------------------------------------------


@pytest.mark.parametrize(("scenario", "key"), [("world-open", "clientCidrs[1]: "), ("misspelt-key", "clientCidr: unknown key")])
def test_a_configuration_error_stops_the_program_before_anything_is_declared(evaluations, scenario, key):
    error = evaluations.failure(scenario)
    assert error.kind == "StackConfigError" and key in error.message
    assert error.traceback == ""  # a RunError: Pulumi prints the one line
    assert error.declared == []
