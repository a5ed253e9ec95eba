"""The scheduler's scaler on AWS (a moto server): exactly the retired workers' instances go; idle to zero, then wake.

The worker and scheduler groups are moto auto scaling groups like the stack's (scale-in
protected workers, a scheduler group of at most one). Workers are real Dask workers named
after the group's instance ids, as the agent's AWS source names them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time

import pytest
from aws.awsfake import CLUSTER, assert_fails
from distributed import Client, Scheduler, Worker

import daskfleet
from daskfleet import conventions
from daskfleet.aws.workers import AutoScalingWorkers
from daskfleet.errors import ExitCode
from daskfleet.scaling.policy import ScalingSpec
from daskfleet.scaling.runner import ScalingPlugin
from daskfleet.trust.audit import AuditLog

from support import start_agent, write_node_dir

WORKERS = conventions.node_group_name(CLUSTER, "worker")
SCHEDULERS = conventions.node_group_name(CLUSTER, "scheduler")


@pytest.fixture
def groups(aws):
    """The stack's two groups in moto: a scheduler group at 1 (at most 1) and an empty, protected worker group."""
    aws.create_node_groups(CLUSTER)
    return aws


def group(aws, name):
    return aws.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]


def instance_ids(aws, name) -> list[str]:
    return sorted(item["InstanceId"] for item in group(aws, name)["Instances"])


def instance_state(aws, instance) -> str:
    (reservation,) = aws.client("ec2").describe_instances(InstanceIds=[instance])["Reservations"]
    return reservation["Instances"][0]["State"]["Name"]


def events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def plugin_for(backend, tmp_path, **policy) -> ScalingPlugin:
    spec = ScalingSpec(**{"max_workers": 4, "cooldown_s": 0, "scale_down_targets": 1, "idle_timeout_s": 0,
                          "no_client_timeout_s": 0, **policy})
    return ScalingPlugin(spec, backend, AuditLog(tmp_path / "audit.jsonl"))


def test_the_group_grows_to_its_maximum_at_most(groups):
    backend = AutoScalingWorkers(CLUSTER, groups.client)
    assert backend.launch(3) == 3
    assert backend.launch(10) == 1  # the group's maximum is 4
    assert group(groups, WORKERS)["DesiredCapacity"] == 4 and len(instance_ids(groups, WORKERS)) == 4
    assert backend.outstanding() == 4


def test_the_terminated_instances_are_exactly_the_retired_workers(groups, tmp_path):
    backend = AutoScalingWorkers(CLUSTER, groups.client, hook_wait_s=1)
    backend.launch(3)
    ids = instance_ids(groups, WORKERS)

    async def scale_down() -> tuple[set[str], bytes]:
        async with Scheduler(port=0, dashboard_address=":0") as scheduler:
            workers = [await Worker(scheduler.address, name=name, nthreads=1) for name in ids]
            async with Client(scheduler.address, asynchronous=True) as client:
                (kept,) = await client.scatter([b"x" * 1_000_000], workers=[workers[0].address])
                plugin = plugin_for(backend, tmp_path)
                plugin.scheduler = scheduler
                decision = await plugin.step()
                await plugin.settle()
                assert set(decision.retire) == set(ids[1:])  # the workers holding nothing
                left = {str(ws.name) for ws in scheduler.workers.values()}
                data = await kept
            for worker in workers:
                await worker.close()
        return left, data

    left, data = asyncio.run(scale_down())
    assert left == {ids[0]} and data == b"x" * 1_000_000  # the data's holder stays, its data intact
    assert instance_ids(groups, WORKERS) == [ids[0]] and group(groups, WORKERS)["DesiredCapacity"] == 1
    assert [instance_state(groups, instance) for instance in ids[1:]] == ["terminated", "terminated"]
    retired = [event for event in events(tmp_path / "audit.jsonl") if event["event"] == "workers-retired"]
    assert [sorted(event["workers"]) for event in retired] == [ids[1:]]


