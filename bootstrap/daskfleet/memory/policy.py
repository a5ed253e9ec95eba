"""When a worker is ended for memory, decided as distributed's nanny decides it, and the figures an instance's unit carries.

The nanny (``distributed.worker_memory.NannyMemoryManager``) checks its worker process's RSS every
``distributed.worker.memory.monitor-interval`` and ends it once the RSS exceeds
``distributed.worker.memory.terminate`` of the memory limit (``terminate: false``, or no limit: never).
The watchers (``daskfleet.memory.watch``) apply the same rule from outside the worker's process.

The watcher process imports this module, so it imports dask and distributed only where it parses them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import DaskfleetError, ExitCode

logger = logging.getLogger("daskfleet.memory")

TERMINATE_KEY = "distributed.worker.memory.terminate"
INTERVAL_KEY = "distributed.worker.memory.monitor-interval"

#: On an instance the worker's unit is throttled and reclaimed above this share of the machine's memory
#: (systemd ``MemoryHigh=``), and the worker's memory limit is capped at it (``cgroup_memory_limit``): the
#: watcher ends the worker at ``terminate`` of it first (85.5 % of the machine with distributed's 0.95).
INSTANCE_WORKER_MEMORY_HIGH_PERCENT = 90
#: ... and above this share (``MemoryMax=``) the kernel ends the unit (``OOMPolicy=kill``): an OOM kill inside
#: the worker's cgroup, never a global one. The rest of the machine is the OS's and its agents'.
INSTANCE_WORKER_MEMORY_MAX_PERCENT = 95
#: The kernel's OOM killer takes the worker process first (the agent sets it on itself as it starts a worker)...
WORKER_OOM_SCORE_ADJ = 1000
#: ... and the node units' other processes last: the scheduler, a worker's watcher, the environment step.
NODE_OOM_SCORE_ADJ = -900


@dataclass(frozen=True)
class TerminatePolicy:
    """distributed's terminate fraction (None: ``terminate: false``, never end the worker) and its check interval."""

    fraction: float | None
    interval_s: float

    @classmethod
    def from_config(cls, get: Callable[[str], Any] | None = None) -> TerminatePolicy:
        """Read from Dask's configuration, so the user's overrides (files, ``DASK_…`` variables) count."""
        import dask.config  # noqa: PLC0415  (the watcher process never reads the configuration)
        from dask.utils import parse_timedelta  # noqa: PLC0415

        get = get or dask.config.get
        fraction = get(TERMINATE_KEY)
        if fraction is False or fraction is None:
            fraction = None
        elif isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or fraction <= 0:
            raise DaskfleetError(
                f"{TERMINATE_KEY}: got {fraction!r}; accepted: a fraction of the worker's memory limit above 0 "
                "(distributed's default 0.95), or false to never end a worker for memory", ExitCode.CONFIG,
            )
        interval = get(INTERVAL_KEY)
        try:
            seconds = parse_timedelta(interval, default=False)  # as the nanny: a unit is required
        except (ValueError, TypeError, KeyError):
            seconds = None
        if not isinstance(seconds, (int, float)) or seconds <= 0:
            raise DaskfleetError(
                f"{INTERVAL_KEY}: got {interval!r}; accepted: a duration above 0 with its unit, such as 100ms or 0.5s", ExitCode.CONFIG,
            )
        return cls(None if fraction is None else float(fraction), float(seconds))


def exceeds(rss: int, limit: int, fraction: float) -> bool:
    """The nanny's test: the worker is ended once its RSS is above ``fraction`` of its limit."""
    return rss / limit > fraction


@dataclass(frozen=True)
class MemoryKill:
    """A worker found above its threshold: its RSS then, its limit and the fraction it crossed."""

    pid: int
    rss: int
    limit: int
    fraction: float

    def describe(self) -> str:
        from dask.utils import format_bytes  # noqa: PLC0415  (loaded by then: the watcher imports distributed early)

        return (f"exceeded its memory limit: {format_bytes(self.rss)} of process memory (RSS) above "
                f"{self.fraction:.0%} of its {format_bytes(self.limit)} limit ({TERMINATE_KEY})")


def cgroup_memory_limit(
    cgroup_file: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup"),
) -> int | None:
    """The lowest ``memory.high`` or ``memory.max`` on this process's cgroup v2 path up to the root; None if unset.

    distributed reads only ``/sys/fs/cgroup/memory.max`` and ``.high``, the root cgroup's on a host, so it never
    sees a systemd unit's ``MemoryHigh=``/``MemoryMax=``. (cgroup v1 is left to distributed, which reads it.)
    """
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError:
        return None
    unified = next((line[3:] for line in lines if line.startswith("0::")), None)
    if unified is None:
        return None
    path = PurePosixPath(unified)
    limits = []
    for directory in (path, *path.parents):
        for name in ("memory.high", "memory.max"):
            try:
                text = (root / str(directory).lstrip("/") / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit():  # "max": no limit at this level
                limits.append(int(text))
    return min(limits, default=None)


def worker_memory_limit(memory_limit: str | float | None, nthreads: int, cgroup_limit: int | None) -> int | None:
    """The worker's limit in bytes, the one figure the worker and its watcher both use (None: no limit).

    distributed's own reading of the spec's ``memory_limit`` (``parse_memory_limit``: ``auto``, a fraction of the
    machine, ``4GiB``), capped by the cgroup's limit as distributed means to (on an instance, the unit's MemoryHigh).
    """
    from distributed.worker_memory import parse_memory_limit  # noqa: PLC0415  (the watcher process never parses)

    limit = parse_memory_limit(memory_limit, nthreads, logger=logger)
    if limit is not None and cgroup_limit is not None and cgroup_limit < limit:
        logger.info("memory limit %s capped at this cgroup's limit of %d bytes", memory_limit, cgroup_limit)
        return cgroup_limit
    return limit


def prefer_for_oom_kill(value: int = WORKER_OOM_SCORE_ADJ, path: Path = Path("/proc/self/oom_score_adj")) -> bool:
    """Make this process the kernel OOM killer's first choice (raising it needs no privilege); False where it cannot."""
    try:
        path.write_text(f"{value}\n")
    except OSError as exc:
        logger.debug("could not set %s to %d: %s", path, value, exc)
        return False
    return True
