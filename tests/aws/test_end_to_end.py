"""Proof without AWS: boot a real cluster from what the Pulumi program declares.

The program is evaluated under mocks whose pulumi-tls resources produce real keys and
certificates; the SSM parameters and secrets it declares are loaded into a moto server; each
node gets its rendered user data and instance identity from its own local IMDSv2 endpoint and
runs the command that user data starts, through the agent's AWS source, with the credentials of
its node role. Each node gets its 24-hour certificate from the certificate vendor at boot,
proving its role; a configured user logs in the same way with their own AWS identity (no key
or certificate exists in the stack for either) and computes. Names on both sides come from
daskfleet.conventions, so a renamed secret or parameter breaks this test.

What is emulated: DNS. The stack's private hosted zone record (kept by its DNS updater) would
point the scheduler's name at the scheduler's private address; here every node's private
address is 127.0.0.1, and the worker spec's host is rewritten to it. Lambda: moto cannot run
the vendor function, so aws.e2e.VendorLambda answers lambda:Invoke with the function's handler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from aws.e2e import VendorLambda, exec_start, free_port, load_into_moto, node_role_credentials, user_credentials
from aws.imds import ImdsServer
from infra.program import evaluate_program, example_config

import daskfleet
from daskfleet import conventions
from daskfleet.aws import userdata
from daskfleet.node.sources import SCHEDULER_INFO_FILE
from daskfleet.aws.source import IMDS_ENDPOINT_ENV
from daskfleet.environments.records import current_fingerprint
from daskfleet.errors import ExitCode

NODE_ADDRESS = "127.0.0.1"


@pytest.fixture(scope="module")
def stack():
    # The image's environment is this one: its fingerprint is what the stack pins.
    return evaluate_program({**example_config(), "environmentFingerprint": current_fingerprint()})


def _boot(role: str, stack, tmp_path: Path, env: dict[str, str], imds: ImdsServer) -> subprocess.Popen:
    unit_role, argv = exec_start(stack.user_data[role])
    assert argv[0] == userdata.DASKFLEET_EXECUTABLE and unit_role == role
    run_dir = tmp_path / "run" / role
    run_dir.mkdir(parents=True)
    node_env = {**env, IMDS_ENDPOINT_ENV: imds.url, "RUNTIME_DIRECTORY": str(run_dir)}
    log = open(tmp_path / f"{role}.log", "wb")  # noqa: SIM115  closed with the test's tmp dir
    return subprocess.Popen([sys.executable, "-m", "daskfleet", *argv[1:]], env=node_env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"node exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {path.name}:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def test_a_cluster_boots_from_what_the_stack_declares_and_a_configured_user_computes(aws, stack, tmp_path, monkeypatch,
                                                                                   request):
    cluster, region = stack.outputs["cluster"], stack.outputs["region"]
    monkeypatch.setenv("AWS_REGION", region)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("DASKFLEET_HOME", str(tmp_path / "laptop"))  # where the user's login is kept
    user, principal = example_config()["users"][0].split("=", 1)
    for role in conventions.NODE_ROLES:
        assert "PRIVATE KEY" not in stack.user_data[role]
    # Ports of its own: other modules' clusters run at the same time under xdist.
    ports = {"scheduler": free_port(), "dashboard": free_port(), "worker": free_port()}
    load_into_moto(aws.endpoint, stack, cluster, region, scheduler_host=NODE_ADDRESS, ports=ports)
    vendor = VendorLambda.of_stack(aws.endpoint, stack, {cluster})
    request.addfinalizer(vendor.close)
    for name, value in vendor.env.items():
        monkeypatch.setenv(name, value)

    env = {key: value for key, value in os.environ.items() if key.startswith("AWS_") or key in ("PATH", "HOME")}
    roles = {role: node_role_credentials(aws.endpoint, stack, cluster, role, region) for role in conventions.NODE_ROLES}
    procs = []
    imds_servers = {
        role: ImdsServer(instance_id=f"i-0{index}23456789abcdef", region=region, private_ipv4=NODE_ADDRESS,
                         tags=stack.instance_tags[role], user_data=stack.user_data[role].encode()).start()
        for index, role in enumerate(conventions.NODE_ROLES)
    }
    try:
        scheduler = _boot("scheduler", stack, tmp_path, {**env, **roles["scheduler"]}, imds_servers["scheduler"])
        procs.append(scheduler)
        _wait_for(tmp_path / "run" / "scheduler" / SCHEDULER_INFO_FILE, scheduler, tmp_path / "scheduler.log")
        procs.append(_boot("worker", stack, tmp_path, {**env, **roles["worker"]}, imds_servers["worker"]))

        forwarded = stack.outputs["forwardedSchedulerAddress"].replace("localhost", NODE_ADDRESS).replace(
            f":{conventions.SCHEDULER_PORT}", f":{ports['scheduler']}")  # the forward's local port, here its own
        for name, value in user_credentials(aws.endpoint, principal, region).items():  # the user's own AWS login
            monkeypatch.setenv(name, value)
        with daskfleet.connect(cluster, address=forwarded, wake=False, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(sum, range(10)).result(timeout=60) == 45
            (worker,) = client.scheduler_info()["workers"].values()
            assert worker["host"] == NODE_ADDRESS
            assert worker["name"] == imds_servers["worker"].instance_id  # the scaler terminates workers by name

            # A spot interruption notice in instance metadata: the worker retires itself and exits cleanly.
            imds_servers["worker"].extra["meta-data/spot/instance-action"] = json.dumps(
                {"action": "terminate", "time": "2026-11-26T14:10:00Z"})
            assert procs[1].wait(timeout=60) == ExitCode.DRAINED
            assert "node is leaving (spot interruption notice" in (tmp_path / "worker.log").read_text()
            assert client.scheduler_info()["workers"] == {}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in imds_servers.values():
            server.stop()
    # Every certificate came from the vendor: the scheduler's, the worker's and the user's.
    assert sorted(role for _, role in vendor.invocations) == sorted(["scheduler", "worker", "user"])
    named = json.loads(stack.parameters[conventions.spec_parameter_name(cluster, "worker")])["vendor_function"]
    assert {function for function, _ in vendor.invocations} == {named}
    audit = (tmp_path / "run" / "scheduler" / "audit.jsonl").read_text()
    assert f'"identity": "{user}"' in audit
    # The same trail reached the cluster's log group, so it outlives the scheduler's instance.
    logs = boto3.client("logs", region_name=region, endpoint_url=aws.endpoint)
    stream = f"audit/{imds_servers['scheduler'].instance_id}"
    shipped = [e["message"] for e in logs.get_log_events(
        logGroupName=conventions.log_group_name(cluster), logStreamName=stream)["events"]]
    assert shipped == audit.splitlines()
