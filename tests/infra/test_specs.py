"""Node specs in SSM: NodeSpec objects in the agent's own schema, under the conventional names."""

from __future__ import annotations

import json

import pytest

from daskfleet import conventions
from daskfleet.node.spec import NodeSpec, parse_spec
from daskfleet.scaling.policy import ScalingSpec

FINGERPRINT_KEY = "environmentFingerprint"


def stored(record, role) -> NodeSpec:
    return parse_spec(record.parameters[conventions.spec_parameter_name("analytics", role)], origin=role)


def test_one_string_parameter_per_node_role(example):
    parameters = example.of_type("aws:ssm/parameter:Parameter")
    assert sorted(p.inputs["name"] for p in parameters) == sorted(
        [conventions.spec_parameter_name("analytics", role) for role in conventions.NODE_ROLES]
        + [conventions.vendor_policy_parameter_name("analytics")]
    )
    assert {p.inputs["type"] for p in parameters} == {"String"}
    assert all(p.inputs["name"].startswith(conventions.parameter_path_prefix("analytics")) for p in parameters)


def test_the_scheduler_spec_names_its_ports_environment_and_client_policy_and_nothing_about_dns(example):
    """The scheduler's DNS record is kept from outside the instance (SchedulerDns), not by the agent."""
    assert stored(example, "scheduler") == NodeSpec(
        cluster="analytics", role="scheduler",
        scheduler_port=conventions.SCHEDULER_PORT, dashboard_port=conventions.DASHBOARD_PORT,
        expected_fingerprint=example.config[FINGERPRINT_KEY], client_version_policy="refuse",
        usage=stored(example, "scheduler").usage,
        scaling=ScalingSpec(max_workers=10, cluster_cap=1000),
        bucket=example.outputs["bucketName"], kms_key=example.one("aws:kms/key:Key").outputs["arn"],
        vendor_function=conventions.vendor_function_name("analytics"),
    )


def test_the_scheduler_keeps_its_ledger_against_the_stacks_prices_limits_and_budget(example):
    usage = stored(example, "scheduler").usage
    assert usage.price("m7i.xlarge").on_demand == 0.2016 and usage.price("m7i.large").on_demand == 0.1008
    assert usage.user_max_workers == {"*": 8} and usage.user_compute_hours_per_day == {"bob": 40.0}
    assert (usage.budget_monthly_usd, usage.budget_hard_stop_percent, usage.budget_stop_lead_s) == (500.0, 100, 900.0)
    assert stored(example, "worker").usage == type(usage)()  # workers keep no ledger


def test_the_scheduler_is_told_the_stacks_scaling_and_idle_keys(evaluations):
    """Defaults on: adaptive from 0 to workerMaxSize, idle after 20 minutes without work, 5 without a client."""
    example = stored(evaluations.record("example"), "scheduler").scaling
    assert (example.min_workers, example.max_workers, example.idle_timeout_s, example.no_client_timeout_s) == (0, 10, 1200, 300)
    adopted = stored(evaluations.record("adopted"), "scheduler").scaling
    assert adopted.max_workers == 40 and adopted.hard_cap == 40
    assert stored(evaluations.record("example"), "worker").scaling is None


@pytest.mark.parametrize(("scenario", "policy"), [("example", "refuse"), ("adopted", "warn")])
def test_the_scheduler_is_told_the_stacks_client_version_policy(evaluations, scenario, policy):
    """Stated in the stored spec even when it is the default, so the parameter says what the scheduler does."""
    record = evaluations.record(scenario)
    document = json.loads(record.parameters[conventions.spec_parameter_name("analytics", "scheduler")])
    assert document["client_version_policy"] == policy
    worker = json.loads(record.parameters[conventions.spec_parameter_name("analytics", "worker")])
    assert "client_version_policy" not in worker  # only the scheduler admits clients


def test_the_worker_spec_points_at_the_schedulers_dns_name(example):
    assert stored(example, "worker") == NodeSpec(
        cluster="analytics", role="worker",
        scheduler_address="tls://scheduler.analytics.daskfleet.internal:8786",
        worker_port=conventions.WORKER_PORT, expected_fingerprint=example.config[FINGERPRINT_KEY],
        bucket=example.outputs["bucketName"], kms_key=example.one("aws:kms/key:Key").outputs["arn"],
        vendor_function=conventions.vendor_function_name("analytics"),
    )
    assert example.outputs["schedulerAddress"] == stored(example, "worker").scheduler_address


def test_workers_are_sized_by_the_stack_when_it_says_so_else_by_their_instance(evaluations):
    adopted = stored(evaluations.record("adopted"), "worker")
    assert (adopted.nthreads, adopted.memory_limit) == (2, "12GiB")  # workerThreads, workerMemoryLimit
    document = json.loads(evaluations.record("example").parameters[conventions.spec_parameter_name("analytics", "worker")])
    assert "nthreads" not in document and "memory_limit" not in document  # the agent sizes it to the instance


@pytest.mark.parametrize("role", conventions.NODE_ROLES)
def test_stored_specs_leave_the_hosts_to_the_aws_source(example, role):
    document = json.loads(example.parameters[conventions.spec_parameter_name("analytics", role)])
    assert "listen_host" not in document and "contact_host" not in document
