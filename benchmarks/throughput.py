"""Scheduler throughput (tiny tasks per second) with all the daskfleet scheduler plugins vs none, and with
usage kept per task prefix vs per user only.

Four schedulers run the agent's own code path with the same TLS configuration and the same
spec (prices and per-user limits set, so every graph passes the limit checks; a scaling section
holding the two workers); they differ only in what is installed: everything
(``SchedulerGuard.install``: role enforcement, audit, task attribution; ``daskfleet.usage.install``:
the ledger, limits, budget stop, metrics; and the scaling plugin, with a backend that starts no
worker), security only, or nothing. "all plugins" keeps usage per task prefix (the policy's default
``prefixes_per_user``); "per-user usage" is the same with ``prefixes_per_user: 0`` in its spec, the
accounting as it was before prefixes. The rollout plugin is left out of all (its cost is one check
per worker registration, none per task). Rounds alternate between them so drift on a shared
machine hits all.
"""

from __future__ import annotations

import functools
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from distributed import Client, Security

from daskfleet.local.state import LOCAL_CLUSTER
from daskfleet.node.spec import NodeSpec
from daskfleet.scaling.policy import ScalingSpec
from daskfleet.usage.policy import policy_from_entries

#: Limits every graph is checked against (and passes), and a price, so the accounting does its full work.
USAGE = policy_from_entries(prices=["local=0.5"], user_max_workers=["*=100"], user_compute_hours_per_day=["*=1000"],
                            budget_monthly_usd=1_000_000.0)
#: The same, with usage kept per user only (no per-prefix figures).
USAGE_PER_USER = USAGE.model_copy(update={"prefixes_per_user": 0})
#: Contender -> (what the scheduler installs: the script's argument, its usage policy).
CONTENDERS = {"all plugins": ("all", USAGE), "per-user usage": ("all", USAGE_PER_USER),
              "security only": ("security", USAGE), "no plugins": ("none", USAGE)}
#: The two workers the benchmark starts, held by the scaler (it decides at each graph and every interval).
SCALING = ScalingSpec(min_workers=2, max_workers=2, idle_timeout_s=0, no_client_timeout_s=0)

from .common import HOST, BenchPki, agent, medians_ratio, rounds_ratio, stop, summary, wait_for_file

SCHEDULER_SCRIPT = """
import sys, types
from pathlib import Path
from daskfleet.node import agent
from daskfleet.trust import guards
from daskfleet.node.sources import DirectorySource
from daskfleet.scaling.core import LaunchFailures
import daskfleet.usage

class NoWorkers:
    # The scaler's backend: the benchmark starts the workers, so it starts none and lets none go.
    restarts_switching_workers = False
    def describe(self): return "no workers (benchmark)"
    def outstanding(self): return 0
    def launch(self, count): return 0
    def remove(self, names): pass
    def stop_scheduler(self): return None
    def launch_failures(self, since): return LaunchFailures("benchmark")
    def withdraw(self, count): pass

agent.install_rollout = lambda *args, **kwargs: types.SimpleNamespace(restarting=False)
if sys.argv[3] in ("none", "security"):
    daskfleet.usage.install = lambda *args, **kwargs: types.SimpleNamespace(
        worker_ceiling=lambda: None, set_desired_workers=lambda count: None)
    agent.install_scaling = lambda *args, **kwargs: None
if sys.argv[3] == "none":
    guards.SchedulerGuard.install = lambda self, scheduler: None
    # what is served or enforced through the guard goes with it
    agent.install_memory = agent.install_renewal = agent.install_dashboard_guard = lambda *args, **kwargs: None
if sys.argv[3] in ("none", "no-revocation"):
    agent.install_revocation = lambda *args, **kwargs: None
source = DirectorySource(sys.argv[1])
sys.exit(int(agent.run_node("scheduler", source, Path(sys.argv[2]), worker_backend=NoWorkers).code))
"""


def _inc(x: int) -> int:
    return x + 1


