"""Login to first computation: ``daskfleet.connect`` with no certificate (a key pair made, a CSR signed by the
cluster's vendor) against connecting with an existing certificate, on a 1-worker local cluster.

Both connect, compute one task and close, in alternating rounds, so load on the machine hits both alike. The
local vendor runs in process (the user's OS identity stands in for the IAM proof): on AWS the login adds one
Lambda invocation and one STS call, which this does not measure.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import daskfleet
from daskfleet.local import cluster as local

from .common import summary

ROUNDS = 7


def _inc(x: int) -> int:
    return x + 1


def _first_computation(state: Path, *, login: bool) -> float:
    started = time.perf_counter()
    # in_memory: a fresh key pair, never stored, so every round logs in; otherwise the stored certificate serves.
    with daskfleet.connect("local", state_dir=state, in_memory=login) as client:
        if client.submit(_inc, 1, pure=False).result(timeout=60) != 2:
            raise RuntimeError("wrong result")
    return time.perf_counter() - started


def run(root: Path) -> dict[str, float]:
    state = root / "cluster"
    local.up(state, scaling=local.local_scaling(1, 1, idle_timeout_s=0, no_client_timeout_s=0), threads=1)
    try:
        _first_computation(state, login=False)  # warm: imports, the worker's first task
        timings: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(ROUNDS):
            for login in (True, False):
                timings[login].append(_first_computation(state, login=login))
    finally:
        local.down(state)
    print(f"  login + first computation     {summary(timings[True])}")
    print(f"  existing certificate + first  {summary(timings[False])}")
    return {"login to first computation / existing certificate": statistics.median(timings[True])
            / statistics.median(timings[False])}
