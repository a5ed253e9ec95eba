"""The local cluster's supervisor: it starts the nodes and restarts them as systemd does on instances.

One background process per local cluster (``daskfleet local supervise``), started by ``local up``
and stopped by ``local down``. It owns every node process: the scheduler from the start, and each
worker the scheduler's scaler asks for (``LocalWorkerProcesses`` marks a worker slot wanted in
``cluster.json``, or not wanted once it retired it). A node that exits is restarted after the
rule's delay (``daskfleet.node.supervision.RULE``, the one the unit renders) unless it stopped on
request or for good; the agent waits out its own backoff and gives up by itself (its history is
``<state>/supervision/<name>.json``). Every start builds the command line anew with
``node_python``, so an environment published to the cluster is used from the next restart on.
Each running worker slot has a spare agent, pre-started and pre-imported, that becomes the slot's
next worker (``daskfleet.local.spares``): a restart costs the exit, a certificate and a registration.
It also follows each worker's memory and ends a worker above its limit as distributed's nanny would
(``daskfleet.memory.watch``), recording exit 80 for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ..errors import ExitCode
from ..memory.watch import WORKER_RECORD_FILE, MemoryWatches, end_worker
from ..node.supervision import NEVER_RESTART, RULE, Outcome, RestartRule
from .cluster import STOP_TIMEOUT_S, end_processes, node_log, node_runtime_dir, popen_node, signal_group
from .spares import WORKER_OPTIONS, Spares
from .state import SCHEDULER, LocalCluster, NodeProcess, locked

logger = logging.getLogger("daskfleet.supervisor")

#: How often the supervisor reads what the scaler wants; an exit wakes it at once (``Supervisor.wait``).
POLL_S = 0.1


@dataclass
class Child:
    """One supervised program: how to start it, and what the supervisor knows of it."""

    name: str
    start: Callable[[], subprocess.Popen]
    proc: subprocess.Popen | None = None
    #: Start times within the start-limit interval (the backstop against crash loops).
    starts: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    #: False once it must not be restarted any more (retired, or the supervisor is stopping it).
    keep: bool = True
    stop_by: float | None = None
    #: Ended by the supervisor (``Supervisor.end``): its exit is recorded with this code, not the signal.
    exit_as: int | None = None
    #: A pidfd of the running process, readable once it exits (None where the kernel has none).
    exit_fd: int | None = None

    @property
    def done(self) -> bool:
        """Not running, and no restart is coming."""
        return self.proc is None and self.restart_at is None


@dataclass(frozen=True)
class Exit:
    """A supervised program ended: with ``returncode`` (negative: a signal); restarted or not."""

    name: str
    returncode: int
    restarting: bool
    gave_up: str = ""
    #: It had been released (retired, or stopping): its record says whether it is wanted again.
    released: bool = False


class Supervisor:
    """Starts programs and restarts them by a RestartRule: the part of systemd a node relies on."""

    def __init__(self, rule: RestartRule = RULE, clock: Callable[[], float] = time.monotonic):
        self.rule = rule
        self.clock = clock
        self.children: dict[str, Child] = {}

    def add(self, name: str, start: Callable[[], subprocess.Popen]) -> Child:
        child = Child(name, start)
        self.children[name] = child
        self._start(child)
        return child

    def release(self, name: str, grace_s: float = STOP_TIMEOUT_S) -> None:
        """Never restart ``name`` again; end it if it is still running after ``grace_s``."""
        child = self.children.get(name)
        if child is not None and child.keep:
            child.keep, child.restart_at = False, None
            child.stop_by = self.clock() + grace_s

    def poll(self) -> list[Exit]:
        """Reap what ended, restart what is due, end released programs that overstayed; what ended is returned."""
        now = self.clock()
        exits = []
        for child in list(self.children.values()):
            if child.proc is not None and (code := child.proc.poll()) is not None:
                if child.exit_as is not None:  # ended by ``end``: recorded with the code it was given
                    code, child.exit_as = child.exit_as, None
                child.proc = None
                _close_exit_fd(child)
                exits.append(self._ended(child, code, now))
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restart_at = None
                self._start(child)
            if child.proc is not None and child.stop_by is not None and now >= child.stop_by:
                logger.warning("%s did not stop %gs after it was released; ending it", child.name, STOP_TIMEOUT_S)
                signal_group(psutil.Process(child.proc.pid), signal.SIGTERM)
                child.stop_by = now + STOP_TIMEOUT_S
        return exits

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, waking as soon as a running program exits or a restart falls due."""
        now = self.clock()
        timeout = min([timeout, *(child.restart_at - now for child in self.children.values()
                                  if child.restart_at is not None)])
        fds = [child.exit_fd for child in self.children.values() if child.proc is not None and child.exit_fd is not None]
        if timeout <= 0:
            return
        if fds:
            select.select(fds, [], [], timeout)
        else:
            time.sleep(timeout)

    def end(self, name: str, code: int) -> None:
        """End ``name`` at once (SIGKILL to its process group) and record its exit as ``code``; restarted by the rule."""
        child = self.children[name]
        if child.proc is not None and child.proc.poll() is None:
            child.exit_as = code
            signal_group(psutil.Process(child.proc.pid), signal.SIGKILL)

    def stop(self, names: list[str], timeout: float = STOP_TIMEOUT_S) -> list[str]:
        """Stop these programs for good (SIGTERM, then SIGKILL); the names of any that survived both."""
        procs = []
        for name in names:
            child = self.children.get(name)
            if child is None:
                continue
            child.keep, child.restart_at = False, None
            if child.proc is not None and child.proc.poll() is None:
                procs.append((name, psutil.Process(child.proc.pid)))
        survivors = end_processes([proc for _, proc in procs], timeout)
        for name in names:  # reap
            child = self.children.get(name)
            if child is not None and child.proc is not None:
                child.proc.poll()
                _close_exit_fd(child)
        return [name for name, proc in procs if proc in survivors]

    def _start(self, child: Child) -> None:
        now = self.clock()
        child.starts.append(now)
        while child.starts and child.starts[0] < now - self.rule.start_limit_interval_s:
            child.starts.popleft()
        child.proc = child.start()
        _close_exit_fd(child)
        with contextlib.suppress(OSError, AttributeError):  # no pidfd (an old kernel): ``wait`` sleeps its timeout
            child.exit_fd = os.pidfd_open(child.proc.pid)

    def _ended(self, child: Child, code: int, now: float) -> Exit:
        restarting = child.keep and self.rule.restarts(code)
        gave_up = ""
        if restarting and len(child.starts) >= self.rule.start_limit_burst:
            restarting = False
            gave_up = (f"started {len(child.starts)} times within {self.rule.start_limit_interval_s}s "
                       "(the supervisor's start limit): not restarting it")
        if restarting:
            child.restart_at = now + self.rule.delay_s(code)
        return Exit(child.name, code, restarting, gave_up, released=not child.keep)


