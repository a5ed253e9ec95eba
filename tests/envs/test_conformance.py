"""A worker installed from a different lock than the cluster's is refused by the scheduler, naming both."""

from __future__ import annotations

import json
import time

from envs.test_lock_and_install import install, locked

from daskfleet.errors import ExitCode
from daskfleet.local.state import LOCAL_CLUSTER
from daskfleet.trust import pki

from support import last_line, run_agent, start_agent, write_node_dir


def _wait_for(path, process, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the scheduler exited with {process.returncode}"
        assert time.monotonic() < deadline, f"no {path} within {timeout}s"
        time.sleep(0.1)


def test_a_worker_from_another_lock_is_refused_naming_both_fingerprints(
    home, channel, tmp_path, daskfleet_wheel, cluster_ca
):
    cluster_lock = locked(tmp_path, channel, "cluster", ["alpha ==1.0"])
    other_lock = locked(tmp_path, channel, "other", ["alpha ==1.1"])
    cluster_env = install(cluster_lock, tmp_path / "cluster-env", daskfleet_wheel)
    other_env = install(other_lock, tmp_path / "other-env", daskfleet_wheel)
    assert cluster_env["fingerprint"] != other_env["fingerprint"]

    scheduler_spec = {
        "cluster": LOCAL_CLUSTER, "role": "scheduler", "listen_host": "127.0.0.1", "scheduler_port": 0,
        "dashboard_port": 0, "expected_fingerprint": cluster_env["fingerprint"],
        "audit_log": str(tmp_path / "audit.jsonl"),
    }
    scheduler_cert = pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "scheduler", ip_addresses=("127.0.0.1",))
    node = write_node_dir(tmp_path / "scheduler", scheduler_spec, cluster_ca.cert_pem, scheduler_cert)
    runtime = tmp_path / "scheduler-run"
    scheduler = start_agent(
        "scheduler", node, runtime, tmp_path / "scheduler.log", python=str(tmp_path / "cluster-env" / "bin" / "python")
    )
    try:
        _wait_for(runtime / "scheduler.json", scheduler)
        address = json.loads((runtime / "scheduler.json").read_text())["address"]
        worker_spec = {
            "cluster": LOCAL_CLUSTER, "role": "worker", "scheduler_address": address, "listen_host": "127.0.0.1",
            "worker_port": 0, "nthreads": 1, "connect_timeout_s": 30.0,
        }
        worker_cert = pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "worker", ip_addresses=("127.0.0.1",))
        worker = write_node_dir(tmp_path / "worker", worker_spec, cluster_ca.cert_pem, worker_cert)
        result = run_agent(
            "worker", worker, tmp_path / "worker-run", python=str(tmp_path / "other-env" / "bin" / "python"), timeout=120
        )
    finally:
        scheduler.terminate()
        scheduler.wait(30)
    assert result.returncode == ExitCode.REFUSED_BY_SCHEDULER, result.stderr
    line = last_line(result.stderr)
    assert f"environment fingerprint {other_env['fingerprint']} differs from the cluster's {cluster_env['fingerprint']}" in line
    refusals = [json.loads(entry) for entry in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(entry["event"] == "worker-refused" and entry["fingerprint"] == other_env["fingerprint"] for entry in refusals)
