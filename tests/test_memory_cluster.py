"""A worker over its memory limit on a running local cluster: ended from outside, named to its user, and nobody else hurt.

One cluster for the module: two workers with a limit of 1 GiB, ``allowed-failures`` 0 (the first death errs a
task, which keeps the module short). A task allocates far beyond the limit in steps of 100 MB while another
user computes on the other worker; a worker started by hand, as on an instance, runs under its own watcher.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from distributed import Client, KilledWorker, wait

import daskfleet
from daskfleet.cli import cli
from daskfleet.local import cluster as local
from daskfleet.local.state import LOCAL_CLUSTER, LocalCluster
from daskfleet.memory.watch import WORKER_RECORD_FILE
from daskfleet.node.spec import NodeSpec
from daskfleet.node.supervision import RunHistory
from daskfleet.trust import pki

from support import dashboard_context, security_for, wait_until

GiB = 2**30
LIMIT = "1GiB"
#: Far beyond the limit, and still harmless to a shared 24 GiB machine were nothing to end the task.
HOG_STEPS, HOG_STEP_BYTES = 40, 100_000_000


def _tasks():
    """Task functions the workers cannot import by name (this module is not theirs): cloudpickle sends them whole."""
    import time

    def hog(steps: int = HOG_STEPS, step: int = HOG_STEP_BYTES) -> int:
        """Allocate and hold ``step`` bytes at a time (written, so resident), with small pauses."""
        held = []
        for _ in range(steps):
            held.append(b"x" * step)
            time.sleep(0.05)
        return len(held)

    def square(x: int) -> int:
        return x * x

    def square_when(x: int, started: str, go: str) -> int:
        """Say it runs, then wait for ``go``: this task is running for certain while the test does its thing."""
        from pathlib import Path

        Path(started).touch()
        while not Path(go).exists():
            time.sleep(0.02)
        return x * x

    def block(i: int):
        import numpy as np

        return np.full(50_000_000 // 8, float(i))

    def first(block) -> float:
        return float(block[0] + block[-1]) / 2

    return hog, square, square_when, block, first


hog, square, square_when, _block, _first = _tasks()


def kernel_oom_lines() -> set[str] | None:
    """The kernel log's OOM-kill lines so far, or None where the log cannot be read (the reason is printed)."""
    try:
        result = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"kernel log not checked: dmesg could not run ({exc})")
        return None
    if result.returncode != 0:
        print(f"kernel log not checked: dmesg exited {result.returncode} ({result.stderr.strip()})")
        return None
    return {line for line in result.stdout.splitlines() if re.search(r"out of memory|oom-kill|Killed process", line, re.I)}


@dataclass
class MemoryCluster:
    running: LocalCluster
    ca: pki.IssuedCert
    state: Path

    def record(self, name: str):
        return LocalCluster.load(self.state).node(name)

    def kills(self, name: str | None = None) -> list[dict]:
        """The audit log's memory kills (of worker ``name``)."""
        lines = (self.state / "audit.jsonl").read_text().splitlines()
        return [entry for entry in map(json.loads, lines)
                if entry["event"] == "worker-memory-exceeded" and name in (None, entry["name"])]

    def client(self, user: str) -> Client:
        cert = pki.issue_certificate(self.ca, LOCAL_CLUSTER, "client", user=user)
        return Client(self.running.address, security=security_for(self.ca.cert_pem, cert), timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ca = pki.create_ca(LOCAL_CLUSTER)
    state = tmp_path_factory.mktemp("memory-cluster")
    # No scale-down meanwhile: the worker started by hand must not make the scaler retire one of the two.
    scaling = local.local_scaling(2, 2, idle_timeout_s=0, no_client_timeout_s=0, cooldown_s=3600)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "0")  # the supervisor's nodes inherit it
        running = local.up(state, scaling=scaling, ca=ca, memory_limit=LIMIT)
    yield MemoryCluster(running, ca, state)
    local.down(state)


@dataclass
class Kill:
    """What a user and an operator saw when a task took worker-0 far beyond its limit."""

    error: BaseException
    other_users_total: int
    pids_before: dict[str, tuple[int, float]]
    pids_after: dict[str, tuple[int, float]]
    new_oom_lines: set[str] | None
    next_result: int
    status: str


