"""The node agent's failure classes: each exits by itself with its documented code and one clear line."""

from __future__ import annotations

import datetime as dt
import socket

import pytest

from daskfleet.trust import pki
from daskfleet.errors import ExitCode
from daskfleet.local.state import LOCAL_CLUSTER

from support import last_line, run_agent, venv_python, write_node_dir


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_spec(address: str, **overrides):
    spec = {
        "cluster": LOCAL_CLUSTER, "role": "worker", "scheduler_address": address, "listen_host": "127.0.0.1",
        "worker_port": 0, "nthreads": 1, "connect_timeout_s": 20.0,
    }
    spec.update(overrides)
    return {key: value for key, value in spec.items() if value is not None}


def _long_ago(days: int) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)


CASES = {
    # name: (spec overrides or raw text, certificate maker, expected code, expected text)
    "no spec file": (None, "worker", ExitCode.SPEC_INVALID, "spec.json: file not found"),
    "spec not JSON": ("{not json", "worker", ExitCode.SPEC_INVALID, "not valid JSON"),
    "missing key": ({"cluster": None}, "worker", ExitCode.SPEC_INVALID, "cluster: required key is missing"),
    "unknown key": ({"conect_timeout_s": 5}, "worker", ExitCode.SPEC_INVALID, "conect_timeout_s: unknown key"),
    "wrong type": ({"nthreads": "two"}, "worker", ExitCode.SPEC_INVALID, "nthreads: Input should be a valid integer"),
    "spec for another role": ({"role": "scheduler"}, "worker", ExitCode.SPEC_INVALID, "spec is for a scheduler"),
    "no certificate": ({}, None, ExitCode.CERT_UNREADABLE, "cert.pem: not found"),
    "another CA": ({}, "stranger", ExitCode.CERT_UNREADABLE, "not issued by the cluster CA"),
    "expired": ({}, "expired", ExitCode.CERT_NOT_VALID_NOW, "certificate expired at"),
    "not yet valid": ({}, "future", ExitCode.CERT_NOT_VALID_NOW, "certificate is not valid before"),
    "client certificate": ({}, "client", ExitCode.CERT_ROLE_MISMATCH, "certificate is for spiffe://local/role/client"),
    "environment": ({"expected_fingerprint": "sha256:" + "0" * 64}, "worker", ExitCode.ENV_MISMATCH, "differs from the expected sha256:000"),
}


def _certificate(kind: str | None, ca: pki.IssuedCert, other_ca: pki.IssuedCert) -> pki.IssuedCert | None:
    return {
        None: lambda: None,
        "worker": lambda: pki.issue_certificate(ca, LOCAL_CLUSTER, "worker"),
        "client": lambda: pki.issue_certificate(ca, LOCAL_CLUSTER, "client", user="alice"),
        "stranger": lambda: pki.issue_certificate(other_ca, LOCAL_CLUSTER, "worker"),
        "expired": lambda: pki.issue_certificate(ca, LOCAL_CLUSTER, "worker", valid_hours=1, not_before=_long_ago(3)),
        "future": lambda: pki.issue_certificate(ca, LOCAL_CLUSTER, "worker", not_before=_long_ago(-3)),
    }[kind]()


@pytest.mark.parametrize("case", list(CASES))
def test_agent_failure_class(case, cluster_ca, other_ca, tmp_path):
    spec_change, cert_kind, code, text = CASES[case]
    address = f"tls://127.0.0.1:{_closed_port()}"
    spec = spec_change if isinstance(spec_change, str) or spec_change is None else _worker_spec(address, **spec_change)
    node = write_node_dir(tmp_path / "node", spec, cluster_ca.cert_pem, _certificate(cert_kind, cluster_ca, other_ca))
    result = run_agent("worker", node, tmp_path / "run", timeout=60)
    assert result.returncode == code, result.stderr
    line = last_line(result.stderr)
    assert line.startswith("daskfleet: error: ") and text in line
    assert "Traceback" not in result.stderr


def test_unreachable_scheduler_ends_after_the_bounded_wait(cluster_ca, tmp_path):
    address = f"tls://127.0.0.1:{_closed_port()}"
    spec = _worker_spec(address, connect_timeout_s=2.0)
    node = write_node_dir(tmp_path / "node", spec, cluster_ca.cert_pem, pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "worker"))
    result = run_agent("worker", node, tmp_path / "run", timeout=60)
    assert result.returncode == ExitCode.SCHEDULER_UNREACHABLE, result.stderr
    assert f"scheduler {address} unreachable after 2s" in last_line(result.stderr)


def test_worker_from_a_differing_environment_is_refused_by_the_scheduler(local_cluster, cluster_ca, second_venv, tmp_path):
    # The spec pins no fingerprint, so the agent starts; the scheduler's conformance check refuses it.
    spec = _worker_spec(local_cluster.address, name="odd-one")
    node = write_node_dir(tmp_path / "node", spec, cluster_ca.cert_pem, pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "worker"))
    result = run_agent("worker", node, tmp_path / "run", python=venv_python(second_venv), timeout=120)
    assert result.returncode == ExitCode.REFUSED_BY_SCHEDULER, result.stderr
    line = last_line(result.stderr)
    assert "refused worker" in line and "environment fingerprint sha256:" in line and "differs from the cluster's sha256:" in line


def test_worker_from_a_differing_environment_stops_itself_when_the_spec_pins_the_fingerprint(
    local_cluster, cluster_ca, second_venv, tmp_path
):
    from daskfleet.environments.records import current_fingerprint

    spec = _worker_spec(local_cluster.address, expected_fingerprint=current_fingerprint())
    node = write_node_dir(tmp_path / "node", spec, cluster_ca.cert_pem, pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "worker"))
    result = run_agent("worker", node, tmp_path / "run", python=venv_python(second_venv), timeout=120)
    assert result.returncode == ExitCode.ENV_MISMATCH, result.stderr
    assert f"differs from the expected {current_fingerprint()}" in last_line(result.stderr)


def test_a_worker_refuses_a_server_that_is_not_its_clusters_scheduler(local_cluster, cluster_ca, tmp_path):
    import daskfleet

    with daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir) as client:
        impostor = next(iter(client.scheduler_info()["workers"]))  # a worker's TLS server, worker certificate
    spec = _worker_spec(impostor)
    node = write_node_dir(tmp_path / "node", spec, cluster_ca.cert_pem, pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "worker"))
    result = run_agent("worker", node, tmp_path / "run", timeout=60)
    assert result.returncode == ExitCode.CERT_ROLE_MISMATCH, result.stderr
    assert f"{impostor} presented a worker certificate for cluster 'local', not the scheduler of 'local'" in last_line(result.stderr)
