"""How big a worker is: its threads and its memory limit in bytes, worked out as distributed does.

``local_worker_size`` splits this machine among the local cluster's workers as
``distributed.LocalCluster`` splits it among its own (threads from the cores, memory from
``distributed.system.MEMORY_LIMIT``); ``spec_worker_size`` is what the agent gives the worker of a
node spec (on an instance: the whole instance unless the stack says otherwise). Memory limits
are read with distributed's own ``parse_memory_limit`` once their form is checked here, so a bad
value gets one error naming what is accepted rather than a worker limited to 1 byte. dask and
distributed are imported only when a size is worked out: node specs check their form without them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

logger = logging.getLogger("daskfleet.sizing")

#: What a memory limit may be, for error messages and descriptions.
MEMORY_LIMIT_FORMS = (
    "a size such as 4GiB or 500MB, a fraction of the machine's memory such as 0.5, "
    "or auto (the worker's share of the memory by its threads)"
)


def check_memory_limit(value: str | int | float) -> str:
    """``value`` as distributed's memory-limit text, if it is one daskfleet accepts; ValueError otherwise.

    Refused: 0 or less (distributed reads 0 as "no limit": a worker without a limit can take its
    machine down), and numbers above 1 that are not whole bytes (distributed would read 1.5 as 1 byte).
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r} is not a memory limit (accepted: {MEMORY_LIMIT_FORMS})")
    text = str(value).strip()
    if text == "auto":
        return text
    if not text[:1].isdigit() and not text.startswith("."):  # parse_bytes reads "GiB" as 1 GiB, "" as 1 byte
        raise ValueError(f"{value!r} is not a memory limit (accepted: {MEMORY_LIMIT_FORMS})")
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        if not (0 < number <= 1 or (number > 1 and math.isfinite(number) and number.is_integer())):
            raise ValueError(f"{value!r} is not a memory limit (accepted: {MEMORY_LIMIT_FORMS})")
        return text
    from dask.utils import parse_bytes  # noqa: PLC0415  (dask's parser, as distributed's)

    try:
        size = parse_bytes(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise ValueError(f"{value!r} is not a memory limit (accepted: {MEMORY_LIMIT_FORMS})")
    return text


def memory_limit_bytes(value: str | int, nthreads: int, total_cores: int | None = None) -> int:
    """A worker's memory limit in bytes, as distributed's Worker reads ``value`` (at most the machine's memory)."""
    from distributed.worker_memory import parse_memory_limit  # noqa: PLC0415  (imports distributed)

    text = check_memory_limit(value)
    limit = parse_memory_limit(text, nthreads, total_cores or _cpu_count(), logger=logger)
    assert limit is not None and limit > 0, (value, limit)  # check_memory_limit refuses what reads as "no limit"
    return limit


def _cpu_count() -> int:
    """The cores dask and distributed count (affinity and cgroup quota included), as LocalCluster splits them."""
    from dask.system import CPU_COUNT  # noqa: PLC0415

    return CPU_COUNT


@dataclass(frozen=True)
class WorkerSize:
    """One worker's threads and memory limit (bytes)."""

    nthreads: int
    memory_limit: int

    def describe(self) -> str:
        from dask.utils import format_bytes  # noqa: PLC0415

        threads = "1 thread" if self.nthreads == 1 else f"{self.nthreads} threads"
        return f"{threads}, {format_bytes(self.memory_limit)} memory limit"


def local_worker_size(
    workers: int, threads: int | None = None, memory_limit: str | None = None, cpu_count: int | None = None,
) -> WorkerSize:
    """Each of ``workers`` workers on this machine, as ``LocalCluster(n_workers=workers, ...)`` sizes them.

    Threads: ``threads``, else the cores split among the workers (rounded up, as LocalCluster
    over- rather than under-commits). Memory: ``memory_limit`` as the worker reads it, else the
    machine's memory split among the workers.
    """
    from distributed.worker_memory import parse_memory_limit  # noqa: PLC0415

    cores = cpu_count or _cpu_count()
    count = max(1, workers)
    nthreads = threads or max(1, math.ceil(cores / count))
    if memory_limit is None:
        limit = parse_memory_limit("auto", 1, count, logger=logger)
        assert limit is not None
    else:
        limit = memory_limit_bytes(memory_limit, nthreads, cores)
    return WorkerSize(nthreads, limit)


def spec_worker_size(nthreads: int | None, memory_limit: str | int | None) -> WorkerSize:
    """The worker of a node spec: its threads (else one per core) and limit (else all of the machine's memory).

    A node runs one worker, so unset values size it as ``LocalCluster(n_workers=1)`` would; bytes are taken as
    they are (a local worker slot's, resolved by ``local up``).
    """
    if isinstance(memory_limit, int):
        size = WorkerSize(nthreads or _cpu_count(), memory_limit)
    else:
        size = local_worker_size(1, nthreads, memory_limit)
    return size
