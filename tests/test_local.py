"""`daskfleet local up | status | down`: the embedded default, driven as a user drives it."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import psutil
import pytest

from daskfleet.errors import ExitCode

from support import dashboard_context


def daskfleet(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskfleet", *args], capture_output=True, text=True, timeout=timeout)


def _processes_using(state_dir) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(state_dir) in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_up_status_down_leaves_no_process(tmp_path):
    state = tmp_path / "state"
    up = daskfleet("local", "up", "--workers", "1", "--threads", "1", "--memory-limit", "1.5GiB", "--state-dir", str(state))
    try:
        assert up.returncode == 0, up.stderr
        assert "smoke computation passed" in up.stdout
        assert "workers:   1 thread, 1.50 GiB memory limit each" in up.stdout
        assert "scheduler: tls://127.0.0.1:" in up.stdout and "dashboard: http://127.0.0.1:" in up.stdout
        assert f'daskfleet.connect("local", state_dir={str(state)!r})' in up.stdout
        recorded = json.loads((state / "cluster.json").read_text())
        pids = [node["pid"] for node in recorded["nodes"]]
        assert len(pids) == 2
        for pid in pids:  # every listening socket is on loopback
            for conn in psutil.Process(pid).net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    assert conn.laddr.ip == "127.0.0.1", conn

        again = daskfleet("local", "up", "--state-dir", str(state))
        assert again.returncode == ExitCode.LOCAL_FAILURE and "already runs" in again.stderr

        status = daskfleet("local", "status", "--state-dir", str(state))
        assert status.stdout.count("running") == 2
        # One URL to open: the forwarder's (the dashboard port itself asks for a certificate).
        forwarded = recorded_url = json.loads((state / "cluster.json").read_text())["dashboard_url"]
        assert f"dashboard: {forwarded}" in status.stdout and f"dashboard: {recorded_url}" in up.stdout
        assert "revoked:     nobody (the deny-list is empty)" in status.stdout
        assert urllib.request.urlopen(forwarded.replace("/status", "/health"), timeout=30).read() == b"ok"
        assert "1:1 (min:max), 1 thread, 1.50 GiB memory limit each" in status.stdout

        context = dashboard_context(state, "admin", user="local-admin")  # the dashboard port asks for a certificate
        health = recorded["dashboard"].replace("/status", "/health")
        assert urllib.request.urlopen(health, context=context, timeout=10).read() == b"ok"
        with pytest.raises(Exception):
            urllib.request.urlopen(health.replace("https://", "http://"), timeout=10).read()
    finally:
        down = daskfleet("local", "down", "--state-dir", str(state))
    assert down.returncode == 0 and "stopped 2 process(es)" in down.stdout
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert _processes_using(state) == []
    assert "no local cluster is running" in daskfleet("local", "status", "--state-dir", str(state)).stdout


@pytest.mark.parametrize("args", [[], ["node"], ["local"], ["local", "up"], ["local", "status"], ["local", "down"],
                                  ["local", "issue"], ["fingerprint"], ["revoke"], ["unrevoke"], ["dashboard"]])
def test_every_command_has_help(args):
    result = daskfleet(*args, "--help", timeout=60)
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_unknown_source_is_one_clear_error(tmp_path):
    result = daskfleet("node", "worker", "--source", "ftp:somewhere", timeout=60)
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr.strip() == "daskfleet: error: --source: unknown source 'ftp:somewhere' (accepted: dir:PATH, aws:CLUSTER)"


def test_the_data_science_stack_computes_on_the_local_cluster(local_cluster):
    """A dask.dataframe groupby and a dask.array reduction, as a data scientist runs them on `make local`."""
    import dask.array as da
    import dask.dataframe as dd
    import pandas as pd

    import daskfleet

    with daskfleet.connect("local", state_dir=local_cluster.state_dir) as client:
        frame = pd.DataFrame({"team": ["a", "b", "a", "c", "b", "a"] * 50, "hours": range(300)})
        ddf = dd.from_pandas(frame, npartitions=4)
        totals = client.compute(ddf.groupby("team").hours.sum()).result(timeout=120)
        assert totals.to_dict() == frame.groupby("team").hours.sum().to_dict()
        array = da.arange(1_000_000, chunks=100_000)
        assert client.compute((array * 2).sum()).result(timeout=120) == 999_999_000_000
        versions = client.run(lambda: __import__("pandas").__version__)
        assert set(versions.values()) == {pd.__version__}


def test_up_names_a_bad_usage_flag_before_starting_anything(tmp_path):
    state = tmp_path / "state"
    result = daskfleet("local", "up", "--state-dir", str(state), "--user-max-workers", "alice=two")
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr.strip() == "daskfleet: error: --user-max-workers: 'alice=two': 'two' is not a whole number"
    assert not state.exists()
    result = daskfleet("local", "up", "--state-dir", str(state), "--price", "local")
    assert "--price: 'local' is not INSTANCE_TYPE=ON_DEMAND_USD[/SPOT_USD]" in result.stderr
    result = daskfleet("local", "up", "--state-dir", str(state), "--memory-limit", "4GX")
    assert result.returncode == 2 and not state.exists()
    assert "Invalid value for '--memory-limit': '4GX' is not a memory limit (accepted: a size such as 4GiB" in result.stderr
