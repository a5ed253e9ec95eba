"""``daskfleet clusters``: the clusters the caller can reach, and whether each sleeps, wakes or runs, with its workers.

On AWS, the clusters whose certificate the caller holds (daskfleet.aws.fleet finds them with the
caller's own login); on this machine, every local cluster under ``$DASKFLEET_HOME/<name>/``. The
state is decided purely from what was seen (``aws_state``, ``local_state``); a place that cannot be
looked at (no AWS login, say) is named with the reason, which is not an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..local.state import SCHEDULER, STATE_FILE, LocalCluster

#: What a cluster is doing: its scheduler group at 0 (asleep), at 1 without an instance in service yet
#: (waking), serving (running); a local cluster not started (stopped); or not to be told (unknown).
STATES = ("asleep", "waking", "running", "stopped", "unknown")
IN_SERVICE = "InService"


@dataclass(frozen=True)
class ClusterState:
    name: str
    #: "aws" (with the region) or "local".
    where: str
    state: str
    #: Workers in service (None when not to be told).
    workers: int | None
    detail: str = ""


def _in_service(group: Mapping[str, Any] | None) -> int:
    return sum(1 for i in (group or {}).get("Instances", []) if i.get("LifecycleState") == IN_SERVICE)


def aws_state(scheduler: Mapping[str, Any] | None, workers: Mapping[str, Any] | None) -> tuple[str, int | None, str]:
    """(state, workers in service, detail) of an AWS cluster from its two auto scaling groups as described."""
    if scheduler is None:
        return "unknown", None, "no scheduler group (is the cluster deployed?)"
    count = _in_service(workers) if workers is not None else None
    if int(scheduler.get("DesiredCapacity", 0)) == 0:
        return "asleep", count, "daskfleet.connect wakes it"
    if _in_service(scheduler) == 0:
        return "waking", count, "its scheduler instance is starting"
    return "running", count, ""


def local_state(cluster: LocalCluster | None) -> tuple[str, int | None, str]:
    """(state, workers running, detail) of a local cluster from its recorded processes."""
    if cluster is None:
        return "unknown", None, "no cluster.json"
    live = [node for node in cluster.nodes if node.process() is not None]
    if not any(node.name == SCHEDULER for node in live):
        return "stopped", 0, "`daskfleet local up` starts it"
    return "running", sum(1 for node in live if node.role == "worker"), ""


def local_clusters(home: Path) -> list[ClusterState]:
    """Every local cluster under ``home`` (a directory holding cluster.json), by name."""
    found = []
    for directory in sorted(home.iterdir()) if home.is_dir() else []:
        if (directory / STATE_FILE).is_file():
            try:
                recorded = LocalCluster.load(directory)
            except (ValueError, TypeError) as exc:  # a cluster.json another version wrote, or a broken one
                found.append(ClusterState(directory.name, "local", "unknown", None, f"unreadable {STATE_FILE}: {exc}"))
                continue
            state, workers, detail = local_state(recorded)
            found.append(ClusterState(directory.name, "local", state, workers, detail))
    return found


def render_text(clusters: Sequence[ClusterState], notes: Iterable[str] = ()) -> str:
    """A table for a person, and what to do next."""
    from ..ops.leaks import render_table  # noqa: PLC0415

    lines = []
    if clusters:
        rows = [[c.name, c.where, c.state, "-" if c.workers is None else str(c.workers), c.detail] for c in clusters]
        lines.append(render_table(["CLUSTER", "WHERE", "STATE", "WORKERS", ""], rows))
        lines.append("")
        lines.append('connect: daskfleet.connect("NAME") (an asleep AWS cluster is woken)')
    else:
        lines.append("no cluster you can reach")
    lines += [f"note: {note}" for note in notes]
    return "\n".join(lines)


def render_json(clusters: Sequence[ClusterState], notes: Iterable[str] = ()) -> str:
    return json.dumps({"clusters": [asdict(c) for c in clusters], "notes": list(notes)}, indent=2, sort_keys=True)
