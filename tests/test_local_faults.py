"""Faults on `make local`, real processes under the local supervisor: client.restart() (served by the spare agents),
a killed scheduler, a worker that keeps failing, and `local down` ending every process. One cluster for the module
(two workers kept, a third slot for the failing one); the last test stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from distributed import CancelledError
from distributed.comm.core import CommClosedError

import daskfleet
from daskfleet.errors import ExitCode
from daskfleet.local import cluster as local
from daskfleet.local.state import SUPERVISION_DIR, LocalCluster
from daskfleet.local.workers import LocalWorkerProcesses
from daskfleet.node.sources import SPEC_FILE
from daskfleet.node.supervision import BACKOFF, Run, RunHistory

from support import wait_until

#: Bounds on recovery, generous for a loaded 2-core machine; a hang fails the test instead of the suite.
RECOVERY_S = 60


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("faults") / "state"
    up = local.up(state, scaling=local.local_scaling(2, 3, idle_timeout_s=0, no_client_timeout_s=0))
    yield up
    local.down(state)


def record(state: Path, name: str):
    return LocalCluster.load(state).node(name)


def node_log(state: Path, name: str) -> str:
    return (state / "logs" / f"{name}.log").read_text()


def status(state: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "daskfleet", "local", "status", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=60)
    return done.stdout


WORKERS = ("worker-0", "worker-1")


def spare_agents(state: Path) -> dict[str, int]:
    """The supervisor's live children that are no node of ``cluster.json`` (its spare agents), by worker slot."""
    cluster = LocalCluster.load(state)
    nodes = {node.pid for node in cluster.nodes}
    found = {}
    for proc in psutil.Process(cluster.supervisor.pid).children():
        try:
            if proc.pid in nodes or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            command = proc.cmdline()
        except psutil.NoSuchProcess:
            continue
        found[Path(command[command.index("--source") + 1]).name] = proc.pid
    return found


def both_spares(state: Path) -> dict[str, int] | None:
    found = spare_agents(state)
    return found if set(found) == set(WORKERS) else None


def test_client_restart_brings_every_worker_back_fresh_from_its_spare_agent_and_computing(cluster):
    state = Path(cluster.state_dir)
    with daskfleet.connect("local", state_dir=state, timeout=30) as client:
        client.wait_for_workers(2, timeout=RECOVERY_S)
        spares = wait_until(lambda: both_spares(state), RECOVERY_S, "a spare agent for each running worker")
        before = {name: record(state, name).pid for name in WORKERS}
        assert set(client.run(os.getpid).values()) == set(before.values())  # the spares are no workers
        shown = status(state)
        assert all(f"{name:<12} pid {before[name]}" in shown and str(spares[name]) not in shown for name in WORKERS)
        client.run(lambda: setattr(__import__("sys"), "daskfleet_test_state", "before the restart"))
        busy = client.submit(time.sleep, 60, pure=False)  # a running task does not hold the restart up
        started = time.monotonic()
        client.restart()  # raises if the workers are not back within its timeout
        assert time.monotonic() - started < RECOVERY_S
        assert len(client.scheduler_info()["workers"]) == 2
        assert busy.status == "cancelled"
        assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        assert not any(client.run(lambda: hasattr(__import__("sys"), "daskfleet_test_state")).values())  # nothing kept
        assert set(client.run(os.getpid).values()) == set(spares.values())  # each slot's spare became its worker
    for name in WORKERS:
        assert "daskfleet: the scheduler restarts this worker (client.restart()): restarting" in node_log(state, name)
        wait_until(lambda name=name: record(state, name).pid == spares[name], 30, f"{name}'s new pid recorded")
        now = record(state, name)
        assert now.restarts >= 1 and now.exit_code == ExitCode.RESTART_REQUESTED


def test_a_killed_scheduler_comes_back_on_its_address_and_workers_and_the_client_rejoin(cluster):
    state = Path(cluster.state_dir)
    scheduler = record(state, "scheduler")
    with daskfleet.connect("local", state_dir=state, timeout=30) as client:
        client.wait_for_workers(2, timeout=RECOVERY_S)
        in_flight = client.submit(time.sleep, 60, pure=False)
        wait_until(lambda: in_flight.status == "pending" and client.processing() and any(client.processing().values()),
                   30, "the task to run")
        started = time.monotonic()
        os.kill(scheduler.pid, signal.SIGKILL)
        with pytest.raises(CancelledError, match="scheduler-connection-lost"):
            in_flight.result(timeout=RECOVERY_S)  # the client is told at once: the work in flight is lost
        wait_until(lambda: rejoined(client, 2), RECOVERY_S, "the scheduler back and both workers rejoined")
        assert client.submit(sum, [4, 5], pure=False).result(timeout=60) == 9
        assert time.monotonic() - started < RECOVERY_S
        assert client.scheduler_info()["address"] == cluster.address  # the same address
    after = record(state, "scheduler")
    assert after.pid != scheduler.pid and after.restarts == 1 and after.exit_code == -signal.SIGKILL
    for name in ("worker-0", "worker-1"):
        assert f"daskfleet: lost the scheduler {cluster.address}: restarting to rejoin it" in node_log(state, name)
    assert "scheduler    pid" in status(state) and "running (restarted 1x)" in status(state)


def rejoined(client, workers: int) -> bool:
    try:
        return client.status == "running" and len(client.scheduler_info(n_workers=-1)["workers"]) == workers
    except (OSError, CommClosedError):
        return False


def test_a_worker_that_keeps_failing_gives_up_and_status_shows_its_last_error(cluster):
    """Four failures already in the slot's history (older than the backoff): one more, and it gives up."""
    state = Path(cluster.state_dir)
    slot = state / "nodes" / "worker-2"
    spec = json.loads((slot / SPEC_FILE).read_text())
    dead = f"tls://127.0.0.1:{closed_port()}"
    (slot / SPEC_FILE).write_text(json.dumps({**spec, "scheduler_address": dead, "connect_timeout_s": 1.0}))
    now = time.time()
    RunHistory(state / SUPERVISION_DIR / "worker-2.json").write(
        [Run(now - 300 + i, now - 299 + i, ExitCode.SCHEDULER_UNREACHABLE, "error: unreachable") for i in range(4)])
    assert LocalWorkerProcesses(state).launch(1) == 1  # as the scaler asks for a worker
    wait_until(lambda: record(state, "worker-2").state == "gave up", RECOVERY_S, "worker-2 to give up")
    failed = record(state, "worker-2")
    assert failed.exit_code == ExitCode.GAVE_UP and failed.restarts == 1 and not failed.wanted
    expected = (f"error: gave up after {BACKOFF.give_up_after} failures within {BACKOFF.window_s:g}s; the last: "
                f"error: scheduler {dead} unreachable after 1s")
    assert failed.last_line.startswith(expected)
    assert f"worker-2     -          gave up (restarted 1x): exit 79: {expected}" in status(state)
    assert LocalWorkerProcesses(state).launch(1) == 0  # a slot that gave up is not used again
    wait_until(lambda: any('"worker-boot-failed"' in line and '"worker-2"' in line
                           for line in (state / "audit.jsonl").read_text().splitlines()),
               RECOVERY_S, "the scaler to audit the boot failure")


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_local_down_ends_the_spare_agents_with_the_nodes(cluster):
    """Last in this module: it stops the module's cluster."""
    state = Path(cluster.state_dir)
    spares = wait_until(lambda: both_spares(state), RECOVERY_S, "a spare agent for each running worker")
    local.down(state)
    for pid in spares.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"spare {pid} left"
