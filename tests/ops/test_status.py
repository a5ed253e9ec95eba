"""``daskfleet status`` against moto (groups, spec, Cost Explorer, budget) and the session's local scheduler over TLS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aws.awsfake import post
from ops.seed import ACCOUNT

from daskfleet import conventions
from daskfleet.environments.records import current_fingerprint
from daskfleet.local.state import LOCAL_CLUSTER, client_material
from daskfleet.ops.awsapi import OpsApi, open_session
from daskfleet.ops.observe import observe_cluster
from daskfleet.ops.status import render_json, render_text

CLUSTER = LOCAL_CLUSTER  # the session's local cluster plays the AWS cluster's scheduler and workers
USER = "ops"
EXPIRES = "2031-03-31"


def deploy(moto, local_cluster, *, expected: str, scheduler_desired: int = 1) -> None:
    """What the stack would hold for CLUSTER: its groups, the worker spec, the operator's client secret, the budget."""
    ec2, autoscaling = moto.client("ec2"), moto.client("autoscaling")
    subnet = ec2.create_subnet(VpcId=ec2.create_vpc(CidrBlock="10.70.0.0/16")["Vpc"]["VpcId"], CidrBlock="10.70.0.0/20")["Subnet"]["SubnetId"]
    for role, desired in (("scheduler", scheduler_desired), ("worker", 2)):
        template = ec2.create_launch_template(LaunchTemplateName=conventions.resource_name(CLUSTER, role),
                                              LaunchTemplateData={"ImageId": "ami-12c6146b"})["LaunchTemplate"]["LaunchTemplateId"]
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=conventions.node_group_name(CLUSTER, role), MinSize=0, MaxSize=4, DesiredCapacity=desired,
            LaunchTemplate={"LaunchTemplateId": template}, VPCZoneIdentifier=subnet,
            Tags=[{"Key": conventions.TAG_EXPIRES, "Value": EXPIRES, "PropagateAtLaunch": True}])
    moto.client("logs").create_log_group(logGroupName=conventions.log_group_name(CLUSTER))
    spec = {"cluster": CLUSTER, "role": "worker", "scheduler_address": local_cluster.address, "expected_fingerprint": expected}
    moto.put_spec(CLUSTER, "worker", spec)
    moto.put_secret(conventions.client_tls_secret_name(CLUSTER, USER), client_material(Path(local_cluster.state_dir)).to_secret_json())
    moto.client("budgets").create_budget(AccountId=ACCOUNT, Budget={
        "BudgetName": conventions.budget_name(CLUSTER), "BudgetLimit": {"Amount": "500", "Unit": "USD"},
        "TimeUnit": "MONTHLY", "BudgetType": "COST"})


def status(local_cluster, **options):
    settings = dict(region=None, profile=None, address=local_cluster.address, user=USER, timeout=20)
    settings.update(options)
    return observe_cluster(CLUSTER, api=OpsApi(open_session(None, None)), **settings)


def test_an_operator_sees_groups_tls_workers_fingerprints_budget_and_expiry(aws, local_cluster):
    deploy(aws, local_cluster, expected=current_fingerprint())
    view = status(local_cluster)
    text = render_text(view)
    assert view.groups["scheduler"].value.desired == 1 and view.groups["worker"].value.desired == 2
    assert view.groups["worker"].value.in_service == 2
    assert view.scheduler.value == f"answers over TLS at {local_cluster.address} as the scheduler of {CLUSTER}"
    assert len(view.workers.value) == 2 and all(w.matches and w.fingerprint == current_fingerprint() for w in view.workers.value)
    assert "workers:     2 registered" in text and "MISMATCH" not in text
    assert view.budget.value["amount"] == 500.0 and "500.00 USD a month" in text
    assert view.expires.value == EXPIRES
    # The scaler's own view, from the scheduler (conventions.SCALING_STATE_HANDLER).
    assert view.idle.value["state"] in ("active", "idle") and view.idle.value["workers"] == 2
    assert "idle:        active; 2 workers" in text or "idle:        idle: " in text
    # Parts that cannot be seen here are said so, and are not errors.
    assert text.count("not available:") == 1
    assert "spend:       not available: Cost Explorer has no data for daskfleet:cluster=local" in text


def test_a_worker_of_another_environment_is_marked(aws, local_cluster):
    deploy(aws, local_cluster, expected="sha256:" + "0" * 64)
    text = render_text(status(local_cluster))
    assert text.count("MISMATCH") == 2 and "expected:    sha256:000" in text