def test_an_idle_cluster_goes_to_zero_then_a_user_wakes_it(groups, cluster_pki, tmp_path):
    backend = AutoScalingWorkers(CLUSTER, groups.client, hook_wait_s=1)
    backend.launch(2)
    ids = instance_ids(groups, WORKERS)
    (first_scheduler,) = instance_ids(groups, SCHEDULERS)

    async def go_idle() -> str:
        async with Scheduler(port=0, dashboard_address=":0") as scheduler:
            workers = [await Worker(scheduler.address, name=name, nthreads=1) for name in ids]
            plugin = plugin_for(backend, tmp_path, min_workers=2, no_client_timeout_s=0.5)
            plugin.scheduler = scheduler
            deadline = time.monotonic() + 30
            while not plugin.stopping:
                assert time.monotonic() < deadline, plugin.last_decision
                await plugin.step()
                await asyncio.sleep(0.1)
            await plugin.settle()
            await scheduler.finished()
            for worker in workers:
                await worker.close()
            return scheduler.status.name

    assert asyncio.run(go_idle()) == "closed"
    trail = [event["event"] for event in events(tmp_path / "audit.jsonl")]
    assert trail == ["cluster-idle", "workers-retiring", "workers-retired", "scheduler-capacity-zero", "scheduler-stopping"]
    assert instance_ids(groups, WORKERS) == [] and group(groups, WORKERS)["DesiredCapacity"] == 0
    assert all(instance_state(groups, instance) == "terminated" for instance in ids)
    assert group(groups, SCHEDULERS)["DesiredCapacity"] == 0 and instance_state(groups, first_scheduler) == "terminated"

    # Wake: the user's connect raises the scheduler group to 1; the new instance boots the scheduler.
    groups.put_secret(conventions.client_tls_secret_name(CLUSTER, "alice"), cluster_pki["client"].to_secret_json())
    port = free_port()
    booted: list[subprocess.Popen] = []
    booting = threading.Thread(target=boot_scheduler_when_launched, args=(groups, cluster_pki, tmp_path, port, booted))
    booting.start()
    try:
        with daskfleet.connect(CLUSTER, address=f"tls://127.0.0.1:{port}", user="alice", wake_timeout=60,
                               timeout=30) as client:
            assert client.scheduler_info()["address"].endswith(f":{port}")
        assert group(groups, SCHEDULERS)["DesiredCapacity"] == 1
    finally:
        booting.join(timeout=60)
        for proc in booted:
            proc.terminate()
            proc.wait(timeout=30)


def test_a_wake_that_times_out_says_what_is_missing(groups, cluster_pki, capsys):
    groups.client("autoscaling").set_desired_capacity(AutoScalingGroupName=SCHEDULERS, DesiredCapacity=0)
    groups.put_secret(conventions.client_tls_secret_name(CLUSTER, "alice"), cluster_pki["client"].to_secret_json())
    address = f"tls://127.0.0.1:{free_port()}"
    error = assert_fails(
        lambda: daskfleet.connect(CLUSTER, address=address, user="alice", wake_timeout=2),
        ExitCode.SCHEDULER_UNREACHABLE, f"{CLUSTER} did not wake within 2s", SCHEDULERS,
        f"the scheduler at {address} does not answer", "schedulerPortForwardCommand",
    )
    (instance,) = instance_ids(groups, SCHEDULERS)
    assert instance in str(error)
    shown = capsys.readouterr().err  # the wait showed its progress
    assert f"waking {CLUSTER}: {instance} is up, waiting for its scheduler" in shown


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def boot_scheduler_when_launched(aws, cluster_pki, tmp_path, port: int, booted: list) -> None:
    """What the new scheduler instance does once the group launches it: run the scheduler agent."""
    deadline = time.monotonic() + 60
    while not any(i["LifecycleState"] == "InService" for i in group(aws, SCHEDULERS)["Instances"]):
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)
    material = cluster_pki["scheduler"]
    node = tmp_path / "woken-scheduler"
    spec = {"cluster": CLUSTER, "role": "scheduler", "listen_host": "127.0.0.1", "scheduler_port": port,
            "dashboard_port": 0}
    write_node_dir(node, spec, material.ca_pem, None)
    (node / "tls" / "cert.pem").write_text(material.cert_pem)
    (node / "tls" / "key.pem").write_text(material.key_pem)
    booted.append(start_agent("scheduler", node, tmp_path / "woken-run", tmp_path / "woken.log"))


