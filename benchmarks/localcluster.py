"""Workloads on ``make local``'s cluster against a plain ``LocalCluster`` and one with the same TLS, and
``client.restart()`` on daskfleet and plain LocalCluster.

Three clusters of the same shape (2 workers × 1 thread) run side by side:

- **daskfleet**: ``daskfleet.local.cluster.up`` as ``make local`` starts it (its supervisor, the scheduler with
  every plugin, two agent workers without a nanny), connected to with ``daskfleet.connect``;
- **LocalCluster TLS**: ``distributed.LocalCluster(n_workers=2, threads_per_worker=1)`` with ``protocol="tls"`` and a
  ``Security`` holding the same kind of certificates (ECDSA P-256, issued by ``daskfleet.trust.pki``, one per role,
  encryption required);
- **LocalCluster**: the same without TLS.

Each LocalCluster lives in a process of its own (as daskfleet's scheduler does), so this process is only the
client of all three and the scheduler never shares its interpreter with the client. The workloads are a single
future's round trip, a map of 10,000 small tasks, a parquet groupby (a dataset written to a temporary directory
first), a p2p merge and an array reduction. Each is run once per cluster to warm up (imports on the workers), then
in rounds; within a round the clusters take turns, starting with a different one each round, so a slow minute of
the shared machine hits all of them. Each turn runs with its cluster's client as the current one (``timed``: a
collection's ``.compute()`` follows the current client) and starts once every cluster is quiet (``_settle``: the
turn before may still be letting 10,000 tasks go). ``client.restart()`` is timed the same way, last (the workers it
brings back would otherwise run the workloads first cold), each once the clusters' processes are quiet again
(``_settle``: the spare agents daskfleet starts after a restart import in the background, which would slow whichever
restart came next).
A plain LocalCluster whose nannies lose their workers on a restart (distributed#7312) is printed and replaced by a new
one (``PLAIN_REPLACEMENTS``); a daskfleet restart that times out is printed and not tried again.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil
from distributed import Client

import daskfleet
from daskfleet.local import cluster as local
from daskfleet.local.state import LOCAL_CLUSTER, LocalCluster

from .common import medians_ratio, rounds_ratio, summary, tls_files

ROUNDS = int(os.environ.get("DASKFLEET_BENCH_ROUNDS", "3"))
RESTART_ROUNDS = int(os.environ.get("DASKFLEET_BENCH_RESTARTS", "3"))
#: Sequential round trips timed together as one "single future" figure (the time of one is printed).
ROUND_TRIPS = 40
SMALL_TASKS = 10_000
DASKFLEET, TLS, PLAIN = "daskfleet", "LocalCluster TLS", "LocalCluster"
CONTENDERS = (DASKFLEET, TLS, PLAIN)
ROUNDS_HEADING = "median of the rounds' own ratios"
#: Speed ratios printed per workload: (the time on top, the time below).
PAIRS = {"LC/daskfleet": (PLAIN, DASKFLEET), "LC/LC TLS": (PLAIN, TLS), "LC TLS/dkf": (TLS, DASKFLEET)}
#: ``client.restart()`` is compared with plain LocalCluster's only: a TLS LocalCluster's nannies often lose their
#: workers for good on a restart here (distributed#7312's race, which TLS's slower connections make likely).
RESTART_CONTENDERS = (DASKFLEET, PLAIN)
RESTART_TIMEOUT_S = 120
#: A plain LocalCluster whose restart lost its workers for good (distributed#7312, seen here in about one restart of
#: four) is replaced by a new one this many times at most, so the comparison still gets its figures.
PLAIN_REPLACEMENTS = 3

#: Holds one LocalCluster until its stdin closes; argv[1] is "plain" or the directory of its TLS files.
LOCALCLUSTER_SCRIPT = """
import sys
from distributed import LocalCluster, Security
kwargs = {}
if sys.argv[1] != "plain":
    tls = sys.argv[1]
    kwargs = dict(protocol="tls", security=Security(
        tls_ca_file=f"{tls}/ca.pem", require_encryption=True,
        tls_scheduler_cert=f"{tls}/scheduler.pem", tls_scheduler_key=f"{tls}/scheduler.key",
        tls_worker_cert=f"{tls}/worker.pem", tls_worker_key=f"{tls}/worker.key",
        tls_client_cert=f"{tls}/client.pem", tls_client_key=f"{tls}/client.key",
    ))
