"""Ending a worker above its memory limit from outside its process, as distributed's nanny would.

The local cluster's supervisor watches each of its workers (``daskfleet.local.supervisor``); on an instance,
where systemd supervises, a worker's agent starts this module as its own watcher process, the first line
before the unit's cgroup limits. Both read the record the agent writes once its worker has registered
(``worker.json`` in its runtime directory: the pid, the limit in bytes the worker itself uses, and the
terminate fraction and interval as the worker read them from Dask's configuration), read the worker's RSS
at that interval with psutil (one read of /proc), and end it at once when it is above the fraction:

1. SIGSTOP: its memory stops growing and its connections stay open, so the scheduler has not seen it die;
2. tell the scheduler with the worker's certificate (``conventions.MEMORY_KILL_OP``), within a bounded time,
   on a connection opened as the worker's watch began (``SchedulerLine``): one round trip, no handshake;
3. record the run's end in the worker's run history (exit 80 and its line), and say the line;
4. SIGKILL. The nanny's SIGTERM ends its worker process at once (that process installs no handler); the
   agent's SIGTERM would retire the worker gracefully, moving its data while it is over its limit.

This module must start in milliseconds: it imports distributed only to tell the scheduler, on a background
event loop, once a worker is watched (not while workers boot, nor where none ever registers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from .. import conventions
from ..errors import ExitCode
from ..node.supervision import Outcome, RunHistory
from .policy import MemoryKill, exceeds

logger = logging.getLogger("daskfleet.memory")

#: Written into a worker's runtime directory by its agent once the worker has registered: a ``WatchedWorker``.
WORKER_RECORD_FILE = "worker.json"
#: The longest a watcher waits for the scheduler before it ends the frozen worker anyway. The worker is stopped
#: (SIGSTOP) meanwhile, so waiting costs no memory; 2 s ran out on a loaded machine (a busy scheduler's event loop,
#: spare agents importing), and the user then lost the message that names the limit.
TELL_TIMEOUT_S = 5.0
#: How often the agent's watcher looks for its worker's record before the worker has registered.
IDLE_POLL_S = 0.25


@dataclass(frozen=True)
class WatchedWorker:
    """What a watcher needs of a running worker, as its agent wrote it."""

    pid: int
    name: str
    address: str
    scheduler_address: str
    #: The worker's own memory limit in bytes (None: none) and distributed's terminate fraction (None: never).
    memory_limit: int | None
    terminate: float | None
    interval_s: float
    #: The worker's CA, certificate and key files: the watcher speaks for the worker to the scheduler.
    tls: tuple[str, str, str]
    #: The agent's run history, where the killed run's end is recorded.
    history: str | None = None

    @property
    def enforced(self) -> bool:
        """The nanny watches only a worker with a limit and a terminate fraction."""
        return bool(self.memory_limit) and self.terminate is not None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def read(cls, path: Path) -> WatchedWorker | None:
        """The record at ``path``; None while there is none (or, with a warning, when it is not one)."""
        try:
            doc = json.loads(path.read_text())
            return cls(**{**doc, "tls": tuple(doc["tls"])})
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError) as exc:  # written atomically by the agent: only a foreign file
            logger.warning("%s is not a worker's record (%s: %s): its worker is not watched", path, type(exc).__name__, exc)
            return None


class _Loop:
    """One event loop per process, on a daemon thread, for the scheduler lines; started on first use."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def submit(cls, coroutine: Coroutine) -> Future:
        with cls._lock:
            if cls._loop is None:
                cls._loop = asyncio.new_event_loop()
                threading.Thread(target=cls._loop.run_forever, name="scheduler lines", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coroutine, cls._loop)


class SchedulerLine:
    """A connection to a worker's scheduler with that worker's certificate, opened as its watch begins, so that
    telling a kill is one round trip; one that could not open, or broke since (a restarted scheduler), is opened anew."""

    def __init__(self, target: WatchedWorker):
        self.target = target
        self._comm = _Loop.submit(self._connect())

    async def _connect(self) -> Any:
        from distributed.comm import connect  # noqa: PLC0415  (see the module's docstring)
        from distributed.security import Security  # noqa: PLC0415

        ca, cert, key = self.target.tls
        security = Security(tls_ca_file=ca, tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)
        return await connect(self.target.scheduler_address, timeout=TELL_TIMEOUT_S,
                             **security.get_connection_args("worker"))

    def tell(self, kill: MemoryKill, timeout: float = TELL_TIMEOUT_S) -> str | None:
        """Report the kill before it happens; None once the scheduler has it, else why not (the kill goes ahead)."""
        try:
            answer = _Loop.submit(asyncio.wait_for(self._report(kill), timeout)).result(timeout + 1)
        except Exception as exc:  # noqa: BLE001  whatever stops the report, the worker is ended all the same; logged
            return f"{type(exc).__name__}: {exc}"
        return None if answer == "OK" else f"it answered {answer!r}"

    async def _report(self, kill: MemoryKill) -> Any:
        message = {"op": conventions.MEMORY_KILL_OP, "reply": True, "worker": self.target.address, "pid": kill.pid,
                   "rss": kill.rss, "memory_limit": kill.limit, "terminate": kill.fraction}
        try:
            comm = await asyncio.wrap_future(self._comm)
            await comm.write(message)
        except OSError:  # not opened, or closed since (distributed's CommClosedError is an OSError)
            comm = await self._connect()
            await comm.write(message)
        try:
            return await comm.read()
        finally:
            comm.abort()

    def close(self) -> None:
        """Close the connection of a watch that ends without a kill."""
        _Loop.submit(self._close())

    async def _close(self) -> None:
        try:
            comm = await asyncio.wrap_future(self._comm)
        except Exception:  # noqa: BLE001  it never opened: nothing to close
            return
        comm.abort()


