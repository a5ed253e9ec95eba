"""How the program's evaluation grows with the fleet: 1, 10, 50 and 205 clusters (200 private, 5 team) under mocks.

Each size is evaluated once, in its own process, by the tests' machinery (tests/infra/evaluate.py:
the Pulumi mocks with real TLS keys). What is timed is the child's CPU time (user + system, from
``getrusage``), which a loaded machine disturbs far less than wall time; wall time is printed
beside it. A fleet of one still pays Python's start and pulumi-aws's import, so the cost of a
cluster is the marginal one, ``(T(n) - T(1)) / (n - 1)``; the ratio of that at 205 clusters to
that at 10 is 1 when the cost is linear (target <= 1.5).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
#: (private clusters, team clusters) per size.
SIZES: tuple[tuple[int, int], ...] = ((0, 1), (8, 2), (45, 5), (200, 5))
ACCOUNT = "123456789012"


def _tests_machinery() -> None:
    """tests/ first on the path: its ``infra`` package (the mocks), not the repository's infra/ directory."""
    if sys.path[0] != str(TESTS_DIR):
        sys.path.insert(0, str(TESTS_DIR))
    loaded = sys.modules.get("infra")
    if loaded is not None and not any(str(path).startswith(str(TESTS_DIR)) for path in getattr(loaded, "__path__", [])):
        for name in [name for name in sys.modules if name == "infra" or name.startswith("infra.")]:
            del sys.modules[name]


def fleet_config(private: int, teams: int) -> dict[str, Any]:
    """The example stack as a fleet: ``private`` users with private clusters, ``teams`` team clusters sharing them."""
    _tests_machinery()
    from infra.program import example_config

    names = [f"user-{index:04d}" for index in range(max(private, 1))]
    users = [f"{name}=arn:aws:iam::{ACCOUNT}:role/{name}" for name in names]
    clusters = {f"team-{team + 1}": {"members": names[team::teams], "admins": names[team:team + 1]}
                for team in range(teams)}
    return {**example_config(), "users": users, "userComputeHoursPerDay": [], "privateClusters": private > 0,
            "clusters": clusters}


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(private: int, teams: int) -> tuple[int, int, float, float]:
    """(clusters, resources, child CPU seconds, wall seconds) of one evaluation."""
    _tests_machinery()
    from infra.program import evaluate_program

    cpu, wall = _child_cpu(), time.perf_counter()
    record = evaluate_program(fleet_config(private, teams), timeout=3600)
    cpu, wall = _child_cpu() - cpu, time.perf_counter() - wall
    return len(record.outputs["clusters"]), len(record.resources), cpu, wall


def run(_: Path) -> dict[str, float]:
    rows = [measure(private, teams) for private, teams in SIZES]
    base_cpu = rows[0][2]
    base_resources = rows[0][1]
    print(f"  {'clusters':>8} {'resources':>9} {'per cluster':>11} {'cpu s':>8} {'wall s':>8} {'marginal cpu s/cluster':>23}")
    marginal = {}
    for clusters, resources, cpu, wall in rows:
        per = (resources - base_resources) / (clusters - 1) if clusters > 1 else float(resources)
        marginal[clusters] = (cpu - base_cpu) / (clusters - 1) if clusters > 1 else float("nan")
        shown = f"{marginal[clusters]:.3f}" if clusters > 1 else "-"
        print(f"  {clusters:>8} {resources:>9} {per:>11.1f} {cpu:>8.1f} {wall:>8.1f} {shown:>23}")
    largest, ten = rows[-1][0], rows[1][0]
    return {f"fleet evaluation per cluster, {largest} / {ten} clusters": marginal[largest] / marginal[ten]}


if __name__ == "__main__":
    sizes = [tuple(int(n) for n in arg.split("+")) for arg in sys.argv[1:]] or list(SIZES)
    for private, teams in sizes:
        print(private, teams, measure(private, teams))
