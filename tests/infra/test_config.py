"""The stack configuration: one schema, checked at the edge, one error naming each bad key."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from infra.program import INFRA_DIR, encode_config_value, example_config

from daskfleet_infra.config import CONFIG_KEYS, StackConfig, StackConfigError, parse_stack_config, read_stack_config

from daskfleet import conventions


def as_pulumi(config: dict[str, Any]) -> dict[str, str]:
    """Config as Pulumi hands it to the program: every value text."""
    return {key: encode_config_value(value) for key, value in config.items()}


def parse(**changes: Any) -> StackConfig:
    config = example_config()
    for key, value in changes.items():
        if value is _MISSING:
            config.pop(key)
        else:
            config[key] = value
    return parse_stack_config(as_pulumi(config))


_MISSING = object()


def test_the_example_stack_is_valid_and_reads_as_typed_values():
    config = parse()
    assert config.cluster == "analytics"
    assert config.worker_max_size == 10 and config.nat_gateway is False
    assert config.client_cidrs == ["10.100.0.0/16"]
    assert [(user.name, user.principal_arn) for user in config.user_list] == [
        ("alice", "arn:aws:iam::123456789012:role/alice"),
        ("bob", "arn:aws:iam::123456789012:user/bob"),
    ]
    assert config.scheduler_dns_name == conventions.scheduler_dns_name("analytics", "daskfleet.internal")
    assert config.scheduler_dns_name == f"scheduler.{config.cluster_zone_name}"


def test_defaults_are_secure():
    required = {key: value for key, value in example_config().items() if StackConfig.model_fields[CONFIG_KEYS[key]].is_required()}
    config = parse_stack_config(as_pulumi(required))
    assert config.client_cidrs == [] and config.client_security_group_ids == []
    assert config.nat_gateway is False and config.ephemeral is False
    assert config.vpc_id is None and config.ami_id is None
    assert config.extra_read_buckets == [] and config.operator_principal_arns == []
    assert config.client_version_policy == "refuse"


def test_the_client_version_policy_accepts_what_the_schedulers_spec_accepts():
    from daskfleet.node.spec import NodeSpec

    accepted = typing.get_args(NodeSpec.model_fields["client_version_policy"].annotation)
    assert typing.get_args(StackConfig.model_fields["client_version_policy"].annotation) == accepted
    for policy in accepted:
        assert parse(clientVersionPolicy=policy).client_version_policy == policy


def test_the_usage_keys_become_the_schedulers_usage_policy():
    policy = parse(userMaxWorkers=["*=8", "alice=2"], budgetHardStopPercent=90).usage_policy()
    assert policy.user_max_workers == {"*": 8, "alice": 2} and policy.user_compute_hours_per_day == {"bob": 40.0}
    assert policy.price("m7i.xlarge").spot == 0.09 and policy.price("m7i.large").spot is None
    assert (policy.budget_monthly_usd, policy.budget_hard_stop_percent, policy.budget_stop_lead_s) == (500.0, 90, 900.0)
    assert policy.prefixes_per_user == 50 and parse(usagePrefixesPerUser=0).usage_policy().prefixes_per_user == 0


def test_worker_sizes_are_the_instances_unless_the_stack_sets_them():
    assert (parse().worker_threads, parse().worker_memory_limit) == (0, None)
    config = parse(workerThreads=2, workerMemoryLimit="0.8")
    assert (config.worker_threads, config.worker_memory_limit) == (2, "0.8")


def test_cost_allocation_tags_carry_expiry_only_when_ephemeral():
    assert parse().cost_allocation_tags() == {
        "daskfleet:cluster": "analytics", "team": "data-science", "owner": "alice@example.com", "cost-center": "cc-4711",
    }
    ephemeral = parse(ephemeral=True, expires="2031-03-31")
    assert ephemeral.cost_allocation_tags()[conventions.TAG_EXPIRES] == "2031-03-31"


ERROR_CASES = [
    # (key named in the error, the change, a fragment of the value the message shows)
    ("cluster", {"cluster": _MISSING}, "required key is not set"),
    ("cluster", {"cluster": "Analytics_1"}, "'Analytics_1'"),
    ("region", {"region": "Europe"}, "'Europe'"),
    ("environmentFingerprint", {"environmentFingerprint": "sha256:abc"}, "'sha256:abc'"),
    ("workerMaxSize", {"workerMaxSize": "ten"}, "'ten'"),
    ("workerMaxSize", {"workerMaxSize": 0}, "(got 0)"),
    ("workerMaxSize", {"workerMaxSize": 2.5}, "(got 2.5)"),
    ("natGateway", {"natGateway": "yes"}, "'yes'"),
    ("clientCidrs", {"clientCidrs": "10.0.0.0/8"}, "'10.0.0.0/8'"),
    ("clientCidrs[1]", {"clientCidrs": ["10.100.0.0/16", "0.0.0.0/0"]}, "world-open"),
    ("clientCidrs[0]", {"clientCidrs": ["::/0"]}, "world-open"),
    ("clientCidrs[0]", {"clientCidrs": ["10.100.0.1/16"]}, "'10.100.0.1/16'"),
    ("clientSecurityGroupIds[0]", {"clientSecurityGroupIds": ["default"]}, "'default'"),
    ("workerInstanceTypes", {"workerInstanceTypes": []}, "at least 1 item"),
    ("workerInstanceTypes[1]", {"workerInstanceTypes": ["m7i.xlarge", "huge"]}, "'huge'"),
    ("workerInstanceTypes", {"workerInstanceTypes": ["m7i.xlarge", "m7i.xlarge"]}, "more than once"),
    ("budgetThresholdsPercent", {"budgetThresholdsPercent": []}, "at least 1 item"),
    ("budgetThresholdsPercent[2]", {"budgetThresholdsPercent": [50, 80, 0]}, "(got 0)"),
    ("budgetThresholdsPercent[0]", {"budgetThresholdsPercent": ["half"]}, "'half'"),
    ("budgetThresholdsPercent", {"budgetThresholdsPercent": [80, 80]}, "more than once"),
    ("budgetMonthlyUsd", {"budgetMonthlyUsd": _MISSING}, "required key is not set"),
    ("budgetEmails[0]", {"budgetEmails": ["leads"]}, "'leads'"),
    ("logRetentionDays", {"logRetentionDays": 31}, "(got 31)"),
    ("users", {"users": []}, "at least 1 item"),
    ("users[0]", {"users": ["alice"]}, "NAME=IAM_PRINCIPAL_ARN"),
    ("users[0]", {"users": ["alice=arn:aws:iam::123456789012:group/data"]}, "not an IAM user or role ARN"),
    ("users[1]", {"users": ["alice=arn:aws:iam::123456789012:role/a", "Bob=arn:aws:iam::123456789012:user/bob"]}, "'Bob'"),
    ("users", {"users": ["alice=arn:aws:iam::123456789012:role/a", "alice=arn:aws:iam::123456789012:role/b"]}, "alice"),
    ("expires", {"ephemeral": True}, "required when ephemeral"),
    ("expires", {"expires": "2031-03-31"}, "'2031-03-31'"),
    ("expires", {"ephemeral": True, "expires": "2031-02-30"}, "'2031-02-30'"),
    ("subnetIds", {"vpcId": "vpc-0a1b2c3d4e5f60718"}, "at least 2"),
    ("subnetIds", {"vpcId": "vpc-0a1b2c3d4e5f60718", "subnetIds": ["subnet-0aaaaaaaaaaaaaaa1"]}, "subnet-0aaaaaaaaaaaaaaa1"),
    ("vpcId", {"subnetIds": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"]}, "required with subnetIds"),
    ("vpcCidr", {"vpcCidr": "10.0.0.0/24"}, "'10.0.0.0/24'"),
    ("workerOnDemandBase", {"workerOnDemandBase": 11}, "11"),
    ("workerOnDemandPercentAboveBase", {"workerOnDemandPercentAboveBase": 101}, "(got 101)"),
    ("amiId", {"amiId": "ubuntu"}, "'ubuntu'"),
    ("clientVersionPolicy", {"clientVersionPolicy": "ignore"}, "'ignore'"),
    ("metricsScrapers[0]", {"metricsScrapers": ["prometheus"]}, "'prometheus'"),
    ("clientVersionPolicy", {"clientVersionPolicy": ""}, "(got '')"),
    ("dnsZone", {"dnsZone": ""}, "(got '')"),
    ("clientCidr", {"clientCidr": ["10.0.0.0/8"]}, "unknown key"),
    ("instancePricesUsdPerHour", {"instancePricesUsdPerHour": _MISSING}, "required key is not set"),
    ("instancePricesUsdPerHour", {"instancePricesUsdPerHour": ["m7i.large=0.1", "m7i.xlarge=0.2"]},
     "no price for m6i.xlarge (workerInstanceTypes), m7a.xlarge (workerInstanceTypes)"),
    ("instancePricesUsdPerHour", {"instancePricesUsdPerHour": ["m7i.xlarge=0.2", "m6i.xlarge=0.2", "m7a.xlarge=0.2",
                                                               "m6a.xlarge=0.2"]}, "m7i.large (schedulerInstanceType)"),
    ("instancePricesUsdPerHour[0]", {"instancePricesUsdPerHour": ["m7i.large"]}, "'m7i.large'"),
    ("instancePricesUsdPerHour[0]", {"instancePricesUsdPerHour": ["m7i.large=free"]}, "prices must be numbers"),
    ("userMaxWorkers[0]", {"userMaxWorkers": ["alice=two"]}, "'two' is not a whole number"),
    ("userMaxWorkers", {"userMaxWorkers": ["carol=2"]}, "carol not among users (alice, bob)"),
    ("userComputeHoursPerDay[0]", {"userComputeHoursPerDay": ["idle=1"]}, "reserved for idle worker time"),
    ("userComputeHoursPerDay", {"userComputeHoursPerDay": ["alice=1", "alice=2"]}, "'alice' is given more than once"),
    ("budgetHardStopPercent", {"budgetHardStopPercent": 1001}, "(got 1001)"),
    ("usagePrefixesPerUser", {"usagePrefixesPerUser": 501}, "(got 501)"),
    ("users", {"users": ["idle=arn:aws:iam::123456789012:role/idle"]}, "reserved for idle worker time"),
    ("workerMinSize", {"workerMinSize": 11}, "more than workerMaxSize (10)"),
    ("clusterWorkerCap", {"clusterWorkerCap": -1}, "(got -1)"),
    ("adaptIntervalSeconds", {"adaptIntervalSeconds": 0}, "(got 0)"),
    ("idleTimeout", {"idleTimeout": "20m"}, "expected a whole number, got '20m'"),
    ("noClientTimeout", {"noClientTimeout": -5}, "(got -5)"),
    ("workerThreads", {"workerThreads": 2000}, "(got 2000)"),
    ("workerThreads", {"workerThreads": "four"}, "expected a whole number, got 'four'"),
    ("workerMemoryLimit", {"workerMemoryLimit": "12GX"}, "not a memory limit (got '12GX')"),
    ("workerMemoryLimit", {"workerMemoryLimit": "0"}, "not a memory limit (got '0')"),
]


@pytest.mark.parametrize(("key", "changes", "shown"), ERROR_CASES, ids=[f"{case[0]}:{i}" for i, case in enumerate(ERROR_CASES)])
def test_a_bad_key_gives_one_error_naming_it_its_value_and_what_is_accepted(key, changes, shown):
    with pytest.raises(StackConfigError) as caught:
        parse(**changes)
    error = caught.value
    assert len(error.problems) == 1, error.problems
    problem = error.problems[0]
    assert problem.startswith(f"{key}: "), problem
    assert shown in problem
    assert str(error).startswith("daskfleet stack configuration: ")
    assert "\n" not in str(error)


@pytest.mark.parametrize("key", ["workerMaxSize", "clientCidrs", "logRetentionDays"])
def test_a_key_error_says_what_the_key_accepts(key):
    with pytest.raises(StackConfigError) as caught:
        parse(**{key: "nonsense"})
    description = StackConfig.model_fields[CONFIG_KEYS[key]].description
    assert caught.value.problems[0].endswith(f"accepted: {description}")


def test_several_bad_keys_are_reported_together():
    with pytest.raises(StackConfigError) as caught:
        parse(cluster=_MISSING, workerMaxSize="many", clientCidrs=["0.0.0.0/0"])
    assert sorted(problem.split(":")[0] for problem in caught.value.problems) == ["clientCidrs[0]", "cluster", "workerMaxSize"]


def test_the_error_is_one_pulumi_prints_without_a_traceback():
    import pulumi

    from daskfleet.errors import DaskfleetError, ExitCode

    with pytest.raises(StackConfigError) as caught:
        parse(region="mars")
    assert isinstance(caught.value, pulumi.RunError) and isinstance(caught.value, DaskfleetError)
    assert caught.value.exit_code == ExitCode.CONFIG


def test_config_is_read_from_pulumi_config_including_misspelt_keys(monkeypatch):
    values = {f"daskfleet:{key}": text for key, text in as_pulumi(example_config()).items()}
    values["aws:region"] = "us-east-1"  # other namespaces are not ours to check
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(values))
    assert read_stack_config().region == "eu-west-1"
    values["daskfleet:workerMaxSzie"] = "5"
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(values))
    with pytest.raises(StackConfigError, match=r"workerMaxSzie: unknown key \(did you mean workerMaxSize\? known keys: "):
        read_stack_config()


# --- the project files say the same as the schema -------------------------------------------


def _pulumi_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        return _pulumi_type(typing.get_args(annotation)[0])
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is dict:
        return "object"
    if typing.get_origin(annotation) is list:
        return ("array", _pulumi_type(args[0]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    if len(args) == 1:
        return _pulumi_type(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        (kind,) = {type(arg) for arg in args}
        return _pulumi_type(kind)
    return {str: "string", bool: "boolean", int: "integer", float: "number"}[annotation]


def test_pulumi_yaml_declares_every_key_with_the_schemas_type_description_and_default():
    project = yaml.safe_load((INFRA_DIR / "Pulumi.yaml").read_text())
    assert project["name"] == "daskfleet"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "uv", "virtualenv": "../.venv"}}
    declared = project["config"]
    assert list(declared) == list(CONFIG_KEYS)
    for key, name in CONFIG_KEYS.items():
        field = StackConfig.model_fields[name]
        kind = _pulumi_type(field.annotation)
        if kind in ("object", ("array", "object")):
            # Pulumi's project schema has no object type: such keys are declared untyped; the program checks them.
            assert "type" not in declared[key] and "items" not in declared[key], key
        elif isinstance(kind, tuple):
            assert declared[key]["type"] == "array" and declared[key]["items"] == {"type": kind[1]}, key
        else:
            assert declared[key]["type"] == kind, key
        assert declared[key]["description"] == field.description, key
        if field.is_required():
            assert "default" not in declared[key], key
        else:
            default = field.get_default(call_default_factory=True)
            assert declared[key]["default"] == ("" if default is None else default), key


def test_pulumi_yaml_defaults_alone_with_the_required_keys_are_a_valid_stack():
    project = yaml.safe_load((INFRA_DIR / "Pulumi.yaml").read_text())
    values = {key: spec["default"] for key, spec in project["config"].items() if "default" in spec}
    values.update({key: value for key, value in example_config().items() if key not in values})
    assert parse_stack_config(as_pulumi(values)).vpc_id is None


def test_the_example_stack_file_documents_every_key():
    text = (INFRA_DIR / "Pulumi.example.yaml").read_text()
    assert set(example_config()) == set(CONFIG_KEYS)
    lines = [line.strip() for line in text.splitlines()]
    for key in CONFIG_KEYS:
        at = next(number for number, line in enumerate(lines) if line.startswith(f"daskfleet:{key}:"))
        while lines[at - 1].startswith(("- ", "daskfleet:")):  # keys documented together, and list items
            at -= 1
        assert lines[at - 1].startswith("#"), f"{key} has no comment above it"