class MemoryWatch:
    """One worker's RSS against its threshold, measured as the nanny does (the worker's process alone), and the
    line to its scheduler."""

    def __init__(self, target: WatchedWorker):
        self.target = target
        self.process = psutil.Process(target.pid)
        self.line = SchedulerLine(target)

    def check(self) -> MemoryKill | None:
        """A kill when above the threshold: one read of /proc."""
        try:
            rss = self.process.memory_info().rss
        except psutil.Error:  # gone, or a zombie its supervisor has not reaped
            return None
        target = self.target
        assert target.memory_limit and target.terminate is not None
        if not exceeds(rss, target.memory_limit, target.terminate):
            return None
        return MemoryKill(target.pid, rss, target.memory_limit, target.terminate)


class MemoryWatches:
    """The workers a supervisor runs, each followed through the record its agent wrote (read again when it changes),
    all checked together at the workers' interval (the shortest, should they differ): one wake-up per interval."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._watches: dict[str, tuple[tuple[int, int, int], MemoryWatch | None]] = {}
        self._due: float | None = None

    def check(self, workers: Mapping[str, tuple[int, Path]]) -> list[tuple[str, MemoryWatch, MemoryKill]]:
        """``workers``: name -> (pid, record path). When due, the workers above their threshold, to be ended now."""
        now = self.clock()
        if self._due is not None and now < self._due:
            return []
        for name in self._watches.keys() - workers.keys():
            self._drop(name)
        found = []
        for name, (pid, record) in workers.items():
            watch = self._watch(name, pid, record)
            kill = watch.check() if watch is not None else None
            if watch is not None and kill is not None:
                found.append((name, watch, kill))
                self._watches[name] = (self._watches[name][0], None)  # ended: its next run writes a new record
        intervals = [watch.target.interval_s for _, watch in self._watches.values() if watch is not None]
        self._due = now + min(intervals) if intervals else None  # none watched yet: look again at the next round
        return found

    def wait_s(self) -> float | None:
        """Seconds until the next check is due; None while no worker is watched."""
        return None if self._due is None else max(0.0, self._due - self.clock())

    def _watch(self, name: str, pid: int, record: Path) -> MemoryWatch | None:
        try:
            stat = record.stat()
        except OSError:  # not registered yet
            self._drop(name)
            return None
        key = (pid, stat.st_ino, stat.st_mtime_ns)
        known = self._watches.get(name)
        if known is not None and known[0] == key:
            return known[1]
        self._drop(name)
        target = WatchedWorker.read(record)
        watch = None
        if target is not None and target.pid == pid and target.enforced:
            try:
                watch = MemoryWatch(target)
            except psutil.NoSuchProcess:
                watch = None
        self._watches[name] = (key, watch)
        return watch

    def _drop(self, name: str) -> None:
        _, watch = self._watches.pop(name, (None, None))
        if watch is not None:
            watch.line.close()


def end_worker(
    watch: MemoryWatch, kill: MemoryKill, *, by: str, say: Callable[[Outcome], None], end: Callable[[], None],
) -> Outcome:
    """Freeze the worker, tell its scheduler, record and say its line, then ``end`` it (SIGKILL)."""
    target = watch.target
    try:
        os.kill(target.pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass  # it ended meanwhile; ``end`` finds nothing to end either
    outcome = Outcome(ExitCode.MEMORY_EXCEEDED, f"error: {kill.describe()}; ended by {by}")
    try:
        problem = watch.line.tell(kill)
        if problem is not None:
            logger.warning("%s: could not tell the scheduler %s it is ending (%s); ending it anyway",
                           target.name, target.scheduler_address, problem)
        if target.history:
            try:
                RunHistory(Path(target.history)).ended(outcome, time.time())
            except OSError as exc:
                logger.warning("%s: could not record its end in %s: %s", target.name, target.history, exc)
        say(outcome)
    finally:
        end()
    return outcome


def start_watcher(runtime_dir: Path) -> subprocess.Popen:
    """The agent's own watcher for the worker in this process (on an instance: nobody else watches it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "daskfleet.memory.watch", str(runtime_dir / WORKER_RECORD_FILE), str(os.getpid())],
        stdin=subprocess.DEVNULL,
    )


def stop_watcher(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _say(outcome: Outcome) -> None:
    """The line the agent would have written as it exited: the unit's journal gets it from here."""
    print(f"daskfleet: {outcome.line}", file=sys.stderr, flush=True)


def run_watcher(record: Path, agent: int) -> int:
    """Watch the worker in process ``agent`` until that process ends; end it once if it exceeds its limit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the agent, which stops its watcher
    watches = MemoryWatches()
    while os.getppid() == agent:
        for _, watch, kill in watches.check({"worker": (agent, record)}):
            end_worker(watch, kill, by=f"its memory watcher (pid {os.getpid()})", say=_say,
                       end=lambda: os.kill(agent, signal.SIGKILL))
            return 0
        wait = watches.wait_s()
        time.sleep(IDLE_POLL_S if wait is None else wait)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sys.exit(run_watcher(Path(sys.argv[1]), int(sys.argv[2])))
