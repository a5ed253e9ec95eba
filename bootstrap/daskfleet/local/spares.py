"""Spare worker agents: one pre-started, pre-imported agent per running worker slot of the local cluster.

A restarted worker's start is mostly imports (``daskfleet.node.spare``). The supervisor keeps, for each
slot whose worker has registered, a spare agent started with the command line and environment the slot's
next worker would get (``daskfleet.local.cluster.node_launch``, built anew each time); when the slot's
worker restarts, the spare is told "go" and becomes it, so the restart costs the exit, a certificate and
a registration. A spare is the supervisor's child, like every node; it is no node of ``cluster.json``
(``local status`` does not list it) and holds about one idle Python interpreter's memory, as a nanny does.
A spare whose command line or environment is no longer what a start would use (an environment was
published to the cluster: ``node_python`` changed) is never used: it is ended and another started.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..node.spare import GO, SPARE_ENV
from .cluster import end_processes, fresh_runtime_dir, node_launch, node_log

logger = logging.getLogger("daskfleet.supervisor")

#: The agent options of every local worker: its memory is followed by the supervisor, not by a watcher of its own.
WORKER_OPTIONS = ("--no-memory-watcher",)


@dataclass
class Spare:
    """A spare agent process and what it was started with."""

    proc: subprocess.Popen
    command: list[str]
    env: dict[str, str] | None
    #: The pid of the slot's worker it was started for (one spare per run of a worker, never a loop of them).
    worker_pid: int


class Spares:
    """The spare agents of one local cluster's worker slots."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.spares: dict[str, Spare] = {}
        #: Spares let go of, not yet reaped.
        self.leaving: list[subprocess.Popen] = []
        #: Per slot, the worker pid its last spare was started for.
        self.started_for: dict[str, int] = {}

    def launch(self, name: str) -> tuple[list[str], dict[str, str] | None]:
        return node_launch(self.state_dir, name, "worker", *WORKER_OPTIONS)

    def keep(self, slots: set[str], registered: dict[str, int]) -> None:
        """Let go of spares of slots no longer in ``slots`` and of stale ones; start one for each worker in
        ``registered`` (slot name: pid) that has none yet. A spare that ended by itself is not started again
        until the slot's next worker has registered."""
        self.leaving = [proc for proc in self.leaving if proc.poll() is None]
        for name, spare in list(self.spares.items()):
            if name not in slots:
                self._let_go(name)
            elif (code := spare.proc.poll()) is not None:
                del self.spares[name]
                logger.warning("the spare agent of %s ended by itself (exit %d); see %s", name, code,
                               node_log(self.state_dir, name))
            elif (spare.command, spare.env) != self.launch(name):
                logger.info("the spare agent of %s was started for another environment: starting another", name)
                self._let_go(name)
                self.started_for.pop(name, None)
        for name, pid in registered.items():
            if name not in self.spares and self.started_for.get(name) != pid:
                self._start(name, pid)

    def take(self, name: str) -> subprocess.Popen | None:
        """The slot's spare, told to go on as its worker (its runtime directory made fresh first); None when it has
        no spare that would start as a fresh process would now, in which case any spare it had is let go of."""
        spare = self.spares.get(name)
        if spare is None:
            return None
        if spare.proc.poll() is not None or (spare.command, spare.env) != self.launch(name):
            self._let_go(name)
            return None
        del self.spares[name]
        fresh_runtime_dir(self.state_dir, name)
        try:
            assert spare.proc.stdin is not None
            spare.proc.stdin.write(GO)
            spare.proc.stdin.close()
        except BrokenPipeError:  # it ended just now
            self.leaving.append(spare.proc)
            return None
        return spare.proc

    def pids(self) -> dict[str, int]:
        return {name: spare.proc.pid for name, spare in self.spares.items()}

    def stop(self) -> None:
        """End every spare (their stdin closed first: a spare that is still importing ends when it gets there)."""
        for name in list(self.spares):
            self._let_go(name)
        procs = []
        for proc in self.leaving:
            try:
                procs.append(psutil.Process(proc.pid))
            except psutil.NoSuchProcess:
                continue
        end_processes(procs, timeout=5)
        for proc in self.leaving:
            proc.poll()
        self.leaving = []

    def _start(self, name: str, worker_pid: int) -> None:
        command, env = self.launch(name)
        with open(node_log(self.state_dir, name), "ab") as log:
            proc = subprocess.Popen(
                command, env={**(os.environ if env is None else env), SPARE_ENV: "1"}, stdin=subprocess.PIPE, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.spares[name] = Spare(proc, command, env, worker_pid)
        self.started_for[name] = worker_pid

    def _let_go(self, name: str) -> None:
        spare = self.spares.pop(name)
        if spare.proc.stdin is not None and not spare.proc.stdin.closed:
            try:
                spare.proc.stdin.close()  # end of file: it ends as soon as it reads it
            except BrokenPipeError:
                pass
        if spare.proc.poll() is None:
            try:
                spare.proc.terminate()
            except ProcessLookupError:
                pass
            self.leaving.append(spare.proc)
