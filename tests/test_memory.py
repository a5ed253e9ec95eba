"""Memory limits without a nanny: the rule the watchers apply, what they read and record, and how they end a worker."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import psutil
import pytest
from distributed import KilledWorker
from distributed.core import Status
from distributed.scheduler import WorkerState

from daskfleet.errors import DaskfleetError, ExitCode
from daskfleet.local.commands import _node_line
from daskfleet.local.state import NodeProcess
from daskfleet.local.supervisor import Supervisor
from daskfleet.memory.policy import (
    MemoryKill, TerminatePolicy, cgroup_memory_limit, exceeds, worker_memory_limit,
)
from daskfleet.memory.scheduler import MemoryKilledWorker, _explained
from daskfleet.memory.watch import MemoryWatch, MemoryWatches, WatchedWorker, end_worker
from daskfleet.node.supervision import BACKOFF, RULE, Run, RunHistory, before_start

from support import wait_until

GiB = 2**30


def test_the_terminate_rule_is_read_from_distributeds_own_keys_with_the_users_overrides():
    assert TerminatePolicy.from_config() == TerminatePolicy(0.95, 0.1)  # distributed's defaults
    with dask.config.set({"distributed.worker.memory.terminate": 0.8, "distributed.worker.memory.monitor-interval": "250ms"}):
        assert TerminatePolicy.from_config() == TerminatePolicy(0.8, 0.25)
    with dask.config.set({"distributed.worker.memory.terminate": False}):
        assert TerminatePolicy.from_config().fraction is None  # as with the nanny: never ended for memory


@pytest.mark.parametrize(("key", "value", "named"), [
    ("distributed.worker.memory.terminate", "lots", "'lots'"),
    ("distributed.worker.memory.terminate", -0.5, "-0.5"),
    ("distributed.worker.memory.monitor-interval", "0ms", "'0ms'"),
    ("distributed.worker.memory.monitor-interval", "fast", "'fast'"),
])
def test_a_bad_terminate_setting_is_one_error_naming_the_key_and_the_value(key, value, named):
    with dask.config.set({key: value}), pytest.raises(DaskfleetError) as raised:
        TerminatePolicy.from_config()
    assert raised.value.message.startswith(f"{key}: got {named}; accepted: ")
    assert raised.value.exit_code == ExitCode.CONFIG


def test_a_worker_is_ended_only_above_the_fraction_as_the_nanny_does():
    assert not exceeds(95, 100, 0.95)  # the nanny returns while memory / limit <= terminate
    assert exceeds(96, 100, 0.95)


def _cgroup(tmp_path: Path, levels: dict[str, dict[str, str]]) -> tuple[Path, Path]:
    root = tmp_path / "sys-fs-cgroup"
    for path, files in levels.items():
        directory = root / path.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text + "\n")
    unit = max(levels, key=len)
    (tmp_path / "cgroup").write_text(f"0::{unit}\n")
    return tmp_path / "cgroup", root


def test_the_workers_limit_is_capped_by_its_own_cgroup_which_distributed_does_not_read(tmp_path):
    """An instance's unit: MemoryHigh on the unit, no limit above it ('max'); the unit's high caps the worker."""
    cgroup, root = _cgroup(tmp_path, {
        "/": {}, "/system.slice": {"memory.max": "max", "memory.high": "max"},
        "/system.slice/system-daskfleet\\x2dnode.slice/daskfleet-node@worker.service": {
            "memory.high": str(9 * GiB), "memory.max": str(10 * GiB)},
    })
    assert cgroup_memory_limit(cgroup, root) == 9 * GiB
    assert worker_memory_limit("auto", 1, 9 * GiB) <= 9 * GiB
    assert worker_memory_limit("1GiB", 1, 9 * GiB) == GiB  # below the cgroup's: the spec's own
    assert worker_memory_limit("1GiB", 1, None) == GiB
    assert worker_memory_limit(None, 1, 9 * GiB) is None  # no limit: nothing to enforce


def test_a_parent_slices_lower_limit_counts_and_no_cgroup_v2_means_none(tmp_path):
    cgroup, root = _cgroup(tmp_path, {"/user.slice": {"memory.max": str(3 * GiB)}, "/user.slice/app.scope": {}})
    assert cgroup_memory_limit(cgroup, root) == 3 * GiB
    v1 = tmp_path / "cgroup-v1"
    v1.write_text("4:memory:/process_api/x\n1:cpu:/\n")
    assert cgroup_memory_limit(v1, root) is None
    assert cgroup_memory_limit(tmp_path / "missing", root) is None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _record(tmp_path: Path, pid: int, limit: int | None, terminate: float | None = 0.5, **extra) -> Path:
    target = WatchedWorker(pid=pid, name="worker-0", address="tls://127.0.0.1:1", scheduler_address="tls://127.0.0.1:2",
                           memory_limit=limit, terminate=terminate, interval_s=0.1, tls=("ca", "cert", "key"), **extra)
    path = tmp_path / f"worker-{time.monotonic_ns()}.json"
    path.write_text(target.to_json())
    return path


def test_watches_read_one_processs_rss_each_at_the_workers_interval_and_find_it_over_its_threshold(tmp_path):
    """This test process stands for the workers: its RSS is far above half of 1 MB, and far below half of 1 TB."""
    clock = Clock()
    pid = os.getpid()
    rss = psutil.Process(pid).memory_info().rss
    watches = MemoryWatches(clock)
    over, under = _record(tmp_path, pid, 10**6), _record(tmp_path, pid, 10**12)
    [(name, watch, kill)] = watches.check({"worker-0": (pid, over), "worker-1": (pid, under)})
    assert (name, watch.target.pid) == ("worker-0", pid)
    assert kill.limit == 10**6 and kill.fraction == 0.5 and kill.rss >= rss / 2
    assert watches.wait_s() == pytest.approx(0.1)  # the interval the workers read from their configuration
    clock.now += 0.05
    assert watches.wait_s() == pytest.approx(0.05)
    assert watches.check({"worker-0": (pid, over), "worker-1": (pid, under)}) == []  # not due: nothing read
    clock.now += 0.05
    assert watches.check({"worker-0": (pid, over), "worker-1": (pid, under)}) == []  # worker-0 ended: not again
    assert watches.wait_s() == pytest.approx(0.1)  # worker-1 is still watched, at one cadence for all
    clock.now += 0.1
    assert watches.check({"worker-0": (pid, _record(tmp_path, pid, 10**6))}) != []  # its next run is watched anew


@pytest.mark.parametrize("why", ["terminate false", "no limit", "another process", "not registered yet"])
def test_a_worker_is_not_watched_without_a_limit_a_fraction_or_its_own_record(tmp_path, why):
    pid = os.getpid()
    record = {
        "terminate false": lambda: _record(tmp_path, pid, 10**6, terminate=None),
        "no limit": lambda: _record(tmp_path, pid, None),
        "another process": lambda: _record(tmp_path, pid + 1, 10**6),  # a record left by an earlier run
        "not registered yet": lambda: tmp_path / "absent.json",
    }[why]()
    watches = MemoryWatches(Clock())
    assert watches.check({"worker-0": (pid, record)}) == []
    assert watches.wait_s() is None


def test_a_worker_is_frozen_then_recorded_and_said_then_ended_even_when_its_scheduler_cannot_be_told(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        history = RunHistory(tmp_path / "history.json")
        history.started(time.time())
        target = WatchedWorker.read(_record(tmp_path, proc.pid, GiB, terminate=0.95, history=str(history.path)))
        watch = MemoryWatch(target)  # its line to the scheduler cannot open: no such files
        said = []

        def say(outcome) -> None:  # the signal is delivered as the process is next scheduled: wait for it
            frozen = wait_until(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED, 30, "SIGSTOP")
            said.append((outcome, frozen, proc.poll()))

        outcome = end_worker(watch, MemoryKill(proc.pid, 1090 * 2**20, GiB, 0.95), by="a test", say=say,
                             end=lambda: proc.send_signal(signal.SIGKILL))
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
    assert said == [(outcome, True, None)]  # frozen, not ended, while it is told, recorded and said
    assert outcome.code == ExitCode.MEMORY_EXCEEDED
    assert outcome.line == ("error: exceeded its memory limit: 1.06 GiB of process memory (RSS) above 95% of "
                            "its 1.00 GiB limit (distributed.worker.memory.terminate); ended by a test")
    [run] = history.runs()
    assert (run.code, run.line) == (80, outcome.line)


def test_a_memory_kill_restarts_after_the_backoff_like_a_transient_failure():
    assert RULE.restarts(ExitCode.MEMORY_EXCEEDED)
    runs = [Run(0.0, 10.0, int(ExitCode.MEMORY_EXCEEDED), "error: exceeded its memory limit: …")]
    assert runs[0].failed
    verdict = before_start(runs, 10.0, BACKOFF)
    assert verdict.wait_s == BACKOFF.first_s and verdict.last.startswith("error: exceeded its memory limit")


def test_the_supervisor_records_a_child_it_ended_with_the_code_it_gives_and_restarts_it():
    supervisor = Supervisor()
    supervisor.add("worker-0", lambda: subprocess.Popen(["sleep", "60"], start_new_session=True))
    first = supervisor.children["worker-0"].proc
    try:
        supervisor.end("worker-0", ExitCode.MEMORY_EXCEEDED)
        first.wait(10)
        [event] = supervisor.poll()
        assert (event.returncode, event.restarting) == (80, True)
    finally:
        supervisor.stop(["worker-0"], timeout=5)


def test_the_supervisor_wakes_on_an_exit_and_keeps_no_descriptor_of_a_reaped_program():
    """It waits on a pidfd per running program (an exit wakes it); restarts over days must not leak descriptors."""
    me = psutil.Process()
    before = me.num_fds()
    supervisor = Supervisor()
    supervisor.add("worker-0", lambda: subprocess.Popen([sys.executable, "-c", "pass"]))
    child = supervisor.children["worker-0"]
    first, fd = child.proc, child.exit_fd
    assert fd is not None
    try:
        exits = []
        while not exits:  # the exit wakes the wait long before its 60 s; a restart falls due 0.1 s later
            supervisor.wait(60)
            exits = supervisor.poll()
        assert [(event.returncode, event.restarting) for event in exits] == [(0, False)]
        assert child.proc is None and child.exit_fd is None and me.num_fds() == before
    finally:
        supervisor.stop(["worker-0"], timeout=5)
    assert first.returncode == 0


def test_the_killed_worker_of_a_worker_ended_for_memory_says_so_and_names_the_limit():
    worker = WorkerState(address="tls://127.0.0.1:4000", name="worker-0", nthreads=1, memory_limit=GiB, pid=4242,
                         status=Status.running, local_directory="/tmp", nanny=None, server_id="w0")
    default = pickle.dumps(KilledWorker(task="hog-1", last_worker=worker, allowed_failures=0))
    error = pickle.loads(_explained(default, MemoryKill(4242, 1090 * 2**20, GiB, 0.95)))
    assert isinstance(error, KilledWorker) and error.task == "hog-1" and error.memory_limit == GiB
    assert ("The last, tls://127.0.0.1:4000, exceeded its memory limit: it was ended at 1.06 GiB of process memory, "
            "above 95% of its 1.00 GiB limit") in str(error)
    other = pickle.dumps(MemoryError("not a KilledWorker"))
    assert _explained(other, MemoryKill(1, 2, 3, 0.5)) is other
    assert pickle.loads(pickle.dumps(error)).args == error.args  # the client unpickles it
    assert isinstance(error, MemoryKilledWorker)


def test_local_status_shows_a_worker_ended_for_memory_after_its_restart():
    line = ("error: exceeded its memory limit: 1.02 GiB of process memory (RSS) above 95% of its 1.00 GiB limit "
            "(distributed.worker.memory.terminate); ended by the local supervisor")
    record = NodeProcess("worker-0", "worker", os.getpid(), psutil.Process().create_time(), "log", state="running",
                         exit_code=80, last_line=line, restarts=1, memory_kills=1, memory_line=line)
    shown = _node_line(record)
    assert f"pid {os.getpid()}" in shown and "running (restarted 1x)" in shown
    assert shown.endswith("; ended 1x for memory, the last: exceeded its memory limit: 1.02 GiB of process memory "
                          "(RSS) above 95% of its 1.00 GiB limit (distributed.worker.memory.terminate); ended by the "
                          "local supervisor")


def test_a_record_that_is_not_one_leaves_its_worker_unwatched_with_a_warning(tmp_path, caplog):
    record = tmp_path / "worker.json"
    record.write_text('{"pid": 1')
    assert MemoryWatches(Clock()).check({"worker-0": (os.getpid(), record)}) == []
    assert "is not a worker's record (JSONDecodeError" in caplog.text


def test_a_line_to_the_scheduler_that_broke_since_its_watch_began_is_opened_anew_to_tell_the_kill(tmp_path, monkeypatch):
    """The line opens as the watch begins; a scheduler restarted meanwhile has closed it: one more connection."""
    from distributed.comm.core import CommClosedError

    from daskfleet.memory.watch import SchedulerLine

    class Comm:
        def __init__(self, broken: bool):
            self.broken, self.sent, self.aborted = broken, [], False

        async def write(self, message):
            if self.broken:
                raise CommClosedError("the scheduler restarted")
            self.sent.append(message)

        async def read(self):
            return "OK"

        def abort(self):
            self.aborted = True

    old, new = Comm(broken=True), Comm(broken=False)
    opened = iter([old, new])

    async def connect(self):
        return next(opened)

    monkeypatch.setattr(SchedulerLine, "_connect", connect)
    line = SchedulerLine(WatchedWorker.read(_record(tmp_path, 4242, GiB, terminate=0.95)))
    assert line.tell(MemoryKill(4242, 2 * GiB, GiB, 0.95)) is None
    assert new.sent == [{"op": "daskfleet_worker_memory_exceeded", "reply": True, "worker": "tls://127.0.0.1:1",
                         "pid": 4242, "rss": 2 * GiB, "memory_limit": GiB, "terminate": 0.95}]
    assert new.aborted  # the worker is ended next: nothing more to say on it