def test_spend_is_shown_where_cost_explorer_has_it(aws, local_cluster):
    deploy(aws, local_cluster, expected=current_fingerprint())
    result = {"results": [{"ResultsByTime": [{"TimePeriod": {"Start": "2031-03-01", "End": "2031-03-16"},
                                              "Total": {"UnblendedCost": {"Amount": "123.456", "Unit": "USD"}},
                                              "Groups": [], "Estimated": True}]}]}
    post(f"{aws.endpoint}/moto-api/static/ce/cost-and-usage-results", json.dumps(result).encode())
    view = status(local_cluster)
    assert view.spend.value["amount"] == pytest.approx(123.456)
    assert "spend:       123.46 USD this month so far" in render_text(view)


def test_a_sleeping_scheduler_is_reported_asleep_not_as_an_error(aws, local_cluster):
    deploy(aws, local_cluster, expected=current_fingerprint(), scheduler_desired=0)
    view = status(local_cluster, address=None)
    assert view.scheduler.reason == "the scheduler is asleep (its group wants 0 instances)"
    assert view.groups["scheduler"].value.desired == 0


def test_a_scheduler_that_does_not_answer_is_said_so(aws, local_cluster):
    deploy(aws, local_cluster, expected=current_fingerprint())
    view = status(local_cluster, address="tls://127.0.0.1:9", timeout=5)
    assert "does not answer over TLS" in view.scheduler.reason and not view.workers.available


def test_the_command_prints_a_table_or_json_and_exits_zero(aws, local_cluster):
    deploy(aws, local_cluster, expected=current_fingerprint())
    env = {**os.environ, "AWS_ENDPOINT_URL": aws.endpoint}
    argv = [sys.executable, "-m", "daskfleet", "status", CLUSTER, "--address", local_cluster.address, "--user", USER]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2].split() == ["GROUP", "DESIRED", "IN", "SERVICE", "PENDING", "DRAINING"]
    done = subprocess.run([*argv, "--json"], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    document = json.loads(done.stdout)
    assert document["groups"]["worker"]["value"]["desired"] == 2
    assert document["spend"] == {"available": False, "reason": document["spend"]["reason"]}
    assert json.loads(render_json(status(local_cluster)))["workers"]["available"] is True


def test_a_bad_cluster_name_is_the_one_error(aws):
    done = subprocess.run([sys.executable, "-m", "daskfleet", "status", "Not_A_Cluster"],
                          env={**os.environ, "AWS_ENDPOINT_URL": aws.endpoint}, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and done.stderr.strip() == (
        f"daskfleet: error: CLUSTER: 'Not_A_Cluster' does not match {conventions.CLUSTER_NAME_PATTERN}")


def test_repeated_boot_failures_of_one_launch_template_version_are_shown(aws, local_cluster):
    """Each node that stopped for good wrote its line to the log group; status groups them by template version."""
    from daskfleet.aws.calls import Deadline
    from daskfleet.aws.nodefailures import report_failure
    from daskfleet.node.supervision import Outcome

    deploy(aws, local_cluster, expected=current_fingerprint())
    group = aws.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[conventions.node_group_name(CLUSTER, "worker")])["AutoScalingGroups"][0]
    instances = [item["InstanceId"] for item in group["Instances"]]
    line = "error: secret daskfleet/local/tls/worker: not found"
    for instance in instances:
        report_failure(aws.client("logs"), CLUSTER, instance, "worker", Outcome(66, line), Deadline(30))
    view = status(local_cluster)
    (failed,) = view.boot_failures.value
    template = group["LaunchTemplate"]["LaunchTemplateId"]
    assert (failed.role, failed.count, failed.last_code, failed.last_line) == ("worker", 2, 66, line)
    assert failed.version == f"launch template {template} version 1" and failed.repeated
    text = render_text(view)
    assert f"worker launch template {template} version 1: 2 instance(s)  REPEATED" in text
    assert f"last: {instances[-1]} exit 66: {line}" in text


def test_the_deny_list_is_shown(aws, local_cluster):
    import boto3  # noqa: PLC0415

    from daskfleet.ops.revocation import change_aws  # noqa: PLC0415

    deploy(aws, local_cluster, expected=current_fingerprint())
    assert "revoked:     nobody (the deny-list is empty)" in render_text(status(local_cluster))
    change_aws(CLUSTER, "mallory", lift=False, reason="left the team", session=boto3.session.Session())
    view = status(local_cluster)
    assert [row["user"] for row in view.deny_list.value] == ["mallory"]
    text = render_text(view)
    assert "revoked:     1 user(s)" in text and "mallory" in text and ": left the team" in text
    assert json.loads(render_json(view))["deny_list"]["value"][0]["reason"] == "left the team"
