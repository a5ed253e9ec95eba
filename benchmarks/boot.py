"""Worker boot-to-registered: the node agent vs plain `dask worker`, same TLS scheduler, same machine.

Registration time is the scheduler's own add-worker event timestamp minus the moment the
process was spawned, so polling adds no bias. Runs alternate between the contenders.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from distributed import Client, Security

from daskfleet.local.state import LOCAL_CLUSTER
from daskfleet.node.prespawn import worker_environment
from daskfleet.node.spec import NodeSpec

from .common import HOST, BenchPki, agent, stop, summary, wait_for_file


def _plain_scheduler(bench: BenchPki, files: Path, log: Path) -> tuple[subprocess.Popen, str]:
    scheduler_file = bench.root / "plain-scheduler.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", HOST, "--port", "0", "--protocol", "tls",
         "--tls-ca-file", str(files / "tls" / "ca.pem"), "--tls-cert", str(files / "tls" / "cert.pem"),
         "--tls-key", str(files / "tls" / "key.pem"), "--no-dashboard", "--scheduler-file", str(scheduler_file)],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        env={"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True", "PATH": "/usr/bin:/bin"},
    )
    return proc, wait_for_file(scheduler_file, proc)["address"]


def _registered_at(client: Client, name: str, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stamp, event in client.get_events("all"):
            if event.get("action") == "add-worker":
                info = client.scheduler_info(n_workers=-1)["workers"].get(event["worker"], {})
                if info.get("name") == name:
                    return stamp
        time.sleep(0.05)
    raise RuntimeError(f"worker {name} did not register")


def run(root: Path, rounds: int = 5) -> dict[str, float]:
    from daskfleet.trust import pki

    bench = BenchPki(root, pki.create_ca(LOCAL_CLUSTER))
    scheduler_spec = NodeSpec(cluster=LOCAL_CLUSTER, role="scheduler", listen_host=HOST, scheduler_port=0, dashboard_port=0)
    scheduler_files = bench.node_dir("scheduler", scheduler_spec)
    scheduler, address = _plain_scheduler(bench, scheduler_files, root / "scheduler.log")
    client_files = bench.client_files()
    security = Security(tls_ca_file=str(client_files / "ca.pem"), tls_client_cert=str(client_files / "cert.pem"),
                        tls_client_key=str(client_files / "key.pem"), require_encryption=True)
    # The agent starts as on an instance, whose unit sets the nanny's worker environment, and without it (it then
    # re-executes itself once to get it: daskfleet.node.prespawn).
    nanny = worker_environment()
    preset = {**os.environ, **nanny}
    bare = {name: value for name, value in os.environ.items() if name not in nanny}
    times: dict[str, list[float]] = {"agent (no nanny)": [], "agent, environment unset": [], "dask worker (nanny)": [],
                                     "dask worker --no-nanny": []}
    try:
        with Client(address, security=security) as client:
            for index in range(rounds):
                for label in times:
                    name = f"contender{list(times).index(label)}-{index}"
                    spec = NodeSpec(cluster=LOCAL_CLUSTER, role="worker", scheduler_address=address, listen_host=HOST,
                                    worker_port=0, name=name, nthreads=1)
                    node = bench.node_dir(name, spec)
                    log = root / f"{name}.log"
                    start = time.time()
                    if label.startswith("agent"):
                        proc = agent("worker", node, root / "run" / name, log, bare if "unset" in label else preset)
                    else:
                        tls = node / "tls"
                        argv = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--name", name, "--nthreads", "1",
                                "--host", HOST, "--tls-ca-file", str(tls / "ca.pem"), "--tls-cert", str(tls / "cert.pem"),
                                "--tls-key", str(tls / "key.pem"), "--no-dashboard"]
                        if "no-nanny" in label:
                            argv.append("--no-nanny")
                        proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
                    try:
                        times[label].append(_registered_at(client, name) - start)
                    finally:
                        stop(proc)
    finally:
        stop(scheduler)
    for label, values in times.items():
        print(f"  boot-to-registered, {label:<24} {summary(values)} s")
    agent_median = statistics.median(times["agent (no nanny)"])
    ratios = {
        "boot agent / dask worker (nanny)": agent_median / statistics.median(times["dask worker (nanny)"]),
        "boot agent / dask worker --no-nanny": agent_median / statistics.median(times["dask worker --no-nanny"]),
        "boot agent, environment unset / set": statistics.median(times["agent, environment unset"]) / agent_median,
    }
    return ratios
