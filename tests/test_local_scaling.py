"""Adaptive workers on the local cluster, real processes: a backlog brings workers, the end of it retires them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

import daskfleet


def daskfleet_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskfleet", *args], capture_output=True, text=True, timeout=timeout)


# Its own (not support's): the cluster's processes import this module to run slow_square.
def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def audit_events(state, event: str) -> list[dict]:
    lines = (state / "audit.jsonl").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["event"] == event]


def slow_square(x: int) -> int:
    time.sleep(1.0)
    return x * x


@pytest.fixture
def adaptive(tmp_path):
    state = tmp_path / "state"
    up = daskfleet_cli(
        "local", "up", "--adapt", "0:4", "--adapt-interval", "0.5", "--adapt-cooldown", "2",
        "--idle-timeout", "0", "--no-client-timeout", "0", "--state-dir", str(state),
    )
    try:
        assert up.returncode == 0, up.stderr
        assert "adaptive 0..4 worker(s)" in up.stdout
        yield state
    finally:
        daskfleet_cli("local", "down", "--state-dir", str(state))


def test_a_backlog_scales_up_to_max_then_down_to_zero_retiring_without_losing_a_result(adaptive):
    state = adaptive
    with daskfleet.connect("local", state_dir=state, timeout=30) as client:
        # The smoke computation of `local up` started one worker; with nothing to do it goes again.
        wait_until(lambda: not client.scheduler_info()["workers"], 60, "the smoke computation's worker to retire")
        futures = client.map(slow_square, range(40), pure=False)
        wait_until(lambda: len(client.scheduler_info()["workers"]) == 4, 60, "4 workers")
        # They came for the backlog, while it still runs (40 one-second tasks keep 4 workers busy for 10 s).
        assert not all(future.done() for future in futures)
        results = client.gather(futures)
        assert results == [x * x for x in range(40)]
        # The backlog is done: workers retire down to what holds the results, their data moved first.
        wait_until(lambda: len(client.scheduler_info()["workers"]) <= 1, 60, "scale-down to the data's holder")
        assert all(future.status == "finished" for future in futures)  # nothing lost, nothing recomputed
        assert client.gather(futures) == results
        del futures
        wait_until(lambda: not client.scheduler_info()["workers"], 60, "scale-down to 0")
    requested = sum(event["count"] for event in audit_events(state, "workers-requested"))
    assert requested >= 5  # one for the smoke computation, four for the backlog
    retired = lambda: sum(len(event["workers"]) for event in audit_events(state, "workers-retired"))  # noqa: E731
    wait_until(lambda: retired() == requested, 30, "every requested worker to leave by retirement")
    for log in (state / "logs").glob("worker-*.log"):  # each left as a retired worker does: exit 0, one line
        # The scheduler counts a worker retired before its process writes its last line and exits.
        wait_until(lambda: "retired by the scheduler" in log.read_text(), 30, f"{log.name}'s last line")
        assert "daskfleet: error" not in log.read_text(), log.name
    status = daskfleet_cli("local", "status", "--state-dir", str(state)).stdout
    assert "0:4 (min:max)" in status and status.count("running") == 1  # the scheduler alone


def test_local_down_stops_workers_the_scaler_started(tmp_path):
    state = tmp_path / "state"
    up = daskfleet_cli("local", "up", "--adapt", "2:3", "--state-dir", str(state))
    try:
        assert up.returncode == 0, up.stderr
        recorded = json.loads((state / "cluster.json").read_text())
        workers = [node for node in recorded["nodes"] if node["role"] == "worker"]
        assert len(workers) == 2  # started by the scheduler's scaler, recorded for status and down
        assert daskfleet_cli("local", "status", "--state-dir", str(state)).stdout.count("running") == 3
    finally:
        down = daskfleet_cli("local", "down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    for node in recorded["nodes"]:
        assert not psutil.pid_exists(node["pid"]) or psutil.Process(node["pid"]).status() == psutil.STATUS_ZOMBIE


def test_workers_and_adapt_are_exclusive_and_a_bad_range_is_named():
    both = daskfleet_cli("local", "up", "--workers", "2", "--adapt", "0:4", timeout=60)
    assert both.returncode == 78 and "--workers and --adapt" in both.stderr
    bad = daskfleet_cli("local", "up", "--adapt", "4:1", timeout=60)
    assert bad.returncode == 2 and "'4:1' is not MIN:MAX" in bad.stderr


def test_idle_workers_retire_to_zero_the_scheduler_stays_and_a_client_brings_them_back(tmp_path):
    state = tmp_path / "state"
    up = daskfleet_cli("local", "up", "--workers", "1", "--no-client-timeout", "2", "--adapt-interval", "0.5",
                       "--state-dir", str(state))
    try:
        assert up.returncode == 0, up.stderr
        wait_until(lambda: audit_events(state, "workers-retired"), 60, "the idle worker to retire")
        # Idle until a client connects: on a loaded machine `local up`'s own readiness client may arrive after the
        # 2 s timeout, which ends one idle spell and starts another. Every spell names the timeout.
        idle = audit_events(state, "cluster-idle")
        assert idle and all("no-client timeout 2s" in event["reason"] for event in idle), idle
        status = daskfleet_cli("local", "status", "--state-dir", str(state)).stdout
        assert status.count("running") == 1 and "scheduler" in status  # the scheduler stays: it costs nothing
        with daskfleet.connect("local", state_dir=state, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)  # a connected client ends idleness: the worker comes back
            assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
    finally:
        daskfleet_cli("local", "down", "--state-dir", str(state))


def test_a_worker_backend_that_does_not_fit_the_source_is_one_clear_error(tmp_path):
    wrong = daskfleet_cli("node", "scheduler", "--source", f"dir:{tmp_path}", "--worker-backend", "aws:analytics",
                          timeout=60)
    assert wrong.returncode == 78
    assert wrong.stderr.strip() == "daskfleet: error: --worker-backend aws:analytics: needs --source aws:analytics " \
        "(the instance's own cluster)"
    unknown = daskfleet_cli("node", "scheduler", "--source", f"dir:{tmp_path}", "--worker-backend", "k8s:x", timeout=60)
    assert unknown.returncode == 78 and "unknown backend 'k8s:x'" in unknown.stderr