def _cluster(bench: BenchPki, label: str, plugins: str, usage=USAGE, revocation=None) -> tuple[list[subprocess.Popen], str]:
    root = bench.root
    extra = {"revocation": revocation} if revocation is not None else {}
    spec = NodeSpec(cluster=LOCAL_CLUSTER, role="scheduler", listen_host=HOST, scheduler_port=0, dashboard_port=0,
                    audit_log=str(root / f"audit-{label}.jsonl"), usage=usage, scaling=SCALING, **extra)
    node = bench.node_dir(f"scheduler-{label}", spec)
    run_dir = root / "run" / f"scheduler-{label}"
    scheduler = subprocess.Popen([sys.executable, "-c", SCHEDULER_SCRIPT, str(node), str(run_dir), plugins],
                                 stdout=open(root / f"scheduler-{label}.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:  # a loaded machine may take long to start a fourth scheduler; one that never listens is not left behind
        address = wait_for_file(run_dir / "scheduler.json", scheduler, timeout=180)["address"]
    except RuntimeError:
        stop(scheduler)
        raise
    procs = [scheduler]
    for index in range(2):
        name = f"w{index}-{label}"
        wspec = NodeSpec(cluster=LOCAL_CLUSTER, role="worker", scheduler_address=address, listen_host=HOST,
                         worker_port=0, name=name, nthreads=1)
        procs.append(agent("worker", bench.node_dir(name, wspec), root / "run" / name, root / f"{name}.log"))
    return procs, address


def _measure(client: Client, tasks: int) -> float:
    start = time.perf_counter()
    futures = client.map(_inc, range(tasks), pure=False)
    client.gather(futures)
    elapsed = time.perf_counter() - start
    del futures
    return tasks / elapsed


def _accounting_cost_us(prefixes_per_user: int, tasks: int = 20_000) -> float:
    """Microseconds per task that the usage plugin and ledger take for a task's four transitions, in this process
    (no scheduler: the cost the throughput rounds measure among the machine's noise)."""
    from types import SimpleNamespace

    from daskfleet.usage.ledger import Ledger
    from daskfleet.usage.plugin import UsagePlugin

    ledger = Ledger(USAGE.prices_usd_per_hour, time.time, prefixes_per_user=prefixes_per_user)
    ledger.worker_joined("w", "local", "on-demand")
    worker = SimpleNamespace(address="w")
    states = {key: SimpleNamespace(key=key, processing_on=worker, prefix=SimpleNamespace(name=f"fn{key % 7}"))
              for key in range(tasks)}
    plugin = UsagePlugin(SimpleNamespace(ledger=ledger, guard=SimpleNamespace(owners=SimpleNamespace(owner_of=lambda ts: "bench")),
                                         scheduler=SimpleNamespace(tasks=states, workers={})))
    ran = [{"action": "compute", "start": 0.0, "stop": 0.001}]
    start = time.perf_counter()
    for key in states:
        plugin.transition(key, "released", "waiting", stimulus_id="b")
        plugin.transition(key, "waiting", "processing", stimulus_id="b")
        plugin.transition(key, "processing", "memory", stimulus_id="b", startstops=ran)
        plugin.transition(key, "memory", "forgotten", stimulus_id="b")
    return (time.perf_counter() - start) / tasks * 1e6


def measure_rounds(bench: BenchPki, starts: dict[str, Callable[[], tuple[list[subprocess.Popen], str]]],
                   rounds: int, tasks: int) -> dict[str, list[float]]:
    """Start each contender's cluster (label -> a function starting it), warm each up, then run ``rounds`` rounds
    of ``tasks`` tiny tasks on every contender back to back; every cluster is stopped whatever happens."""
    client_files = bench.client_files()
    security = Security(tls_ca_file=str(client_files / "ca.pem"), tls_client_cert=str(client_files / "cert.pem"),
                        tls_client_key=str(client_files / "key.pem"), require_encryption=True)
    rates: dict[str, list[float]] = {label: [] for label in starts}
    clusters, clients = [], {}
    try:
        for label, start in starts.items():
            procs, address = start()
            clusters.append(procs)
            clients[label] = Client(address, security=security)
            clients[label].wait_for_workers(2, timeout=60)
            _measure(clients[label], 500)  # warm-up
        for _ in range(rounds):
            for label in rates:
                rates[label].append(_measure(clients[label], tasks))
    finally:
        for client in clients.values():
            client.close()
        for procs in clusters:
            stop(*procs[1:])
            stop(procs[0])
    return rates


def run(root: Path, rounds: int = 5, tasks: int = 3000) -> dict[str, float]:
    from daskfleet.trust import pki

    bench = BenchPki(root, pki.create_ca(LOCAL_CLUSTER))
    starts = {label: functools.partial(_cluster, bench, f"{flag}{index}", flag, usage)
              for index, (label, (flag, usage)) in enumerate(CONTENDERS.items())}
    rates = measure_rounds(bench, starts, rounds, tasks)
    for label, values in rates.items():
        print(f"  scheduler throughput, {label:<14} {summary(values)} tasks/s ({tasks} tasks)")
    per_user, per_prefix = (statistics.median(_accounting_cost_us(bound) for _ in range(3)) for bound in (0, 50))
    print(f"  usage plugin and ledger alone, per task: per user {per_user:.1f} µs, per prefix {per_prefix:.1f} µs")
    none, per_user_usage = rates["no plugins"], rates["per-user usage"]
    return {  # the verdicts read the rounds' own ratios (common.rounds_ratio says why)
        "throughput all plugins / none": rounds_ratio(rates["all plugins"], none),
        "throughput security only / none": rounds_ratio(rates["security only"], none),
        "  all plugins / none, ratio of the medians": medians_ratio(rates["all plugins"], none),
        "throughput per-prefix / per-user accounting": rounds_ratio(rates["all plugins"], per_user_usage),
        "  per-prefix / per-user, ratio of the medians": medians_ratio(rates["all plugins"], per_user_usage),
    }