with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0", **kwargs) as cluster:
    print(cluster.scheduler_address, flush=True)
    sys.stdin.read()
"""


def _inc(x: int) -> int:
    return x + 1


# The workloads: each takes a client and returns the seconds it took.

def single_future(client: Client, data: Path) -> float:
    start = time.perf_counter()
    for index in range(ROUND_TRIPS):
        assert client.submit(_inc, index, pure=False).result() == index + 1
    return (time.perf_counter() - start) / ROUND_TRIPS


def small_tasks(client: Client, data: Path) -> float:
    start = time.perf_counter()
    results = client.gather(client.map(_inc, range(SMALL_TASKS), pure=False))
    elapsed = time.perf_counter() - start
    assert results[-1] == SMALL_TASKS
    return elapsed


def parquet_groupby(client: Client, data: Path) -> float:
    import dask.dataframe as dd  # noqa: PLC0415

    start = time.perf_counter()
    result = dd.read_parquet(data / "parquet").groupby("key").agg({"x": "mean", "y": "sum"}).compute()
    elapsed = time.perf_counter() - start
    assert len(result) == 100
    return elapsed


def p2p_merge(client: Client, data: Path) -> float:
    import dask  # noqa: PLC0415
    import dask.dataframe as dd  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    left = dask.datasets.timeseries(start="2000-01-01", end="2000-01-09", freq="10s", partition_freq="1D", seed=1)
    right = dd.from_pandas(pd.DataFrame({"id": range(2000), "w": range(2000)}), npartitions=2)
    start = time.perf_counter()
    rows = dd.merge(left, right, on="id", shuffle_method="p2p").map_partitions(len).compute().sum()
    elapsed = time.perf_counter() - start
    assert rows == 8 * 86_400 // 10
    return elapsed


def array_reduction(client: Client, data: Path) -> float:
    import dask.array as da  # noqa: PLC0415

    x = da.random.default_rng(1).random((4000, 4000), chunks=(500, 500))
    start = time.perf_counter()
    total = float((x + x.T).sum().compute())
    elapsed = time.perf_counter() - start
    assert 15.9e6 < total < 16.1e6
    return elapsed


def timed(workload: Callable[[Client, Path], float], client: Client, data: Path) -> float:
    """``workload`` on ``client``'s cluster. The collections' ``.compute()`` runs on the current client, which is the
    one entered last, not the one passed in: without this, three of the five workloads ran every contender's turn
    on the same cluster."""
    with client.as_current():
        return workload(client, data)


WORKLOADS: dict[str, Callable[[Client, Path], float]] = {
    "single future (one round trip)": single_future,
    f"map of {SMALL_TASKS:,} small tasks": small_tasks,
    "parquet groupby": parquet_groupby,
    "p2p merge": p2p_merge,
    "array reduction": array_reduction,
}


def write_parquet(directory: Path, files: int = 16, rows: int = 100_000) -> None:
    """A small dataset: ``files`` parquet files of ``rows`` rows, 100 distinct keys."""
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(files):
        frame = pd.DataFrame({"key": rng.integers(0, 100, rows), "x": rng.random(rows), "y": rng.random(rows)})
        frame.to_parquet(directory / f"part-{index:03d}.parquet")


@contextmanager
def _localcluster(argument: str, log: Path):
    proc = subprocess.Popen([sys.executable, "-c", LOCALCLUSTER_SCRIPT, argument], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)  # noqa: SIM115
    try:
        address = proc.stdout.readline().strip()
        if not address:
            raise RuntimeError(f"LocalCluster ({argument}) did not start; see {log}")
        yield address, proc.pid
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _daskfleet(state: Path):
    running = local.up(state, workers=2, threads=1)  # what `make local` starts, with its default scaling
    try:
        yield running.address, running.supervisor.pid
    finally:
        local.down(state)


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of a process tree (a cluster's processes) so far."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _settle(pids: list[int], timeout: float = 60.0, quiet_cpu_s: float = 0.25, every_s: float = 0.5) -> None:
    """Wait until the clusters' processes use under ``quiet_cpu_s`` of CPU within ``every_s`` (bounded by ``timeout``):
    what a restart starts in the background (daskfleet's spare agents importing, a nanny's late cleanup) is done
    before the next restart is timed, so it slows neither contender."""
    deadline = time.monotonic() + timeout
    last = sum(_cpu_seconds(pid) for pid in pids)
    while time.monotonic() < deadline:
        time.sleep(every_s)
        now = sum(_cpu_seconds(pid) for pid in pids)
        if now - last < quiet_cpu_s:
            return
        last = now


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(value) for value in values))


def run(root: Path) -> dict[str, float]:
    root.mkdir(parents=True, exist_ok=True)
    write_parquet(root / "data" / "parquet")
    (root / "tls").mkdir()
    client_tls = tls_files(root / "tls")
    times: dict[str, dict[str, list[float]]] = {name: {label: [] for label in CONTENDERS} for name in WORKLOADS}
    restarts: dict[str, list[float]] = {label: [] for label in RESTART_CONTENDERS}
    timed_out: set[str] = set()  # a cluster whose restart timed out is not restarted again
    replaced = 0  # plain LocalClusters replaced after their restart lost the workers
    with ExitStack() as stack:
        fleet_address, fleet_pid = stack.enter_context(_daskfleet(root / "daskfleet"))
        tls_address, tls_pid = stack.enter_context(_localcluster(str(root / "tls"), root / "tls.log"))
        plain_address, plain_pid = stack.enter_context(_localcluster("plain", root / "plain.log"))
        clients = {
            DASKFLEET: stack.enter_context(daskfleet.connect(LOCAL_CLUSTER, state_dir=str(root / "daskfleet"))),
            TLS: stack.enter_context(Client(tls_address, security=client_tls)),
            PLAIN: stack.enter_context(Client(plain_address)),
        }
        pids = {DASKFLEET: fleet_pid, TLS: tls_pid, PLAIN: plain_pid}
        for client in clients.values():
            client.wait_for_workers(2, timeout=120)
            for workload in WORKLOADS.values():  # warm-up: imports on the workers, first connections
                if workload is small_tasks:
                    client.gather(client.map(_inc, range(500), pure=False))
                else:
                    timed(workload, client, root / "data")
        cpu = {label: _cpu_seconds(pid) for label, pid in pids.items()}
        started = time.monotonic()
        for index in range(ROUNDS):
            order = CONTENDERS[index % 3:] + CONTENDERS[: index % 3]
            for name, workload in WORKLOADS.items():
                for label in order:  # each turn starts on a quiet machine: the last turn's cluster has let its
                    _settle(list(pids.values()))  # 10,000 tasks go, and no turn pays for another's clean-up
                    times[name][label].append(timed(workload, clients[label], root / "data"))
        minutes = (time.monotonic() - started) / 60
        cpu = {label: (_cpu_seconds(pid) - cpu[label]) / minutes for label, pid in pids.items()}
        for index in range(RESTART_ROUNDS):
            for label in [label for label in RESTART_CONTENDERS[index % 2:] + RESTART_CONTENDERS[: index % 2]
                          if label not in timed_out]:
                _settle([pids[name] for name in RESTART_CONTENDERS])
                start = time.perf_counter()
                try:
                    clients[label].restart(timeout=RESTART_TIMEOUT_S)
                except TimeoutError as exc:
                    print(f"  client.restart(), {label}, round {index + 1}: {exc}")
                    if label == PLAIN and replaced < PLAIN_REPLACEMENTS:  # distributed#7312: a new one goes on
                        replaced += 1
                        clients[PLAIN], pids[PLAIN] = _another_plain(stack, root / f"plain-{replaced}.log")
                    else:
                        timed_out.add(label)
                else:
                    restarts[label].append(time.perf_counter() - start)
    return report(times, restarts, cpu)


def _another_plain(stack: ExitStack, log: Path) -> tuple[Client, int]:
    """A new plain LocalCluster and its client, for the restarts after one whose nannies lost their workers."""
    address, pid = stack.enter_context(_localcluster("plain", log))
    client = stack.enter_context(Client(address))
    client.wait_for_workers(2, timeout=120)
    return client, pid


def report(times: dict[str, dict[str, list[float]]], restarts: dict[str, list[float]], cpu: dict[str, float]) -> dict[str, float]:
    medians = {name: {label: statistics.median(values) for label, values in by.items()} for name, by in times.items()}
    print(f"  {'workload':<34}" + "".join(f"{label:>18}" for label in CONTENDERS)
          + f"{'LC/daskfleet':>14}{'LC/LC TLS':>11}{'LC TLS/dkf':>12}  (median seconds; speed ratios)")
    for name, by in medians.items():
        print(f"  {name:<34}" + "".join(f"{by[label]:>18.4f}" for label in CONTENDERS)
              + f"{by[PLAIN] / by[DASKFLEET]:>14.3f}{by[PLAIN] / by[TLS]:>11.3f}{by[TLS] / by[DASKFLEET]:>12.3f}")
    for name, by in times.items():
        for label in CONTENDERS:
            print(f"    {name}, {label}: {summary(by[label])} s")
    print("  CPU seconds per minute of the rounds, each cluster's processes (scheduler, workers; daskfleet's "
          "supervisor; a LocalCluster's nannies): " + ", ".join(f"{label} {value:.1f}" for label, value in cpu.items()))
    for label in RESTART_CONTENDERS:
        print(f"  client.restart(), {label}: {summary(restarts[label]) if restarts[label] else 'none completed'} s")
    # The same by the median of each round's own ratio: the contenders ran back to back within a round, so a slow
    # minute of the shared machine slows all of them.
    rounds = {name: {pair: rounds_ratio(by[slower], by[faster]) for pair, (slower, faster) in PAIRS.items()}
              for name, by in times.items()}
    print(f"  {ROUNDS_HEADING:<34}" + "".join(f"{pair:>14}" for pair in PAIRS))
    for name, by in rounds.items():
        print(f"  {name:<34}" + "".join(f"{by[pair]:>14.3f}" for pair in PAIRS))
    return {
        "workloads, daskfleet speed / LocalCluster (geo mean)": _geomean(
            [by[PLAIN] / by[DASKFLEET] for by in medians.values()]),
        "  same, rounds' own ratios": _geomean([by["LC/daskfleet"] for by in rounds.values()]),
        "  LocalCluster TLS speed / LocalCluster (geo mean)": _geomean([by[PLAIN] / by[TLS] for by in medians.values()]),
        "  same, rounds' own ratios (TLS)": _geomean([by["LC/LC TLS"] for by in rounds.values()]),
        "  daskfleet speed / LocalCluster TLS (geo mean)": _geomean([by[TLS] / by[DASKFLEET] for by in medians.values()]),
        "  same, rounds' own ratios (daskfleet's own)": _geomean([by["LC TLS/dkf"] for by in rounds.values()]),
        **({"client.restart() daskfleet / LocalCluster (time)": medians_ratio(restarts[DASKFLEET], restarts[PLAIN]),
            # not common.rounds_ratio: a restart that timed out leaves the two sides' rounds of unequal length
            "  same, rounds' own ratios (restart)": statistics.median(
                fleet / plain for fleet, plain in zip(restarts[DASKFLEET], restarts[PLAIN]))}
           if restarts[DASKFLEET] and restarts[PLAIN] else {}),
    }


if __name__ == "__main__":  # python -m benchmarks.localcluster: this benchmark alone
    import tempfile

    with tempfile.TemporaryDirectory(prefix="daskfleet-bench-") as directory:
        ratios = run(Path(directory) / "localcluster")
    for key, value in ratios.items():
        print(f"  {key:<52} {value:.3f}")
