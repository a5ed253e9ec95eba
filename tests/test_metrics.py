"""A real Prometheus server (Debian's package) scrapes the scheduler's HTTPS /metrics with the cluster CA."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

import daskfleet
from daskfleet.local.members import issue_metrics
from daskfleet.local.state import LOCAL_CLUSTER


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path, local_cluster):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (Debian package `prometheus`; .ci/run installs it as root)")
    dashboard = urllib.parse.urlparse(local_cluster.dashboard)
    # The dashboard port asks every request for a certificate of the cluster: Prometheus presents a metrics one
    # (`daskfleet local issue --metrics`).
    metrics = issue_metrics(Path(local_cluster.state_dir), LOCAL_CLUSTER)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "daskfleet", "scheme": "https", "metrics_path": "/metrics",
            # The dashboard serves the scheduler's certificate, which the cluster CA verifies; Prometheus presents its own.
            "tls_config": {"ca_file": str(metrics / "ca.pem"), "cert_file": str(metrics / "cert.pem"),
                           "key_file": str(metrics / "key.pem")},
            "static_configs": [{"targets": [f"{dashboard.hostname}:{dashboard.port}"]}],
        }],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}", tmp_path / "prometheus.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _query(base: str, expression: str) -> list[dict]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)["data"]["result"]
    except OSError:  # not listening yet
        return []


def test_prometheus_scrapes_user_and_cluster_usage_over_tls(prometheus, local_cluster):
    base, log = prometheus
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir) as client:
        assert sum(client.gather(client.map(abs, range(-5, 0)))) == 15
    user = local_cluster.user
    wanted = {
        f'daskfleet_user_tasks_total{{user="{user}"}}': lambda value: value >= 5,
        f'daskfleet_user_compute_seconds_total{{user="{user}"}}': lambda value: value > 0,
        f'daskfleet_user_cost_usd_total{{user="{user}"}}': lambda value: value == 0,  # no price for local nodes
        'daskfleet_worker_seconds_total{instance_type="local",purchase="on-demand"}': lambda value: value > 0,
        "daskfleet_idle_seconds_total": lambda value: value >= 0,
        # The scaler's decision, every interval: the session's cluster keeps its two workers.
        "daskfleet_desired_workers": lambda value: value == 2,
        "daskfleet_budget_stopped": lambda value: value == 0,
        "dask_scheduler_workers": lambda value: value >= 0,  # distributed's own metrics are there too
    }
    deadline = time.monotonic() + 90
    missing = dict(wanted)
    while missing and time.monotonic() < deadline:
        for expression, ok in list(missing.items()):
            results = _query(base, expression)
            if results and ok(float(results[0]["value"][1])):
                del missing[expression]
        time.sleep(0.5)
    assert not missing, f"not scraped: {sorted(missing)}; prometheus log tail: {log.read_text()[-1500:]}"
    with urllib.request.urlopen(f"{base}/api/v1/targets", timeout=5) as response:
        [target] = json.load(response)["data"]["activeTargets"]
    assert target["health"] == "up" and target["scrapeUrl"].startswith("https://")
