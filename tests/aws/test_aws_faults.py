"""AWS API faults (the fault proxy in front of moto): boot calls retry and then fail clearly, audit lines are
buffered or counted, a user's connect fails in one line, and a node that cannot start does not stay billed."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import boto3
import pytest
from aws.awsfake import CLUSTER, REGION, SCHEDULER_ADDRESS
from aws.faultproxy import FaultProxy

import daskfleet
from daskfleet import conventions
from daskfleet.aws.calls import Deadline
from daskfleet.aws.cloudwatch import CloudWatchLines
from daskfleet.aws.source import AwsSource
from daskfleet.errors import DaskfleetError, ExitCode
from daskfleet.node.supervision import BACKOFF, Outcome, Run, RunHistory

from support import wait_until

WORKER_SPEC = {"cluster": CLUSTER, "role": "worker", "scheduler_address": SCHEDULER_ADDRESS, "connect_timeout_s": 5.0}


@pytest.fixture
def proxy(aws, monkeypatch):
    """The fault proxy in front of the session's moto server; every boto3 client of the test goes through it."""
    with FaultProxy(aws.endpoint) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
        yield server


def test_boot_calls_retry_through_a_burst_of_faults_beyond_botocores_own_attempts(aws, imds, proxy, cluster_pki, caplog):
    aws.put_spec(CLUSTER, "worker", WORKER_SPEC)
    aws.put_secret(conventions.node_tls_secret_name(CLUSTER, "worker"), cluster_pki["worker"].to_secret_json())
    proxy.schedule("GetParameter", "throttle", "reset", "503", "throttle", "500")  # 4 are botocore's own attempts
    proxy.schedule("GetSecretValue", "503", "reset", "slow")  # a slow answer is still an answer
    source = AwsSource(CLUSTER, deadline_s=60)
    assert source.fetch_spec("worker")["scheduler_address"] == SCHEDULER_ADDRESS
    assert source.fetch_tls("worker") == cluster_pki["worker"]
    assert proxy.served("GetParameter") == 5 and proxy.served("GetSecretValue") == 3
    assert any("ssm:GetParameter" in record.message and "trying again in" in record.message for record in caplog.records)


def test_boot_calls_stop_at_the_deadline_with_the_failure_class(aws, imds, proxy, monkeypatch):
    from botocore.config import Config

    from daskfleet.aws import source

    aws.put_spec(CLUSTER, "worker", WORKER_SPEC)
    proxy.outage, proxy.outage_fault = {"GetParameter"}, "throttle"
    # botocore's own 4 attempts take longer than this test's deadline: one attempt each shows the agent's loop.
    monkeypatch.setattr(source, "BOTO_CONFIG", source.BOTO_CONFIG.merge(Config(retries={"mode": "standard",
                                                                                          "total_max_attempts": 1})))
    with pytest.raises(DaskfleetError) as failed:
        AwsSource(CLUSTER, deadline_s=4).fetch_spec("worker")
    error = failed.value
    assert error.exit_code == ExitCode.SOURCE_UNAVAILABLE and "\n" not in str(error)
    assert f"ssm:GetParameter on SSM parameter {conventions.spec_parameter_name(CLUSTER, 'worker')} failed: " \
           "ThrottlingException" in str(error)
    attempts = proxy.served("GetParameter", "throttle")
    assert f"(gave up after {attempts} attempt(s) within 4s)" in str(error) and attempts > 1


def test_retries_wait_a_jittered_backoff():
    waits = {Deadline(60).retry_in(3) for _ in range(20)}
    assert len(waits) > 1 and all(0 <= wait <= 4 for wait in waits)
    assert Deadline(0).retry_in(0) is None  # once it has run out, no more attempts


def test_audit_lines_beyond_the_buffer_are_dropped_oldest_first_counted_and_announced(aws, proxy):
    logs = aws.client("logs")
    group = conventions.log_group_name(CLUSTER)
    logs.create_log_group(logGroupName=group)
    proxy.outage = {"CreateLogStream", "PutLogEvents"}
    through_proxy = boto3.client("logs", region_name=REGION, endpoint_url=proxy.url)
    forward = CloudWatchLines(through_proxy, group, "audit/i-0abc", flush_s=0.2, max_pending=5)
    lines = [json.dumps({"event": "client-connect", "n": n}) for n in range(12)]
    for line in lines:
        forward(line)
    wait_until(lambda: proxy.served("CreateLogStream") >= 1, 30, "the forwarder to meet the outage")
    assert forward.dropped == 7 and forward.pending == 5  # bounded: the 7 oldest went, counted
    proxy.outage = set()
    wait_until(lambda: forward.sent == 5, 60, "the waiting lines to reach CloudWatch Logs after the outage")
    forward.close()
    shipped = [event["message"] for event in logs.get_log_events(logGroupName=group, logStreamName="audit/i-0abc")["events"]]
    assert json.loads(shipped[0])["event"] == "lines-dropped" and json.loads(shipped[0])["count"] == 7
    assert shipped[1:] == lines[7:]