def _pids(cluster: MemoryCluster) -> dict[str, tuple[int, float]]:
    recorded = LocalCluster.load(cluster.state)
    return {node.name: (node.pid, node.create_time) for node in recorded.nodes}


@pytest.fixture(scope="module")
def kill(cluster, tmp_path_factory) -> Kill:
    oom_before = kernel_oom_lines()
    pids_before = _pids(cluster)
    flags = tmp_path_factory.mktemp("flags")
    started, go = flags / "started", flags / "go"
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=str(cluster.state)) as alice, cluster.client("bob") as bob:
        # Another user's work runs on worker-1 across the kill: its first task waits until the kill is over.
        squares = bob.map(square_when, range(20), started=str(started), go=str(go), workers=["worker-1"])
        total = bob.submit(sum, squares, workers=["worker-1"])
        wait_until(started.exists, 60, "bob's work running on worker-1")
        try:
            alice.submit(hog, workers=["worker-0"], pure=False).result(timeout=120)
        except KilledWorker as error:
            raised = error
        else:
            pytest.fail("the task that held 4 GB on a worker limited to 1 GiB completed")
        assert not total.done()
        go.touch()
        bob_total = total.result(timeout=120)
        wait_until(lambda: (cluster.record("worker-0").memory_kills == 1 and cluster.record("worker-0").process()
                            and len(alice.scheduler_info(n_workers=-1)["workers"]) == 2), 120, "worker-0 back")
        next_result = alice.submit(square, 7, workers=["worker-0"], pure=False).result(timeout=60)
    oom_after = kernel_oom_lines()
    status = CliRunner().invoke(cli, ["local", "status", "--state-dir", str(cluster.state)]).output
    return Kill(raised, bob_total, pids_before, _pids(cluster),
                None if oom_before is None or oom_after is None else oom_after - oom_before, next_result, status)


def test_the_users_future_fails_with_killed_worker_naming_the_memory_limit(kill):
    message = str(kill.error)
    assert isinstance(kill.error, KilledWorker)
    assert "exceeded its memory limit: it was ended at " in message and "above 95% of its 1.00 GiB limit" in message


def test_the_supervisor_ends_the_worker_long_before_the_kernel_could(kill, cluster):
    [event] = cluster.kills("worker-0")
    assert event["memory_limit"] == GiB and event["terminate"] == 0.95
    # Ended at its threshold, at most a few 100 MB steps past it: nowhere near the machine's memory.
    assert 0.95 * GiB < event["rss"] < 1.5 * GiB
    assert event["rss"] < psutil.virtual_memory().total / 4
    record = cluster.record("worker-0")
    assert (record.exit_code, record.memory_kills, record.restarts) == (80, 1, 1)
    assert record.memory_line.endswith("above 95% of its 1.00 GiB limit (distributed.worker.memory.terminate); "
                                       "ended by the local supervisor")
    assert "worker-0 exceeded its memory limit: " in (cluster.state / "logs" / "supervisor.log").read_text()
    if kill.new_oom_lines is not None:
        killed = kill.pids_before["worker-0"][0]
        assert not [line for line in kill.new_oom_lines if re.search(rf"\b{killed}\b", line)], kill.new_oom_lines


def test_the_scheduler_the_other_worker_and_another_users_work_are_untouched(kill):
    for name in ("scheduler", "worker-1"):
        assert kill.pids_after[name] == kill.pids_before[name], name
        assert psutil.Process(kill.pids_after[name][0]).is_running()
    assert kill.pids_after["worker-0"][0] != kill.pids_before["worker-0"][0]
    assert kill.other_users_total == sum(x * x for x in range(20))  # it ran across the kill, and completed correctly


def test_the_restarted_worker_computes_and_status_shows_why_it_restarted(kill):
    assert kill.next_result == 49
    [line] = [line for line in kill.status.splitlines() if line.strip().startswith("worker-0")]
    assert "running (restarted 1x); ended 1x for memory, the last: exceeded its memory limit: " in line
    assert "of its 1.00 GiB limit" in line


