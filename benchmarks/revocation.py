"""Scheduler throughput with the deny-list poller and the expired-peer sweep against without them.

Two schedulers run the agent's code path with every daskfleet plugin; one also runs the revocation watch
(``daskfleet.trust.revocation``) at a local cluster's intervals (the deny-list read every second, here a file
naming 200 revoked users, and the live connections swept every second: 30 s and 15 s on AWS), the other not.
Rounds alternate between them so drift on a shared machine hits both.
"""

from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path

from daskfleet.local.cluster import LOCAL_EXPIRY_SWEEP_S, LOCAL_REVOCATION_POLL_S
from daskfleet.local.state import LOCAL_CLUSTER
from daskfleet.node.spec import RevocationPolicy
from daskfleet.trust.denylist import DenyList

from .common import BenchPki, medians_ratio, rounds_ratio, summary
from .throughput import _cluster, measure_rounds

REVOKED_USERS = 200


def _watch_cost_us(deny_file: Path, connections: int = 200, polls: int = 200) -> float:
    """Microseconds the scheduler's loop spends in one poll of an unchanged deny-list file plus one sweep, with
    ``connections`` live connections, in this process (no scheduler: the cost the rounds measure among the noise)."""
    import asyncio
    import datetime as dt
    from types import SimpleNamespace

    from daskfleet.trust.audit import AuditLog
    from daskfleet.trust.gatekeeper import Gatekeeper
    from daskfleet.trust.guards import SchedulerGuard
    from daskfleet.trust.liveness import LivePeer
    from daskfleet.trust.peers import Peer
    from daskfleet.trust.revocation import RevocationWatch, file_reader

    guard = SchedulerGuard(Gatekeeper(cluster=LOCAL_CLUSTER, expected_fingerprint="sha256:" + "0" * 64, versions={}),
                           AuditLog(None))
    guard.scheduler = SimpleNamespace(client_comms={}, clients={})
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=12)
    comm = SimpleNamespace(closed=lambda: False, abort=lambda: None)
    for index in range(connections):
        peer = Peer(LOCAL_CLUSTER, "client", f"user-{index}", f"tls://127.0.0.1:{10000 + index}", later)
        guard.live[f"client-{index}"] = LivePeer(comm, peer, "client", later)
    watch = RevocationWatch(guard, file_reader(deny_file), poll_s=1, sweep_s=1)

    async def polls_and_sweeps() -> float:
        await watch.poll_once()  # the first read applies the list (and logs nothing per user)
        start = time.perf_counter()
        for _ in range(polls):
            await watch.poll_once()
            await guard.sweep_expired()
        return (time.perf_counter() - start) / polls * 1e6

    return asyncio.run(polls_and_sweeps())


def run(root: Path, rounds: int = 5, tasks: int = 3000) -> dict[str, float]:
    from daskfleet.trust import pki

    bench = BenchPki(root, pki.create_ca(LOCAL_CLUSTER))
    deny = DenyList()
    for index in range(REVOKED_USERS):
        deny = deny.with_entry(f"revoked-{index}", by="bench", reason="benchmark", at=time.time())
    root.mkdir(parents=True, exist_ok=True)  # make bench passes a fresh subdirectory
    deny_file = root / "deny-list.json"
    deny_file.write_text(deny.to_json())
    policy = RevocationPolicy(deny_list_poll_s=LOCAL_REVOCATION_POLL_S, expiry_sweep_s=LOCAL_EXPIRY_SWEEP_S,
                              deny_list_file=str(deny_file))
    contenders = {"with revocation": ("all", policy), "without": ("no-revocation", None)}
    starts = {label: functools.partial(_cluster, bench, f"rev{index}", flag, revocation=revocation)
              for index, (label, (flag, revocation)) in enumerate(contenders.items())}
    rates = measure_rounds(bench, starts, rounds, tasks)
    for label, values in rates.items():
        print(f"  scheduler throughput, {label:<16} {summary(values)} tasks/s ({tasks} tasks)")
    cost = statistics.median(_watch_cost_us(deny_file) for _ in range(3))
    interval = min(LOCAL_REVOCATION_POLL_S, LOCAL_EXPIRY_SWEEP_S)
    print(f"  one poll + one sweep alone ({REVOKED_USERS} revoked, 200 live connections): {cost:.0f} µs, "
          f"{cost / (interval * 1e6):.4%} of the scheduler's loop at a {interval:g} s interval")
    return {  # the verdict reads the rounds' own ratios (common.rounds_ratio says why)
        "revocation watch's share of the loop (local intervals)": cost / (interval * 1e6),
        "throughput revocation watch / none": rounds_ratio(rates["with revocation"], rates["without"]),
        "  revocation, ratio of the medians": medians_ratio(rates["with revocation"], rates["without"]),
    }
