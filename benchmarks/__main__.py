"""Run every benchmark and print the ratios measured side by side (`make bench`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from . import boot, envs, fleet, localcluster, login, memory, revocation, scaling, switch, throughput, transport

TARGETS = {
    "boot agent / dask worker (nanny)": ("<=", 1.0),
    "delta install / cold full install": ("<=", 0.2),
    "environment switch / cold full install": ("<=", 0.25),
    "throughput all plugins / none": (">=", 0.95),
    "throughput per-prefix / per-user accounting": (">=", 0.98),
    "throughput revocation watch / none": (">=", 0.98),
    "backlog to scale-up request (intervals, worst)": ("<=", 1.0),
    "idle waste / idle timeout": ("<=", 1.1),
    "throughput memory watched / not watched": (">=", 0.99),
    "kill latency / interval, local supervisor (worst)": ("<=", 2.0),
    "kill latency / interval, agent's own watcher (worst)": ("<=", 2.0),
    "fleet evaluation per cluster, 205 / 10 clusters": ("<=", 1.5),
    "login to first computation / existing certificate": ("<=", 1.5),
    "workloads, daskfleet speed / LocalCluster (geo mean)": (">=", 0.95),
    "client.restart() daskfleet / LocalCluster (time)": ("<=", 1.0),
}


def main() -> None:
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="daskfleet-bench-") as root:
        print("Worker boot-to-registered (scheduler event time minus spawn time):")
        ratios.update(boot.run(Path(root) / "boot"))
        print("Scheduler throughput:")
        ratios.update(throughput.run(Path(root) / "throughput"))
        print("Scheduler throughput with the deny-list poller and expired-peer sweep (see benchmarks/revocation.py):")
        ratios.update(revocation.run(Path(root) / "revocation"))
        print("Environment installs (a channel built here; see benchmarks/envs.py):")
        ratios.update(envs.run(Path(root) / "envs"))
        print("Environment switch of a running local cluster (see benchmarks/switch.py):")
        ratios.update(switch.run(Path(root) / "switch"))
        ratios.update(scaling.run(Path(root) / "scaling"))
        print("Memory limits without a nanny (see benchmarks/memory.py):")
        ratios.update(memory.run(Path(root) / "memory"))
        print("Workloads and client.restart() on `make local` against LocalCluster (see benchmarks/localcluster.py):")
        ratios.update(localcluster.run(Path(root) / "localcluster"))
        print("What TLS costs on loopback, below daskfleet (see benchmarks/transport.py):")
        ratios.update(transport.run(Path(root) / "transport"))
        print("The Pulumi program under mocks, by fleet size (see benchmarks/fleet.py):")
        ratios.update(fleet.run(Path(root) / "fleet"))
        print("Login to first computation on the local cluster (see benchmarks/login.py):")
        ratios.update(login.run(Path(root) / "login"))
    print("\nRatios:")
    for name, value in ratios.items():
        target = TARGETS.get(name)
        verdict = ""
        if target:
            op, bound = target
            met = value <= bound if op == "<=" else value >= bound
            verdict = f"  (target {op} {bound}: {'met' if met else 'NOT met'})"
        print(f"  {name:<52} {value:.3f}{verdict}")


if __name__ == "__main__":
    main()
