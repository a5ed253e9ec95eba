"""Nodes renew their short-lived certificates without a restart: a local cluster whose node certificates last a
few seconds (the local vendor signs them) keeps computing across several renewals, the worker's stream to the
scheduler outlives every certificate it started with, and the scheduler's listener presents its renewed one.

One cluster of its own (one worker) for the module: the session cluster's node certificates last 24 h.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import daskfleet
from daskfleet.local import cluster as local
from daskfleet.errors import ExitCode
from daskfleet.local.state import LOCAL_CLUSTER, client_dir
from daskfleet.local.vendor import write_node_vendor
from daskfleet.node.renewal import NodeRenewal
from daskfleet.node.sources import CA_FILE, CERT_FILE, KEY_FILE
from daskfleet.trust import pki
from daskfleet.trust.tls import TlsMaterial
from daskfleet.trust.vendor import VendorRefusal

from support import last_line, run_agent, write_node_dir

#: Node certificates of this many seconds: renewed every two, so a worker renews several times while a test runs.
NODE_CERT_SECONDS = 3.0


@pytest.fixture(scope="module")
def short_cert_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("short-node-certs")
    scaling = local.local_scaling(1, 1, idle_timeout_s=0, no_client_timeout_s=0)
    cluster = local.up(state, scaling=scaling, threads=1, node_cert_seconds=NODE_CERT_SECONDS)
    yield cluster
    local.down(state)


def audit_events(state: Path, event: str) -> list[dict]:
    lines = (state / "audit.jsonl").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["event"] == event]


def presented_certificate(cluster) -> x509.Certificate:
    """The certificate the scheduler's listener presents to a new TLS connection (made with the admin's certificate:
    the listener requires one)."""
    directory = client_dir(Path(cluster.state_dir))
    context = ssl.create_default_context(cafile=str(directory / CA_FILE))
    context.check_hostname = False
    context.load_cert_chain(str(directory / CERT_FILE), str(directory / KEY_FILE))
    host, _, port = cluster.address.removeprefix("tls://").rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw, context.wrap_socket(raw) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def test_a_cluster_computes_across_node_certificate_renewals(short_cert_cluster):
    state = Path(short_cert_cluster.state_dir)
    first = presented_certificate(short_cert_cluster)
    # A few seconds (backdated by at most a sixth, on whole seconds), not the 24 h of a default node certificate.
    assert first.not_valid_after_utc - first.not_valid_before_utc <= dt.timedelta(seconds=2 * NODE_CERT_SECONDS)
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=state, timeout=60) as client:
        workers = set(client.scheduler_info()["workers"])
        assert len(workers) == 1
        def worker_renewals() -> int:
            return len([entry for entry in audit_events(state, "certificate-renewed") if entry["role"] == "worker"])

        before, results = worker_renewals(), []
        # Compute until the worker has handed its scheduler three more renewed certificates (each lasts 3 s: the one
        # it held at the start has ended by then) and the scheduler's first one has ended too, plus a sweep.
        swept = first.not_valid_after_utc + dt.timedelta(seconds=local.LOCAL_EXPIRY_SWEEP_S)
        while worker_renewals() < before + 3 or len(results) < 3 or dt.datetime.now(dt.timezone.utc) <= swept:
            results.append(client.submit(sum, [len(results), 1], pure=False).result(timeout=60))
            assert dt.datetime.now(dt.timezone.utc) < first.not_valid_after_utc + dt.timedelta(seconds=60), \
                "the worker did not renew its certificate three times within a minute"
        assert results == [index + 1 for index in range(len(results))]
        # The same worker, on the same stream: the sweep closed nothing, though its first certificate has ended.
        assert set(client.scheduler_info()["workers"]) == workers
        assert audit_events(state, "expired-peer-closed") == []

    # The listener presents the renewed certificate: a new client connects and computes.
    renewed = presented_certificate(short_cert_cluster)
    assert renewed.not_valid_after_utc > first.not_valid_after_utc
    assert renewed.public_key() == first.public_key()  # renewed for the same key, not a restart
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=state, timeout=60) as client:
        assert client.submit(sum, [40, 2]).result(timeout=60) == 42
        assert set(client.scheduler_info()["workers"]) == workers


def test_a_node_whose_vendor_cannot_sign_stops_with_its_configuration_exit_code(tmp_path):
    """A worker whose node directory names a local vendor without a CA exits CONFIG (78) with one line."""
    state = tmp_path / "state"
    ca = pki.create_ca(LOCAL_CLUSTER)
    admin = pki.issue_certificate(ca, LOCAL_CLUSTER, "admin", user="alice")
    pki.write_private(client_dir(state) / CERT_FILE, admin.cert_pem)  # an admin, but its CA is gone
    spec = {"cluster": LOCAL_CLUSTER, "role": "worker", "scheduler_address": "tls://127.0.0.1:9", "worker_port": 0}
    node = write_node_dir(tmp_path / "node", spec, ca.cert_pem, None)
    write_node_vendor(node, state, LOCAL_CLUSTER, NODE_CERT_SECONDS)
    result = run_agent("worker", node, tmp_path / "run", timeout=60)
    assert result.returncode == ExitCode.CONFIG, result.stderr
    line = last_line(result.stderr)
    assert line == f"daskfleet: error: no CA of local cluster 'local' in {state}", result.stderr
    assert "Traceback" not in result.stderr


def test_a_node_that_cannot_renew_before_its_certificate_ends_gives_up_with_one_reason(tmp_path):
    """The renewal loop asks again until the certificate ends, then stops the node once, saying why."""
    ca = pki.create_ca(LOCAL_CLUSTER)
    key = pki.new_private_key_pem()
    now = dt.datetime.now(dt.timezone.utc)
    cert = pki.sign_public_key(ca, serialization.load_pem_private_key(key.encode(), None).public_key(), LOCAL_CLUSTER,
                               "worker", user=None, not_before=now, not_after=now + dt.timedelta(seconds=1.5))
    asked: list[str] = []

    def refusing(csr_pem: str):
        asked.append(csr_pem)
        raise VendorRefusal("arn:aws:sts::123456789012:assumed-role/other/i-1 may not get a worker certificate")

    async def run() -> list[str]:
        stopped: list[str] = []
        renewal = NodeRenewal(refusing, TlsMaterial(ca.cert_pem, cert, key), tmp_path / "cert.pem", lambda: [],
                              on_failure=stopped.append).start()
        await asyncio.wait_for(renewal._task, 30)
        return stopped

    stopped = asyncio.run(run())
    assert len(asked) >= 2  # it tried again after the first refusal
    assert len(stopped) == 1
    assert stopped[0].startswith("the node certificate expired at ")
    assert "could not be renewed (certificate refused: arn:aws:sts::123456789012:assumed-role/other/i-1" in stopped[0]
