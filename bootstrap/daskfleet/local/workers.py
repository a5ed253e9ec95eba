"""The local cluster's worker backend: the scheduler starts workers through the agent and lets retired ones go.

It runs inside the local scheduler's process (``daskfleet node scheduler --worker-backend
local:STATE_DIR``). Workers start from worker slots that ``local up`` pre-issued (a node
directory each, certificate included: the local CA's key is never stored, so nothing can be
issued later), as ``daskfleet node worker --source dir:<slot>``, and are recorded in the state
directory's ``cluster.json`` under its lock, so ``local status`` shows them and ``local down``
stops them.
"""

from __future__ import annotations

import logging
import re
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from ..node.sources import SPEC_FILE
from .cluster import STOP_TIMEOUT_S, WORKER_SLOT_PREFIX, signal_group, start_node, wait_gone
from .state import LocalCluster

logger = logging.getLogger("daskfleet.scaling")
#: How long a launch waits for a leaving worker's process to exit and free its slot.
SLOT_WAIT_S = 2.0


class LocalWorkerProcesses:
    """WorkerBackend for ``daskfleet local``: one agent process per worker slot."""

    #: A local worker that leaves to switch environments is started again from its slot by this backend.
    restarts_switching_workers = False

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)

    def describe(self) -> str:
        return f"local worker processes of {self.state_dir}"

    def slots(self) -> list[str]:
        """The pre-issued worker slots whose node directory is complete, in order."""
        nodes = self.state_dir / "nodes"
        found = [path.name for path in nodes.glob(f"{WORKER_SLOT_PREFIX}*") if (path / SPEC_FILE).exists()]
        return sorted(found, key=lambda name: int(re.sub(r"\D", "", name) or 0))

    def _free_slots(self) -> int:
        cluster = LocalCluster.load(self.state_dir)
        busy = {node.name for node in cluster.running() if node.role == "worker"} if cluster else set()
        return sum(1 for slot in self.slots() if slot not in busy)

    def outstanding(self) -> int:
        """Worker processes already running (they will register)."""
        cluster = LocalCluster.load(self.state_dir)
        return sum(1 for node in cluster.running() if node.role == "worker") if cluster else 0

    def launch(self, count: int) -> int:
        """Start up to ``count`` workers in free slots; none while the cluster is stopping.

        A worker that just left (retired, or switching environments) frees its slot when its process
        exits, a moment after it unregistered: wait that moment rather than a whole decision interval.
        """
        deadline = time.monotonic() + SLOT_WAIT_S
        while self._free_slots() < count and time.monotonic() < deadline:
            time.sleep(0.05)
        with LocalCluster.update(self.state_dir) as cluster:
            if cluster is None or cluster.stopping:
                return 0
            busy = {node.name for node in cluster.running() if node.role == "worker"}
            free = [slot for slot in self.slots() if slot not in busy][:count]
            for slot in free:
                cluster.nodes = [node for node in cluster.nodes if node.name != slot]
                cluster.nodes.append(start_node(self.state_dir, slot, "worker"))
        if len(free) < count:
            logger.warning("asked for %d local workers, started %d: no free worker slot", count, len(free))
        return len(free)

    def remove(self, names: Sequence[str]) -> None:
        """Retired workers stop by themselves; any still running after the stop timeout is ended. Records go."""
        cluster = LocalCluster.load(self.state_dir)
        if cluster is None:
            return
        procs = [proc for node in cluster.nodes if node.name in names and (proc := node.process()) is not None]
        for proc in wait_gone(procs, STOP_TIMEOUT_S):
            logger.warning("retired worker process %d did not exit; ending it", proc.pid)
            signal_group(proc, signal.SIGTERM)
        with LocalCluster.update(self.state_dir) as latest:
            if latest is not None:
                latest.nodes = [node for node in latest.nodes if node.name not in names or node.process() is not None]

    def stop_scheduler(self) -> str | None:
        """The local scheduler stays up when idle: it costs nothing, and new work brings workers back."""
        return None