def test_a_retired_workers_instance_is_let_go_at_its_drain_hook_at_once():
    """moto has no lifecycle hooks: the calls the scheduler makes are checked with botocore's Stubber."""
    import boto3
    from botocore.stub import Stubber

    autoscaling = boto3.client("autoscaling", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    instance = "i-0123456789abcdef0"
    with Stubber(autoscaling) as stub:
        stub.add_response("terminate_instance_in_auto_scaling_group", {},
                          {"InstanceId": instance, "ShouldDecrementDesiredCapacity": True})
        stub.add_response("describe_auto_scaling_instances", {"AutoScalingInstances": [_instance(instance, "Terminating")]},
                          {"InstanceIds": [instance]})
        stub.add_response("describe_auto_scaling_instances",
                          {"AutoScalingInstances": [_instance(instance, "Terminating:Wait")]}, {"InstanceIds": [instance]})
        stub.add_response("complete_lifecycle_action", {}, {
            "LifecycleHookName": conventions.DRAIN_HOOK_NAME, "AutoScalingGroupName": WORKERS, "InstanceId": instance,
            "LifecycleActionResult": "CONTINUE",
        })
        backend = AutoScalingWorkers(CLUSTER, lambda service: autoscaling, hook_wait_s=10)
        backend.remove([instance, "worker-not-an-instance"])  # a misnamed worker's instance is left alone
        stub.assert_no_pending_responses()


def _instance(instance: str, state: str) -> dict:
    return {"InstanceId": instance, "AutoScalingGroupName": WORKERS, "AvailabilityZone": "us-east-1a",
            "LifecycleState": state, "HealthStatus": "HEALTHY", "ProtectedFromScaleIn": True}


def test_workers_that_keep_failing_to_start_are_not_asked_for_again(groups, tmp_path):
    """Each failing worker reported its line; the scaler holds launches and takes back what the group would replace."""
    from daskfleet.aws.calls import Deadline
    from daskfleet.aws.nodefailures import report_failure
    from daskfleet.node.supervision import Outcome

    groups.client("logs").create_log_group(logGroupName=conventions.log_group_name(CLUSTER))
    backend = AutoScalingWorkers(CLUSTER, groups.client, hook_wait_s=1)
    backend.launch(3)
    ids = instance_ids(groups, WORKERS)
    line = f"error: secret {conventions.node_tls_secret_name(CLUSTER, 'worker')}: not found"
    for instance in ids:
        report_failure(groups.client("logs"), CLUSTER, instance, "worker", Outcome(ExitCode.CERT_UNREADABLE, line),
                       Deadline(30))
    seen = backend.launch_failures(time.time() - 600)
    template = group(groups, WORKERS)["Instances"][0]["LaunchTemplate"]["LaunchTemplateId"]
    assert seen.current == f"launch template {template} version 1"
    assert sorted(failure.worker for failure in seen.failures) == ids
    assert {(failure.version, failure.code, failure.line) for failure in seen.failures} == {(seen.current, 66, line)}

    async def decide_twice() -> list:
        async with Scheduler(port=0, dashboard_address=":0") as scheduler:
            plugin = plugin_for(backend, tmp_path, min_workers=3)
            plugin.scheduler = scheduler
            plugin.core.expect(backend.outstanding())  # as when the scheduler starts: 3 coming
            return [await plugin.step(), await plugin.step()], plugin.state()

    (held, again), state = asyncio.run(decide_twice())
    assert (held.launch, held.withdraw) == (0, 3) and "3 workers from launch template" in held.reason
    assert (again.launch, again.withdraw) == (0, 0)
    assert group(groups, WORKERS)["DesiredCapacity"] == 0  # the group stops replacing them
    assert state["held"] == held.reason.removeprefix("not asking for more workers: ")
    trail = [event["event"] for event in events(tmp_path / "audit.jsonl")]
    assert trail == ["worker-boot-failed"] * 3 + ["worker-launches-held", "workers-withdrawn"]
