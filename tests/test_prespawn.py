"""Workers start with the environment distributed's nanny gives its worker process, read from distributed's config."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest
from distributed import Nanny

import daskfleet
from conftest import USER_NANNY_CONFIG
from daskfleet.aws.userdata import WORKER_ENVIRONMENT_DROPIN, render_worker_environment
from daskfleet.errors import DaskfleetError
from daskfleet.local import cluster as local
from daskfleet.node.prespawn import REEXEC_MARK, worker_environment
from daskfleet.node.sizing import local_worker_size
from daskfleet.node.spec import NodeSpec
from daskfleet.trust import pki

NANNY_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED")


def nanny_environment() -> dict[str, str]:
    """What distributed's own Nanny would give its worker process here (constructed only, never started)."""
    return dict(Nanny("tls://127.0.0.1:1", nthreads=1).env)


@pytest.mark.parametrize(("config", "environ"), [
    ({}, {}),
    ({"distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": 0, "OMP_NUM_THREADS": None, "X_EXTRA": "y"}}, {}),
    ({"distributed.nanny.environ": {"OMP_NUM_THREADS": 4, "FOO": "bar"}}, {}),
    ({"distributed.nanny.pre-spawn-environ": {"PYTHONHASHSEED": 0}}, {"MKL_NUM_THREADS": "8"}),
    ({}, {"PYTHONHASHSEED": "123", "MALLOC_TRIM_THRESHOLD_": "1"}),
])
def test_the_variables_are_the_ones_distributeds_nanny_sets(monkeypatch, config, environ):
    for name in (*NANNY_VARIABLES, "FOO", "X_EXTRA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with dask.config.set(config):
        assert worker_environment() == nanny_environment()


def test_a_configuration_that_is_not_a_mapping_is_one_clear_error():
    with dask.config.set({"distributed.nanny.environ": ["OMP_NUM_THREADS=2"]}):
        with pytest.raises(DaskfleetError, match=r"^dask configuration distributed.nanny.environ: must map"):
            worker_environment()


def test_a_task_sees_the_nanny_environment_and_the_users_override_on_a_one_thread_worker(local_cluster):
    """Set before the worker process started (/proc/self/environ: what glibc and OpenMP read), as under a nanny."""

    def in_task() -> dict:  # local: sent by value, the workers cannot import this module
        import pyarrow  # noqa: PLC0415

        raw = Path("/proc/self/environ").read_bytes().decode()
        environ = dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)
        return {"environ": environ, "pyarrow_cpu_count": pyarrow.cpu_count(), "hash": hash("daskfleet")}

    with daskfleet.connect("local", state_dir=local_cluster.state_dir) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        size = local_worker_size(2, 1)
        assert [(info["nthreads"], info["memory_limit"]) for info in workers.values()] == [
            (1, size.memory_limit)] * 2 == [(local_cluster.worker_threads, local_cluster.worker_memory_limit)] * 2
        seen = client.run(in_task)
        assert len(seen) == 2
        for result in seen.values():
            environ = result["environ"]
            assert {name: environ.get(name) for name in NANNY_VARIABLES} == {
                "MALLOC_TRIM_THRESHOLD_": "131072",  # the user's override of distributed's 65536 (conftest)
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "6640",
            }
            assert environ.get("DASKFLEET_TEST_NANNY_ENVIRON") == "from-config"  # distributed.nanny.environ
            assert result["pyarrow_cpu_count"] == 1
        assert len({result["hash"] for result in seen.values()}) == 1  # one hash seed across the workers
    logs = sorted((Path(local_cluster.state_dir) / "logs").glob("worker-*.log"))
    assert logs and not any("starting again" in path.read_text() for path in logs)  # the supervisor set it: one start


def test_an_agent_started_without_it_starts_again_once_with_it(tmp_path, cluster_ca, monkeypatch):
    """The path of an instance, whose unit sets none of it: the worker's agent re-executes itself, same pid."""
    node = tmp_path / "worker"
    spec = NodeSpec(cluster=local.LOCAL_CLUSTER, role="worker", scheduler_address="tls://127.0.0.1:9", name="w",
                    connect_timeout_s=600)
    cert = pki.issue_certificate(cluster_ca, local.LOCAL_CLUSTER, "worker", ip_addresses=(local.HOST,))
    local.write_node_dir(node, spec, cluster_ca, cert)
    env = {name: value for name, value in os.environ.items() if name not in NANNY_VARIABLES}
    env.update(USER_NANNY_CONFIG)
    log, run = tmp_path / "agent.log", tmp_path / "run"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daskfleet", "node", "worker", "--source", f"dir:{node}", "--runtime-dir", str(run)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:  # until the re-executed agent has prepared its node (its TLS files): it waits for the scheduler then
        deadline = time.monotonic() + 300  # generous: a loaded machine
        while not (REEXEC_MARK in (environ := _started_with(proc.pid)) and (run / "tls").exists()):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    assert {name: environ.get(name) for name in (*NANNY_VARIABLES, "DASKFLEET_TEST_NANNY_ENVIRON")} == {
        "MALLOC_TRIM_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "6640", "DASKFLEET_TEST_NANNY_ENVIRON": "from-config",
    }
    text = log.read_text()
    assert text.count("starting again with the environment distributed's nanny gives a worker") == 1, text
    assert "still not what" not in text and "from-config" not in text  # logged by name, never by value


def _started_with(pid: int) -> dict[str, str]:
    """The environment process ``pid`` was started (or last re-executed) with."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)


def test_the_instance_workers_unit_drop_in_sets_them_so_the_agent_starts_once():
    """The image renders it from its own Dask configuration; systemd reads it for the worker unit only."""
    assert WORKER_ENVIRONMENT_DROPIN == "/etc/systemd/system/daskfleet-node@worker.service.d/nanny-environment.conf"
    assert render_worker_environment(worker_environment({})) == (
        '[Service]\nEnvironment="MALLOC_TRIM_THRESHOLD_=65536"\nEnvironment="MKL_NUM_THREADS=1"\n'
        'Environment="OMP_NUM_THREADS=1"\nEnvironment="OPENBLAS_NUM_THREADS=1"\nEnvironment="PYTHONHASHSEED=6640"\n'
    )
    assert render_worker_environment({"X": 'a "b" \\ 100%'}) == '[Service]\nEnvironment="X=a \\"b\\" \\\\ 100%%"\n'
    with pytest.raises(ValueError, match="'BAD NAME' is not one systemd can set"):
        render_worker_environment({"BAD NAME": "1"})
