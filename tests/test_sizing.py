"""Worker sizes: the local cluster splits the machine as distributed's LocalCluster does; bad sizes are named."""

from __future__ import annotations

import logging

import distributed.system
import pytest
from distributed import LocalCluster
from distributed.core import Status
from distributed.deploy import local as deploy_local
from distributed.deploy.spec import SpecCluster
from distributed.worker_memory import parse_memory_limit

from daskfleet.errors import DaskfleetError, ExitCode
from daskfleet.local.cluster import local_scaling, worker_size
from daskfleet.node.sizing import MEMORY_LIMIT_FORMS, WorkerSize, check_memory_limit, local_worker_size, spec_worker_size
from daskfleet.node.spec import parse_spec

GIB = 2**30
WORKER = {"cluster": "analytics", "role": "worker", "scheduler_address": "tls://10.0.0.5:8786"}


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has ``cores`` cores and ``memory`` bytes, for distributed and daskfleet alike."""

    def pretend(cores: int, memory: int) -> None:
        monkeypatch.setattr(deploy_local, "CPU_COUNT", cores)  # what LocalCluster splits
        monkeypatch.setattr("dask.system.CPU_COUNT", cores)
        monkeypatch.setattr(distributed.system, "MEMORY_LIMIT", memory)

    return pretend


def local_cluster_worker(monkeypatch, cores: int, **kwargs) -> WorkerSize:
    """The size LocalCluster's own constructor gives each worker, read from the spec it hands SpecCluster.

    SpecCluster's constructor is replaced, so nothing starts. A worker given a memory limit reads it
    itself, with distributed's parse_memory_limit against the machine's cores.
    """
    seen = {}

    def capture(self, *, worker, workers, **_):
        seen.update(worker["options"], count=len(workers))
        self.status = Status.closed

    monkeypatch.setattr(SpecCluster, "__init__", capture)
    LocalCluster(**kwargs)
    limit = parse_memory_limit(seen["memory_limit"], seen["nthreads"], cores, logger=logging.getLogger("test"))
    return WorkerSize(seen["nthreads"], limit)


MACHINES = [(2, 24 * GIB), (8, 32 * GIB), (6, 15 * GIB + 12345), (64, 512 * GIB), (1, 4 * GIB)]


@pytest.mark.parametrize(("cores", "memory"), MACHINES)
@pytest.mark.parametrize("workers", [1, 2, 3, 4, 7])
def test_the_default_split_is_local_clusters(monkeypatch, machine, cores, memory, workers):
    machine(cores, memory)
    expected = local_cluster_worker(monkeypatch, cores, n_workers=workers)
    assert local_worker_size(workers) == expected
    assert local_worker_size(workers, cpu_count=cores) == expected


@pytest.mark.parametrize(("cores", "memory"), MACHINES[:3])
@pytest.mark.parametrize(("workers", "threads", "memory_limit"), [
    (2, 1, None), (2, 3, None), (4, None, "4GiB"), (2, 2, "0.25"), (3, 2, "auto"), (2, None, "auto"),
    (1, None, "1000000000"), (2, 1, "1TiB"),  # more than the machine has: the machine's memory, as a worker reads it
])
def test_threads_and_memory_limit_given_are_read_as_local_cluster_reads_them(
    monkeypatch, machine, cores, memory, workers, threads, memory_limit,
):
    machine(cores, memory)
    options = {"threads_per_worker": threads} if threads else {}
    if memory_limit is not None:
        options["memory_limit"] = memory_limit
    expected = local_cluster_worker(monkeypatch, cores, n_workers=workers, **options)
    assert local_worker_size(workers, threads, memory_limit) == expected


@pytest.mark.parametrize(("adapt", "cap", "fill"), [((0, 4), None, 4), ((1, 8), 4, 4), ((2, 2), None, 2), ((0, 0), None, 1)])
def test_adapt_sizes_each_worker_so_that_the_most_at_once_fill_the_machine(monkeypatch, machine, adapt, cap, fill):
    machine(8, 32 * GIB)
    scaling = local_scaling(*adapt, cap=cap)
    assert worker_size(scaling, None, None) == local_cluster_worker(monkeypatch, 8, n_workers=fill)


def test_the_size_reads_for_a_person():
    assert WorkerSize(1, 12_630_000_000).describe() == "1 thread, 11.76 GiB memory limit"
    assert WorkerSize(4, 4 * GIB).describe() == "4 threads, 4.00 GiB memory limit"


@pytest.mark.parametrize("value", ["4GiB", "500MB", "1.5 GiB", "0.5", "1", "auto", "2000000000", 0.25, 4 * GIB])
def test_distributeds_memory_limit_forms_are_accepted(value):
    assert check_memory_limit(value) == str(value).strip()


@pytest.mark.parametrize("value", ["4GX", "lots", "", "0", "0GiB", "-1", "-2GiB", "1.5", "inf", "nan", True, None])
def test_a_bad_memory_limit_says_what_is_accepted(value):
    with pytest.raises(ValueError) as caught:
        check_memory_limit(value)
    assert str(caught.value) == f"{value!r} is not a memory limit (accepted: {MEMORY_LIMIT_FORMS})"


def test_bad_local_sizes_name_their_flag():
    scaling = local_scaling(2, 2)
    with pytest.raises(DaskfleetError) as caught:
        worker_size(scaling, None, "4GX")
    assert caught.value.exit_code == ExitCode.CONFIG
    assert caught.value.message == f"--memory-limit: '4GX' is not a memory limit (accepted: {MEMORY_LIMIT_FORMS})"
    with pytest.raises(DaskfleetError, match=r"^--threads: 0 is not a number of threads per worker \(accepted: 1 to 1024\)$"):
        worker_size(scaling, 0, None)


def test_a_node_spec_worker_is_the_whole_machine_unless_told(machine):
    """On an instance one worker runs: by default all of its cores and memory, as it always had."""
    machine(4, 16 * GIB)
    assert spec_worker_size(None, None) == WorkerSize(4, 16 * GIB)
    assert spec_worker_size(2, None) == WorkerSize(2, 16 * GIB)  # fewer threads keep the whole memory
    assert spec_worker_size(None, "0.5") == WorkerSize(4, 8 * GIB)
    assert spec_worker_size(2, "auto") == WorkerSize(2, 8 * GIB)  # distributed's auto: the threads' share
    assert spec_worker_size(None, "12GiB") == WorkerSize(4, 12 * GIB)
    assert spec_worker_size(1, 3 * GIB) == WorkerSize(1, 3 * GIB)  # a local slot's bytes, as they are


@pytest.mark.parametrize("value", ["auto", "0.5", "4GiB", 4 * GIB])
def test_a_spec_holds_a_memory_limit_in_bytes_or_distributeds_form(value):
    assert parse_spec({**WORKER, "memory_limit": value}).memory_limit == value


@pytest.mark.parametrize(("value", "shown"), [
    ("4GX", f"memory_limit: '4GX' is not a memory limit (accepted: {MEMORY_LIMIT_FORMS})"),
    (0, "memory_limit: 0 bytes is not a memory limit"),
    (1.5, "memory_limit: 1.5 is not a memory limit"),
    ([1], "memory_limit: [1] is not a memory limit"),
])
def test_a_bad_spec_memory_limit_is_named(value, shown):
    with pytest.raises(DaskfleetError) as caught:
        parse_spec({**WORKER, "memory_limit": value})
    assert shown in caught.value.message and caught.value.exit_code == ExitCode.SPEC_INVALID
