"""Scaling: how soon a backlog asks for workers, and how much worker time idling costs.

Backlog to scale-up request: a scheduler with the scaling plugin and a backend that records
when it is asked for workers; a backlog is submitted at a random moment of the decision cycle.
The delay is counted in adaptive intervals, with the plugin deciding at each submission (the
default) and, side by side, only every interval.

Idle waste: a real local cluster (``local.up``, agent processes) with a client connected; after
the last task, the worker-seconds until the worker processes are gone, divided by (workers x
idle timeout). 1.0 would be workers leaving exactly at the timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import time
from pathlib import Path

import psutil
from distributed import Client, Scheduler

from daskfleet.local import cluster as local
from daskfleet.local.state import LocalCluster, client_material
from daskfleet.scaling.core import LaunchFailures
from daskfleet.scaling.policy import ScalingSpec
from daskfleet.scaling.runner import ScalingPlugin
from daskfleet.trust.audit import AuditLog
from daskfleet.trust.tls import client_security

from .common import summary

INTERVAL_S = 5.0
BACKLOG_ROUNDS = 6
IDLE_TIMEOUT_S = 20.0
IDLE_INTERVAL_S = 0.5
IDLE_ROUNDS = 2
IDLE_WORKERS = 2


class RecordingBackend:
    """Asked for workers, it notes when and starts none."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def describe(self) -> str:
        return "recording backend"

    def outstanding(self) -> int:
        return 0

    def launch(self, count: int) -> int:
        self.asked.append(time.monotonic())
        return count

    def remove(self, names) -> None:
        pass

    def stop_scheduler(self) -> None:
        return None

    def launch_failures(self, since: float) -> LaunchFailures:
        return LaunchFailures("recording backend")

    def withdraw(self, count: int) -> None:
        pass


def _slow(x: int) -> int:
    time.sleep(1)
    return x


async def _backlog_delay(root: Path, decide_on_submit: bool) -> float:
    """Seconds from a backlog's submission to the scheduler asking for workers."""
    backend = RecordingBackend()
    plugin = ScalingPlugin(
        ScalingSpec(max_workers=8, interval_s=INTERVAL_S, idle_timeout_s=0, no_client_timeout_s=0),
        backend, AuditLog(root / "audit.jsonl"),
    )
    plugin.decide_on_submit = decide_on_submit
    async with Scheduler(port=0, dashboard_address=":0") as scheduler:
        scheduler.add_plugin(plugin, name="bench-scaling")
        await plugin.start(scheduler)
        async with Client(scheduler.address, asynchronous=True) as client:
            await asyncio.sleep(random.uniform(0.2, INTERVAL_S))  # a random moment of the decision cycle
            submitted = time.monotonic()
            futures = client.map(_slow, range(50), pure=False)
            while not backend.asked:
                await asyncio.sleep(0.005)
            await client.cancel(futures)
        plugin.stopping = True
    return backend.asked[0] - submitted


def backlog(root: Path) -> dict[str, float]:
    root.mkdir(parents=True, exist_ok=True)
    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # in-process client and scheduler close noisily
    delays: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(BACKLOG_ROUNDS):  # alternate, so drift on a shared machine hits both
        for on_submit in (True, False):
            delays[on_submit].append(asyncio.run(_backlog_delay(root, on_submit)) / INTERVAL_S)
    print(f"  deciding at each submission, in intervals of {INTERVAL_S:g}s: {summary(delays[True])}")
    print(f"  deciding every interval only, in intervals:         {summary(delays[False])}")
    return {
        "backlog to scale-up request (intervals, worst)": max(delays[True]),
        "  same, deciding every interval only (worst)": max(delays[False]),
    }


def _worker_processes(state: Path) -> list[psutil.Process]:
    recorded = LocalCluster.load(state)
    return [proc for node in recorded.nodes if node.role == "worker" and (proc := node.process()) is not None]


def _finish_time(x: int) -> float:
    time.sleep(0.2)
    return time.time()


def _idle_round(root: Path, index: int) -> float:
    state = root / f"idle-{index}"
    scaling = local.local_scaling(
        IDLE_WORKERS, IDLE_WORKERS, interval_s=IDLE_INTERVAL_S, idle_timeout_s=IDLE_TIMEOUT_S, no_client_timeout_s=0,
    )
    cluster = local.up(state, scaling=scaling, smoke=False)
    try:
        with Client(cluster.address, security=client_security(client_material(state), "local"), timeout=60) as client:
            client.wait_for_workers(IDLE_WORKERS, timeout=60)
            last = max(client.gather(client.map(_finish_time, range(8), pure=False)))
            workers = _worker_processes(state)
            gone: dict[int, float] = {}
            deadline = time.time() + IDLE_TIMEOUT_S * 3
            while len(gone) < len(workers) and time.time() < deadline:
                for proc in workers:
                    if proc.pid not in gone and (not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE):
                        gone[proc.pid] = time.time()
                time.sleep(0.02)
            if len(gone) < len(workers):
                raise RuntimeError("workers did not leave after the idle timeout")
    finally:
        local.down(state)
    waste = sum(moment - last for moment in gone.values())
    return waste / (len(workers) * IDLE_TIMEOUT_S)


def idle(root: Path) -> dict[str, float]:
    ratios = [_idle_round(root, index) for index in range(IDLE_ROUNDS)]
    print(f"  {IDLE_WORKERS} local workers, idle timeout {IDLE_TIMEOUT_S:g}s, decisions every {IDLE_INTERVAL_S:g}s, "
          f"client connected: {summary(ratios)}")
    return {"idle waste / idle timeout": statistics.median(ratios)}


def run(root: Path) -> dict[str, float]:
    print("Backlog to scale-up request:")
    ratios = backlog(root / "backlog")
    print("Idle waste (worker-seconds after the last task until the workers are gone):")
    ratios.update(idle(root / "idle"))
    return ratios