def test_the_kill_is_audited_and_counted_on_the_schedulers_metrics(kill, cluster):
    context = dashboard_context(cluster.state)  # the dashboard port asks for a certificate: Prometheus' metrics one
    with urllib.request.urlopen(cluster.running.dashboard.replace("/status", "/metrics"), context=context, timeout=30) as page:
        metrics = page.read().decode()
    [counted] = re.findall(r"^daskfleet_worker_memory_kills_total (\S+)$", metrics, re.M)
    assert float(counted) == len(cluster.kills()) >= 1
    [event] = cluster.kills("worker-0")
    assert event["identity"] == "worker.local" and event["worker"].startswith("tls://127.0.0.1:")


def test_the_worker_and_its_watcher_use_one_limit_and_the_worker_is_the_kernels_first_choice(kill, cluster):
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=str(cluster.state)) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
    for worker in workers:
        record = json.loads((local.node_runtime_dir(cluster.state, worker["name"]) / WORKER_RECORD_FILE).read_text())
        assert record["memory_limit"] == worker["memory_limit"] == GiB
        assert Path(f"/proc/{record['pid']}/oom_score_adj").read_text().strip() == "1000"


def test_spilled_data_goes_to_files_under_the_state_directory_and_comes_back_whole(cluster):
    """0.8 GB of results on a worker limited to 1 GiB: beyond distributed's target (0.6), it spills to disk."""
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=str(cluster.state)) as client:
        [directory] = [w["local_directory"] for w in client.scheduler_info(n_workers=-1)["workers"].values()
                       if w["name"] == "worker-1"]
        assert Path(directory).is_relative_to(cluster.state)  # on disk with the cluster's state, not in /tmp or /run
        blocks = [client.submit(_block, i, workers=["worker-1"], pure=False) for i in range(16)]
        wait(blocks, timeout=120)
        spilled = list((Path(directory) / "storage").iterdir())
        assert len(spilled) >= 4, f"{len(spilled)} spilled"
        firsts = client.gather([client.submit(_first, block, workers=["worker-1"], pure=False) for block in blocks])
        assert firsts == [float(i) for i in range(16)]
        del blocks


def test_a_worker_on_its_own_as_on_an_instance_is_ended_by_its_agents_watcher(cluster, tmp_path):
    """No supervisor watches this worker (it runs as the unit runs it): its agent's watcher process ends it."""
    cert = pki.issue_certificate(cluster.ca, LOCAL_CLUSTER, "worker", ip_addresses=(local.HOST,))
    spec = NodeSpec(cluster=LOCAL_CLUSTER, role="worker", scheduler_address=cluster.running.address,
                    listen_host=local.HOST, worker_port=0, name="by-hand", nthreads=1, memory_limit="600MiB")
    local.write_node_dir(tmp_path / "node", spec, cluster.ca, cert)
    history = RunHistory(tmp_path / "history.json")
    with open(tmp_path / "agent.log", "wb") as log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "daskfleet", "node", "worker", "--source", f"dir:{tmp_path / 'node'}",
             "--runtime-dir", str(tmp_path / "run"), "--restart-history", str(history.path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        watcher = wait_until(lambda: [child for child in psutil.Process(agent.pid).children()
                                      if "daskfleet.memory.watch" in child.cmdline()], 60, "the agent's watcher")[0]
        with daskfleet.connect(LOCAL_CLUSTER, state_dir=str(cluster.state)) as client:
            wait_until(lambda: "by-hand" in {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()},
                       60, "the worker started by hand")
            with pytest.raises(KilledWorker, match=r"above 95% of its 600\.00 MiB limit"):
                client.submit(hog, workers=["by-hand"], pure=False).result(timeout=120)
        assert agent.wait(60) == -9  # killed: its watcher speaks for it
        psutil.wait_procs([watcher], timeout=30)
        assert not watcher.is_running()  # the watcher ends with its worker
    finally:
        agent.kill()
    last = (tmp_path / "agent.log").read_text().strip().splitlines()[-1]
    assert re.fullmatch(r"daskfleet: error: exceeded its memory limit: .* above 95% of its 600\.00 MiB limit "
                        rf"\(distributed\.worker\.memory\.terminate\); ended by its memory watcher \(pid {watcher.pid}\)", last)
    [run] = history.runs()
    assert (run.code, run.line) == (80, last.removeprefix("daskfleet: "))
    [event] = cluster.kills("by-hand")
    assert event["memory_limit"] == 600 * 2**20