def _close_exit_fd(child: Child) -> None:
    if child.exit_fd is not None:
        os.close(child.exit_fd)
        child.exit_fd = None


def node_state(code: int, restarting: bool, gave_up: str) -> str:
    """The state ``local status`` shows for a node that just exited with ``code``: failed only when for good."""
    if restarting:
        return "restarting"
    if gave_up or code == ExitCode.GAVE_UP:
        return "gave up"
    if code in NEVER_RESTART:
        return "failed"
    return {ExitCode.RETIRED: "retired", ExitCode.DRAINED: "drained"}.get(code, "stopped")


def last_line(log: str) -> str:
    """The last ``daskfleet: …`` line a node wrote: the line of its exit."""
    try:
        with open(log, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 16384))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.removeprefix("daskfleet: ") for line in reversed(lines) if line.startswith("daskfleet: ")), "")


class LocalSupervisor:
    """Keeps ``cluster.json``'s wanted nodes running with ``Supervisor``; records each start and exit there."""

    def __init__(self, state_dir: Path, supervisor: Supervisor | None = None):
        self.state_dir = Path(state_dir)
        self.supervisor = supervisor or Supervisor()
        self.memory = MemoryWatches()
        self.spares = Spares(self.state_dir)

    def run(self) -> None:
        """Until ``local down`` marks the cluster stopping (or SIGTERM): workers stop first, then the scheduler."""
        stopping = False

        def on_term(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        logger.info("supervising the local cluster in %s", self.state_dir)
        while not stopping:
            stopping = not self.step()
            due = self.memory.wait_s()  # a worker's memory check, at its own interval
            self.supervisor.wait(POLL_S if due is None else min(POLL_S, due))
        self.stop_all()

    def step(self) -> bool:
        """One round: end workers above their memory limit, reap and restart, start what the scaler asked for; False
        once the cluster is stopping."""
        self.watch_memory()
        exits = self.supervisor.poll()
        for event in exits:
            self._log_exit(event)
        with locked(self.state_dir):
            cluster = LocalCluster.load(self.state_dir)
            if cluster is None or cluster.stopping:
                return False
            changed = bool(exits)
            for event in exits:
                self._record_exit(cluster, event)
            for record in cluster.nodes:
                changed |= self._reconcile(record)
            if changed:
                cluster.save()
        self.keep_spares()
        return True

    def stop_all(self) -> None:
        """Spares and workers first, so workers leave while the scheduler is up; then the scheduler."""
        self.spares.stop()
        names = list(self.supervisor.children)
        for phase in ([name for name in names if name != SCHEDULER], [SCHEDULER]):
            stuck = self.supervisor.stop(phase)
            if stuck:
                logger.error("could not stop: %s", ", ".join(stuck))
        logger.info("stopped every node of %s", self.state_dir)

    def keep_spares(self) -> None:
        """A spare agent for each worker slot whose worker has registered (so its imports do not slow the worker's
        start); none for a slot being let go."""
        workers = {name: child for name, child in self.supervisor.children.items() if name != SCHEDULER and child.keep}
        registered = {name: child.proc.pid for name, child in workers.items() if child.proc is not None
                      and (node_runtime_dir(self.state_dir, name) / WORKER_RECORD_FILE).exists()}
        self.spares.keep(set(workers), registered)

    def watch_memory(self) -> None:
        """End each worker whose RSS is above ``terminate`` of its memory limit, at distributed's interval."""
        workers = {name: (child.proc.pid, node_runtime_dir(self.state_dir, name) / WORKER_RECORD_FILE)
                   for name, child in self.supervisor.children.items() if name != SCHEDULER and child.proc is not None}
        for name, watch, kill in self.memory.check(workers):
            end_worker(watch, kill, by="the local supervisor", say=lambda outcome, name=name: self._say(name, outcome),
                       end=lambda name=name: self.supervisor.end(name, ExitCode.MEMORY_EXCEEDED))

    def _say(self, name: str, outcome: Outcome) -> None:
        """The line in the supervisor's log, and as the node's own last line (``local status`` shows it)."""
        logger.warning("%s %s", name, outcome.line.removeprefix("error: "))
        with open(node_log(self.state_dir, name), "a") as log:
            log.write(f"daskfleet: {outcome.line}\n")

    def _reconcile(self, record: NodeProcess) -> bool:
        """Start a wanted node the supervisor does not run yet; release one no longer wanted. Whether it changed."""
        child = self.supervisor.children.get(record.name)
        if record.wanted and (child is None or child.done):
            child = self.supervisor.add(record.name, self._starter(record))
            self._note_start(record, child)
            return True
        if not record.wanted and child is not None and child.keep:
            self.supervisor.release(record.name)
        if child is not None and child.proc is not None and child.proc.pid != record.pid:
            self._note_start(record, child)  # restarted since the last round
            return True
        return False

    def _starter(self, record: NodeProcess) -> Callable[[], subprocess.Popen]:
        if record.role == "scheduler":  # it sizes the workers from the slots
            return lambda: popen_node(self.state_dir, record.name, record.role, "--worker-backend", f"local:{self.state_dir}")

        def start_worker() -> subprocess.Popen:  # its spare, if it has one that fits; else a fresh agent
            return self.spares.take(record.name) or popen_node(self.state_dir, record.name, record.role, *WORKER_OPTIONS)

        return start_worker

    @staticmethod
    def _note_start(record: NodeProcess, child: Child) -> None:
        assert child.proc is not None
        record.pid = child.proc.pid
        record.create_time = psutil.Process(child.proc.pid).create_time()
        record.state = "running"

    def _record_exit(self, cluster: LocalCluster, event: Exit) -> None:
        record = next((node for node in cluster.nodes if node.name == event.name), None)
        if record is None:
            return
        record.exit_code, record.exit_time = event.returncode, time.time()
        record.last_line = event.gave_up or last_line(record.log) or f"exit {event.returncode}"
        record.state = node_state(event.returncode, event.restarting, event.gave_up)
        if event.returncode == ExitCode.MEMORY_EXCEEDED:
            record.memory_kills, record.memory_line = record.memory_kills + 1, record.last_line
        if event.restarting:
            record.restarts += 1
        elif not event.released:
            record.wanted = False

    def _log_exit(self, event: Exit) -> None:
        what = "restarting" if event.restarting else (event.gave_up or "not restarting it")
        logger.info("%s exited %d: %s", event.name, event.returncode, what)


def run_local_supervisor(state_dir: Path) -> None:
    """``daskfleet local supervise``: the supervisor process of one local cluster."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    LocalSupervisor(state_dir).run()
