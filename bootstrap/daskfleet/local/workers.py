"""The local cluster's worker backend: the scheduler asks the cluster's supervisor for workers and lets retired ones go.

It runs inside the local scheduler's process (``daskfleet node scheduler --worker-backend
local:STATE_DIR``). Workers start from worker slots that ``local up`` pre-issued (a node
directory each, certificate included), so the scheduler never needs the CA's key. The backend marks a slot wanted (or no longer wanted) in the state directory's
``cluster.json`` under its lock; the supervisor (``daskfleet.local.supervisor``) starts, restarts
and stops the processes, so ``local status`` shows them and ``local down`` stops them. A slot
whose worker failed for good is not used again until the next ``local up``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from ..node.sources import SPEC_FILE
from ..scaling.core import BootFailure, LaunchFailures
from .cluster import WORKER_SLOT_PREFIX, node_log
from .state import LocalCluster, NodeProcess

logger = logging.getLogger("daskfleet.scaling")

#: Every local worker starts from the same slots and environment: one launch version.
LOCAL_VERSION = "the local worker slots"
#: Node states after which a slot is not used again.
FAILED_STATES = frozenset({"failed", "gave up"})


class LocalWorkerProcesses:
    """WorkerBackend for ``daskfleet local``: one supervised agent process per worker slot."""

    #: A local worker that leaves to switch environments is restarted at once by the supervisor (exit 13).
    restarts_switching_workers = True

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)

    def describe(self) -> str:
        return f"local worker processes of {self.state_dir}"

    def slots(self) -> list[str]:
        """The pre-issued worker slots whose node directory is complete, in order."""
        nodes = self.state_dir / "nodes"
        found = [path.name for path in nodes.glob(f"{WORKER_SLOT_PREFIX}*") if (path / SPEC_FILE).exists()]
        return sorted(found, key=lambda name: int(re.sub(r"\D", "", name) or 0))

    def outstanding(self) -> int:
        """Workers the supervisor runs or is about to start (they will register)."""
        cluster = LocalCluster.load(self.state_dir)
        return sum(1 for node in cluster.nodes if node.role == "worker" and node.wanted) if cluster else 0

    def launch(self, count: int) -> int:
        """Ask the supervisor for up to ``count`` workers in free slots; none while the cluster is stopping."""
        with LocalCluster.update(self.state_dir) as cluster:
            if cluster is None or cluster.stopping:
                return 0
            records = {node.name: node for node in cluster.nodes}
            free = [slot for slot in self.slots()
                    if slot not in records or not (records[slot].wanted or records[slot].state in FAILED_STATES)]
            for slot in free[:count]:
                record = records.get(slot)
                if record is None:
                    record = NodeProcess(slot, "worker", 0, 0.0, str(node_log(self.state_dir, slot)))
                    cluster.nodes.append(record)
                record.wanted, record.state = True, "starting"
        started = len(free[:count])
        if started < count:
            logger.warning("asked for %d local workers, started %d: no free worker slot", count, started)
        return started

    def remove(self, names: Sequence[str]) -> None:
        """Retired workers stop by themselves; the supervisor restarts none of them, and ends any that lingers."""
        with LocalCluster.update(self.state_dir) as cluster:
            for node in cluster.nodes if cluster is not None else ():
                if node.name in names:
                    node.wanted = False

    def stop_scheduler(self) -> str | None:
        """The local scheduler stays up when idle: it costs nothing, and new work brings workers back."""
        return None

    def launch_failures(self, since: float) -> LaunchFailures:
        """Worker slots whose worker failed for good (configuration-class exit, or it gave up) since ``since``."""
        cluster = LocalCluster.load(self.state_dir)
        failed = [node for node in cluster.nodes if node.role == "worker" and node.state in FAILED_STATES
                  and node.exit_time >= since] if cluster else []
        return LaunchFailures(LOCAL_VERSION, tuple(
            BootFailure(node.name, LOCAL_VERSION, node.exit_time, node.exit_code or 0, node.last_line) for node in failed
        ))

    def withdraw(self, count: int) -> None:
        """Nothing to take back: the supervisor never restarts a worker that failed for good."""
