"""Which clusters have a live stack, asked of a Pulumi backend through the Pulumi CLI (for ``janitor --orphans``).

A stack's clusters are its ``cluster`` output (which names the fleet's shared resources) and the
names in its ``clusters`` output (each cluster of a fleet, whose resources carry its own name). A stack that holds resources but has no such
output yet (``pulumi up`` still running, or a failed first update) cannot be placed, so the
answer stops there: treating its cluster as an orphan could delete a stack being created.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from ..errors import DaskfleetError, ExitCode

PROJECT = "daskfleet"
INSTALL_HINT = "install it from https://www.pulumi.com/docs/install/, or name the live clusters with --live"

Run = Callable[..., subprocess.CompletedProcess]


def live_clusters_from_backend(
    backend: str, *, pulumi: str = "pulumi", project: str = PROJECT, run: Run = subprocess.run, timeout: float = 120,
) -> frozenset[str]:
    """The ``cluster`` output and the fleet's ``clusters`` of every stack of ``project`` in ``backend`` that holds resources."""
    if shutil.which(pulumi) is None:
        raise DaskfleetError(f"--pulumi-backend: the Pulumi CLI ({pulumi}) is not installed; {INSTALL_HINT}", ExitCode.CONFIG)
    env = {**os.environ, "PULUMI_BACKEND_URL": backend, "PULUMI_SKIP_UPDATE_CHECK": "true"}

    def ask(*args: str) -> Any:
        command = [pulumi, *args, "--json"]
        try:
            done = run(command, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise DaskfleetError(f"--pulumi-backend: `{' '.join(command)}` did not answer within {timeout:g} s", ExitCode.CONFIG) from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise DaskfleetError(f"--pulumi-backend {backend}: `{' '.join(command)}` failed: {last}", ExitCode.CONFIG)
        try:
            return json.loads(done.stdout or "null")
        except json.JSONDecodeError:
            raise DaskfleetError(f"--pulumi-backend: `{' '.join(command)}` printed no JSON", ExitCode.CONFIG) from None

    live = set()
    for stack in ask("stack", "ls", "--all", "--project", project) or []:
        name = stack.get("name", "")
        if stack.get("resourceCount") == 0:
            continue  # holds nothing, so it keeps nothing alive
        outputs = ask("stack", "output", "--stack", name) or {}
        cluster = outputs.get("cluster")
        if not isinstance(cluster, str) or not cluster:
            raise DaskfleetError(
                f"--pulumi-backend: stack {name} holds resources but has no cluster output (is it being created?); "
                "its cluster cannot be told, so none is treated as an orphan. Retry later, or name the live clusters with --live",
                ExitCode.CONFIG,
            )
        live.add(cluster)
        fleet = outputs.get("clusters")
        if isinstance(fleet, dict):  # a stack from before fleets has none: its cluster is all it holds
            live.update(name for name in fleet if isinstance(name, str))
    return frozenset(live)