@pytest.mark.parametrize(("fault", "says"), [("throttle", "ThrottlingException"), ("reset", "cannot reach")])
def test_connect_gives_one_clear_error_when_aws_keeps_failing(aws, proxy, fault, says):
    proxy.outage, proxy.outage_fault = {"*"}, fault
    with pytest.raises(DaskfleetError) as failed:
        daskfleet.connect(CLUSTER, user="alice", address="tls://127.0.0.1:9", wake=False)
    error = failed.value
    assert "\n" not in str(error) and says in str(error) and "sts:GetCallerIdentity" in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # no botocore chain behind it
    assert error.exit_code == ExitCode.SOURCE_UNAVAILABLE


# --- a node that cannot start -----------------------------------------------------------------------


@pytest.fixture
def worker_instance(aws, imds):
    """The worker's instance is a real instance of the worker group (in moto); its metadata says so."""
    aws.create_node_groups(CLUSTER, workers=1)
    aws.client("logs").create_log_group(logGroupName=conventions.log_group_name(CLUSTER))
    (instance,) = aws.group(CLUSTER, "worker")["Instances"]
    imds.instance_id = instance["InstanceId"]
    return instance["InstanceId"]


def run_worker_agent(tmp_path, imds, env_extra=None) -> subprocess.CompletedProcess:
    from daskfleet.aws.source import IMDS_ENDPOINT_ENV

    env = {**__import__("os").environ, IMDS_ENDPOINT_ENV: imds.url, "RUNTIME_DIRECTORY": str(tmp_path / "run"),
           "STATE_DIRECTORY": str(tmp_path / "state"), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "daskfleet", "node", "worker", "--source", f"aws:{CLUSTER}"],
                          env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def failure_lines(aws, instance: str) -> list[dict]:
    events = aws.client("logs").get_log_events(logGroupName=conventions.log_group_name(CLUSTER),
                                               logStreamName=f"{conventions.FAILURE_STREAM_PREFIX}{instance}")["events"]
    return [json.loads(event["message"]) for event in events]


def test_a_configuration_failure_is_reported_to_the_log_group_then_the_instance_marked_unhealthy(
    aws, proxy, worker_instance, tmp_path, imds,
):
    aws.put_spec(CLUSTER, "worker", WORKER_SPEC)  # but no TLS secret: exit 66, which no restart fixes
    proxy.schedule("PutLogEvents", "throttle", "503")
    proxy.schedule("SetInstanceHealth", "reset")
    done = run_worker_agent(tmp_path, imds)
    line = done.stderr.strip().splitlines()[-1]
    assert done.returncode == ExitCode.CERT_UNREADABLE, done.stderr
    assert line == f"daskfleet: error: secret {conventions.node_tls_secret_name(CLUSTER, 'worker')}: not found " \
                   "(secretsmanager:GetSecretValue in us-east-1)"
    (reported,) = failure_lines(aws, worker_instance)
    assert reported == {"event": "node-stopped", "instance": worker_instance, "role": "worker", "code": 66,
                        "line": line.removeprefix("daskfleet: ")}
    (instance,) = aws.group(CLUSTER, "worker")["Instances"]
    assert instance["HealthStatus"] == "Unhealthy"  # its group replaces it: not billed doing nothing
    operations = [op for op, _ in proxy.log]
    assert operations.index("PutLogEvents") < operations.index("SetInstanceHealth")  # the line first


def test_a_node_that_keeps_failing_gives_up_reports_and_is_marked_unhealthy(aws, proxy, worker_instance, tmp_path, imds):
    now = time.time()
    history = RunHistory(tmp_path / "state" / "restarts-worker.json")
    runs = [Run(now - 60 + i, now - 59 + i, ExitCode.SOURCE_UNAVAILABLE, "error: instance metadata: timed out")
            for i in range(BACKOFF.give_up_after)]
    history.write(runs)
    done = run_worker_agent(tmp_path, imds)
    assert done.returncode == ExitCode.GAVE_UP, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"daskfleet: error: gave up after {BACKOFF.give_up_after} failures within {BACKOFF.window_s:g}s; "
        "the last: error: instance metadata: timed out")
    (reported,) = failure_lines(aws, worker_instance)
    assert reported["code"] == ExitCode.GAVE_UP
    assert aws.group(CLUSTER, "worker")["Instances"][0]["HealthStatus"] == "Unhealthy"
    assert not any(op == "GetParameter" for op, _ in proxy.log)  # it gave up before fetching anything


