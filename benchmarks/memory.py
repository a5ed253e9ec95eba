"""Memory limits without a nanny: what the watch costs, and how fast it ends a worker over its limit.

Throughput: two local clusters (``local.up``, 2 workers × 1 thread each), one whose supervisor watches its
workers' memory and one where nothing does (``distributed.worker.memory.terminate: false`` in the nodes'
environment, so the agents write no threshold to watch), in rounds of tiny tasks, taking turns to go first;
with the CPU time each cluster's supervisor used meanwhile, and the cost of one check alone.

Kill latency: workers limited to 1 GiB run a task that allocates 20 MB steps with 10 ms pauses. The benchmark
samples the worker's RSS and state from outside every millisecond (psutil) to see when it is first above
``terminate`` of the limit and when it is frozen, reads the time the watcher ended it (recorded in the worker's
run history just before its SIGKILL), and holds a pidfd on the process to see when it is gone (the kernel has
freed its memory). Once per worker: under the local supervisor (its workers), and under the agent's own watcher
process, as on an instance (workers started by hand against the same scheduler, whose scaler's cooldown keeps
it from retiring the extra workers). The figures are divided by ``distributed.worker.memory.monitor-interval``,
the watchers' interval; the target is on the watcher's own part, up to the SIGKILL.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import dask
import psutil
from dask.utils import parse_timedelta
from distributed import Client

import daskfleet
from daskfleet.local import cluster as local
from daskfleet.errors import ExitCode
from daskfleet.memory.watch import MemoryWatch, WatchedWorker
from daskfleet.local.state import LOCAL_CLUSTER, SUPERVISION_DIR, LocalCluster
from daskfleet.node.spec import NodeSpec
from daskfleet.node.supervision import RunHistory
from daskfleet.trust import pki

from .common import medians_ratio, rounds_ratio, summary

#: Workers the latency is measured on, per path.
KILLS = 3


def _inc(x: int) -> int:
    return x + 1


def _hog(step: int = 20_000_000, pause: float = 0.01, steps: int = 200) -> int:
    """Grow by ``step`` bytes at a time (written, so resident), up to 4 GB."""
    import time

    held = []
    for _ in range(steps):
        held.append(b"x" * step)
        time.sleep(pause)
    return len(held)


@contextmanager
def _cluster(state: Path, env: dict[str, str], workers: int = 2, **up):
    previous = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the supervisor and its nodes inherit it
    scaling = local.local_scaling(workers, workers, idle_timeout_s=0, no_client_timeout_s=0, cooldown_s=3600)
    try:
        running = local.up(state, scaling=scaling, **up)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        yield running
    finally:
        local.down(state)


def _rate(client: Client, tasks: int) -> float:
    start = time.perf_counter()
    client.gather(client.map(_inc, range(tasks), pure=False))
    return tasks / (time.perf_counter() - start)


def throughput(root: Path, rounds: int = 10, tasks: int = 1500) -> dict[str, float]:
    contenders = {"memory watched": {}, "not watched": {"DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE": "False"}}
    rates: dict[str, list[float]] = {label: [] for label in contenders}
    with _cluster(root / "watched", contenders["memory watched"]), _cluster(root / "unwatched", contenders["not watched"]):
        directories = dict(zip(contenders, ("watched", "unwatched")))
        clients = {label: daskfleet.connect(LOCAL_CLUSTER, state_dir=str(root / directory))
                   for label, directory in directories.items()}
        supervisors = {label: psutil.Process(LocalCluster.load(root / directory).supervisor.pid)
                       for label, directory in directories.items()}
        try:
            for client in clients.values():
                _rate(client, 500)  # warm-up
            started, cpu = time.monotonic(), {label: sum(proc.cpu_times()[:2]) for label, proc in supervisors.items()}
            for index in range(rounds):  # in turn first: a slow minute of the machine, or going first, hits both
                for label, client in list(clients.items())[:: 1 if index % 2 == 0 else -1]:
                    rates[label].append(_rate(client, tasks))
            minutes = (time.monotonic() - started) / 60
            cpu = {label: (sum(proc.cpu_times()[:2]) - cpu[label]) / minutes for label, proc in supervisors.items()}
        finally:
            for client in clients.values():
                client.close()
    for label, values in rates.items():
        print(f"  local cluster throughput, {label:<15} {summary(values)} tasks/s ({tasks} tasks); "
              f"its supervisor used {cpu[label]:.2f} CPU s per minute")
    return {  # the verdict reads the rounds' own ratios (common.rounds_ratio says why)
        "throughput memory watched / not watched": rounds_ratio(rates["memory watched"], rates["not watched"]),
        "  same, ratio of the medians": medians_ratio(rates["memory watched"], rates["not watched"]),
    }


def _kill_latency(client: Client, name: str, pid: int, threshold: float, history: Path) -> dict[str, float]:
    """Seconds from the worker's RSS first seen above ``threshold`` to its process frozen, to the watcher's kill
    (the time it recorded in the worker's run history just before SIGKILL) and to the process gone."""
    process = psutil.Process(pid)
    seen: dict[str, float] = {}

    def sample() -> None:
        while "frozen" not in seen:
            try:
                if "crossed" not in seen and process.memory_info().rss > threshold:
                    seen["crossed"] = time.time()
                if "crossed" in seen and process.status() == psutil.STATUS_STOPPED:
                    seen["frozen"] = time.time()
            except psutil.Error:
                return
            time.sleep(0.001)

    fd = os.pidfd_open(pid)  # from before the task starts: the pid cannot be reused meanwhile
    try:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        client.submit(_hog, workers=[name], pure=False)
        ready, _, _ = select.select([fd], [], [], 120)
        gone = time.time()
        if not ready:
            raise RuntimeError(f"{name} was not ended within 120s")
    finally:
        os.close(fd)
    sampler.join(10)
    if "crossed" not in seen:
        raise RuntimeError(f"{name} ended before its RSS was seen above the threshold")
    killed = [run.end for run in RunHistory(history).runs() if run.code == ExitCode.MEMORY_EXCEEDED]
    if not killed:
        raise RuntimeError(f"{name}'s run history records no memory kill")
    # Frozen for less than the sampler's millisecond before the kill: it was frozen by the kill at the latest.
    frozen = seen.get("frozen", killed[-1])
    return {"frozen": frozen - seen["crossed"], "killed": killed[-1] - seen["crossed"], "gone": gone - seen["crossed"]}


def _workers(client: Client) -> dict[str, int]:
    """Worker name -> pid, from the workers themselves."""
    pids = client.run(os.getpid)
    return {info["name"]: pids[address] for address, info in client.scheduler_info(n_workers=-1)["workers"].items()}


def latency(root: Path, kills: int = KILLS) -> dict[str, float]:
    interval = parse_timedelta(dask.config.get("distributed.worker.memory.monitor-interval"), default=False)
    threshold = 2**30 * dask.config.get("distributed.worker.memory.terminate")  # the nodes read the same configuration
    ca = pki.create_ca(LOCAL_CLUSTER)
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    seconds: dict[str, list[dict[str, float]]] = {"local supervisor": [], "agent's own watcher": []}
    with _cluster(root / "latency", env, workers=kills, ca=ca, memory_limit="1GiB") as running:
        agents = _agents_by_hand(root, running.address, ca, kills)
        try:
            with daskfleet.connect(LOCAL_CLUSTER, state_dir=str(root / "latency")) as client:
                client.wait_for_workers(2 * kills, timeout=120)
                time.sleep(10)  # the agents' watcher processes load distributed in the background
                for name, pid in sorted(_workers(client).items()):
                    by_hand = name.startswith("by-hand")
                    path = "agent's own watcher" if by_hand else "local supervisor"
                    history = root / "history" / f"{name}.json" if by_hand else root / "latency" / SUPERVISION_DIR / f"{name}.json"
                    try:
                        seconds[path].append(_kill_latency(client, name, pid, threshold, history))
                    except Exception as exc:  # noqa: BLE001  a failed kill is a result: it is printed
                        print(f"  {name}: {type(exc).__name__}: {exc}")
        finally:
            for agent in agents:
                agent.kill()
                agent.wait()
    ratios = {}
    for path, values in seconds.items():
        if not values:
            continue
        print(f"  {path} ({len(values)} workers, interval {interval * 1000:g} ms), from RSS above terminate:")
        for stage, what in (("frozen", "to the worker frozen (SIGSTOP)"), ("killed", "to the worker ended (SIGKILL)"),
                            ("gone", "to its process gone (the kernel has freed its memory)")):
            print(f"    {what:<54} {summary([value[stage] for value in values])} s")
        ratios[f"kill latency / interval, {path} (worst)"] = max(value["killed"] for value in values) / interval
        ratios[f"  to the process gone, {path} (worst)"] = max(value["gone"] for value in values) / interval
    return ratios


def _agents_by_hand(root: Path, address: str, ca: pki.IssuedCert, count: int) -> list[subprocess.Popen]:
    """Workers run as an instance's unit runs them: no supervisor, the agent's own watcher process."""
    agents = []
    for index in range(count):
        name = f"by-hand-{index}"
        cert = pki.issue_certificate(ca, LOCAL_CLUSTER, "worker", ip_addresses=(local.HOST,))
        spec = NodeSpec(cluster=LOCAL_CLUSTER, role="worker", scheduler_address=address, listen_host=local.HOST,
                        worker_port=0, name=name, nthreads=1, memory_limit="1GiB")
        local.write_node_dir(root / "nodes" / name, spec, ca, cert)
        agents.append(subprocess.Popen(
            [sys.executable, "-m", "daskfleet", "node", "worker", "--source", f"dir:{root / 'nodes' / name}",
             "--runtime-dir", str(root / "run" / name), "--restart-history", str(root / "history" / f"{name}.json")],
            stdout=open(root / f"{name}.log", "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,  # noqa: SIM115
        ))
    return agents


def check_cost(root: Path, checks: int = 20_000) -> None:
    """What one check costs the watcher: a read of one process's RSS (this process's, here) and the comparison."""
    root.mkdir(parents=True, exist_ok=True)
    interval = parse_timedelta(dask.config.get("distributed.worker.memory.monitor-interval"), default=False)
    record = WatchedWorker(pid=os.getpid(), name="bench", address="tls://127.0.0.1:1", scheduler_address="tls://127.0.0.1:1",
                           memory_limit=2**50, terminate=0.95, interval_s=interval, tls=("-", "-", "-"))
    watch = MemoryWatch(record)  # its line to no scheduler fails in the background, untimed
    start = time.perf_counter()
    for _ in range(checks):
        watch.check()
    seconds = (time.perf_counter() - start) / checks
    print(f"  one check (one read of /proc/<pid>/statm): {seconds * 1e6:.1f} us; at the {interval * 1000:g} ms interval "
          f"{seconds / interval:.4%} of a core per watched worker")


def run(root: Path) -> dict[str, float]:
    check_cost(root / "check")
    ratios = throughput(root / "throughput")
    ratios.update(latency(root / "latency"))
    return ratios


if __name__ == "__main__":  # python -m benchmarks.memory: this benchmark alone
    import tempfile

    with tempfile.TemporaryDirectory(prefix="daskfleet-bench-memory-") as directory:
        for label, value in run(Path(directory)).items():
            print(f"  {label:<56} {value:.3f}")