@pytest.fixture
def scheduler_instances(aws, imds):
    """Three instances of the scheduler group's one launch template version (as three replacements would be),
    the last of them this node's; and two workers running."""
    aws.create_node_groups(CLUSTER, workers=2)
    aws.client("logs").create_log_group(logGroupName=conventions.log_group_name(CLUSTER))
    aws.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=conventions.node_group_name(CLUSTER, "scheduler"), MaxSize=3, DesiredCapacity=3)
    ids = [instance["InstanceId"] for instance in aws.group(CLUSTER, "scheduler")["Instances"]]
    aws.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=conventions.node_group_name(CLUSTER, "scheduler"), MaxSize=1)
    imds.instance_id, imds.tags = ids[-1], {**imds.tags, conventions.TAG_ROLE: "scheduler"}
    return ids


SCHEDULER_FAILED = Outcome(ExitCode.CERT_UNREADABLE, "error: secret analytics-scheduler-tls: not found")


def test_a_scheduler_failing_for_the_first_time_is_replaced(aws, scheduler_instances):
    AwsSource(CLUSTER, deadline_s=30).stopped("scheduler", SCHEDULER_FAILED)
    this = scheduler_instances[-1]
    assert failure_lines(aws, this)[0]["role"] == "scheduler"
    health = {item["InstanceId"]: item["HealthStatus"] for item in aws.group(CLUSTER, "scheduler")["Instances"]}
    assert health[this] == "Unhealthy"
    assert aws.group(CLUSTER, "worker")["DesiredCapacity"] == 2


def test_a_scheduler_that_keeps_failing_stands_the_cluster_down_instead_of_being_replaced_in_a_loop(
    aws, scheduler_instances, caplog,
):
    from daskfleet.aws.nodefailures import report_failure
    from daskfleet.scaling.defaults import DEFAULT_BOOT_FAILURE_LIMIT

    assert len(scheduler_instances) == DEFAULT_BOOT_FAILURE_LIMIT
    *earlier, this = scheduler_instances
    for instance in earlier:  # the replacements before this one reported the same failure
        report_failure(aws.client("logs"), CLUSTER, instance, "scheduler", SCHEDULER_FAILED, Deadline(30))
    AwsSource(CLUSTER, deadline_s=30).stopped("scheduler", SCHEDULER_FAILED)
    assert failure_lines(aws, this)[0]["line"] == SCHEDULER_FAILED.line  # reported like any failure
    assert aws.group(CLUSTER, "scheduler")["DesiredCapacity"] == 0  # not replaced again: no cost but storage
    workers = aws.group(CLUSTER, "worker")
    assert workers["DesiredCapacity"] == 0
    assert all(item["LifecycleState"].startswith("Terminat") for item in workers["Instances"])
    assert all(item["HealthStatus"] != "Unhealthy" for item in aws.group(CLUSTER, "scheduler")["Instances"])
    (said,) = [record.message for record in caplog.records if "not replacing it again" in record.message]
    assert said.startswith(f"the scheduler failed to start {DEFAULT_BOOT_FAILURE_LIMIT} times from launch template ")
    assert f"daskfleet.connect('{CLUSTER}') starts it" in said


def test_only_failures_of_the_same_role_and_launch_version_within_the_window_count():
    from daskfleet.aws.nodefailures import NodeFailure, repeated_failures

    def failed(instance: str, role: str = "scheduler", at: float = 1000.0) -> NodeFailure:
        return NodeFailure(instance, role, 66, "error: x", at)

    this = failed("i-this", at=2000.0)
    versions = {"i-this": "v2", "i-a": "v2", "i-b": "v2", "i-old": "v1", "i-w": "v2", "i-gone": "v2"}
    earlier = [failed("i-a"), failed("i-b", at=1999.0), failed("i-old"), failed("i-w", role="worker"),
               failed("i-gone", at=100.0), failed("i-this", at=1999.5)]  # its own line, already readable
    counted = repeated_failures(earlier, versions, this, window_s=1800)
    assert [failure.instance for failure in counted] == ["i-a", "i-b", "i-this"]
    assert repeated_failures([], {}, this, window_s=1800) == [this]  # nothing readable yet: this one still counts


def test_a_requested_exit_is_not_a_failure_and_a_failure_is_recorded_with_its_line(tmp_path):
    history = RunHistory(tmp_path / "restarts.json")
    history.started(100.0)
    history.ended(Outcome(ExitCode.RESTART_REQUESTED, "restarting"), 101.0)
    history.started(102.0)
    history.ended(Outcome(ExitCode.SCHEDULER_UNREACHABLE, "error: unreachable"), 103.0)
    history.started(104.0)  # killed: never said how it ended
    runs = history.runs()
    assert [run.failed for run in runs] == [False, True, True]
    assert runs[-1].describe() == "ended without an exit status (killed)"
