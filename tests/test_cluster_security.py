"""Who can reach a running local cluster: real processes, real TLS sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pytest
from distributed import Client, Worker
from distributed.comm import connect
from distributed.core import rpc

import daskfleet
from daskfleet.trust import pki
from daskfleet.errors import DaskfleetError
from daskfleet.local.state import LOCAL_CLUSTER

from support import security_for


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    return host, int(port)


def _audit(cluster) -> list[dict]:
    path = Path(cluster.state_dir) / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_client_with_its_certificate_computes(local_cluster):
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir) as client:
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        assert len(client.scheduler_info()["workers"]) == 2


def test_audit_log_names_the_client_identity_and_graph_size(local_cluster):
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir) as client:
        client_id = client.id
        futures = client.map(abs, range(-7, 0))
        client.gather(futures)
    events = [e for e in _audit(local_cluster) if e.get("client") == client_id]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "client-connect"
    assert {e["identity"] for e in events} == {local_cluster.user}
    assert any(e["event"] == "graph-submitted" and e["tasks"] == 7 for e in events)


def test_audit_log_records_the_disconnect(local_cluster):
    client = daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir)
    client_id = client.id
    client.close()
    deadline = dt.datetime.now() + dt.timedelta(seconds=10)
    while dt.datetime.now() < deadline:
        if any(e["event"] == "client-disconnect" and e["client"] == client_id for e in _audit(local_cluster)):
            return
        time.sleep(0.1)
    pytest.fail("no client-disconnect audit line")


def test_plaintext_tcp_is_refused(local_cluster):
    host, port = _host_port(local_cluster.address)

    async def attempt():
        comm = await connect(f"tcp://{host}:{port}", timeout=5)
        await comm.read()

    with pytest.raises((OSError, TimeoutError)):
        asyncio.run(attempt())


def _raw_tls_exchange(address: str, ca_pem: str, cert: pki.IssuedCert | None, tmp_path: Path) -> bytes:
    """Handshake with an optional client certificate, then read: the server's answer."""
    context = ssl.create_default_context(cadata=ca_pem)
    context.check_hostname = False
    if cert is not None:
        (tmp_path / "c.pem").write_text(cert.cert_pem)
        (tmp_path / "k.pem").write_text(cert.key_pem)
        context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    with socket.create_connection(_host_port(address), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"\x00" * 8)
            return tls.recv(1)


def test_tls_client_without_certificate_is_refused(local_cluster, cluster_ca, tmp_path):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        if _raw_tls_exchange(local_cluster.address, cluster_ca.cert_pem, None, tmp_path) == b"":
            raise ConnectionError("closed by the server")


def test_tls_client_with_another_clusters_ca_is_refused(local_cluster, cluster_ca, other_ca):
    stranger = pki.issue_certificate(other_ca, LOCAL_CLUSTER, "client", user="mallory")
    # It even trusts the real CA, so only the server's verification can refuse it.
    with pytest.raises((OSError, TimeoutError)):
        Client(local_cluster.address, security=security_for(cluster_ca.cert_pem, stranger), timeout=10)


def test_expired_client_certificate_is_refused(local_cluster, cluster_ca):
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
    expired = pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "client", user="alice", valid_hours=1, not_before=long_ago)
    with pytest.raises((OSError, TimeoutError)):
        Client(local_cluster.address, security=security_for(cluster_ca.cert_pem, expired), timeout=10)


def test_a_worker_certificate_registers_only_as_a_task_client_held_to_task_client_operations(local_cluster, cluster_ca):
    # From a registered worker's host (all of the local cluster's are on 127.0.0.1), a worker certificate is a task client.
    worker_cert = pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "worker")
    with Client(local_cluster.address, security=security_for(cluster_ca.cert_pem, worker_cert, "worker"),
                name="worker", timeout=10) as task_client:
        with pytest.raises(PermissionError, match="'restart' is reserved for users"):
            task_client.restart()
    assert any(e["event"] == "task-client-connect" and e["identity"] == "worker.local" for e in _audit(local_cluster))


def test_certificate_for_another_cluster_name_is_refused(local_cluster, cluster_ca):
    # Same CA, but a role URI naming a different cluster: refused by the scheduler.
    foreign = pki.issue_certificate(cluster_ca, "other", "client", user="alice")
    with pytest.raises(ImportError, match="for cluster 'other'"):
        Client(local_cluster.address, security=security_for(cluster_ca.cert_pem, foreign), timeout=10)


def test_connect_refuses_to_present_a_non_client_certificate(local_cluster, cluster_ca, tmp_path):
    # A user whose client directory holds a worker certificate gets one clear error before connecting.
    state = tmp_path / "state"
    (state / "client").mkdir(parents=True)
    worker_cert = pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "worker")
    (state / "client" / "ca.pem").write_text(cluster_ca.cert_pem)
    (state / "client" / "cert.pem").write_text(worker_cert.cert_pem)
    (state / "client" / "key.pem").write_text(worker_cert.key_pem)
    with pytest.raises(DaskfleetError, match="is a worker certificate for cluster 'local', not a client certificate"):
        daskfleet.connect(LOCAL_CLUSTER, state_dir=state, address=local_cluster.address, timeout=10)


def test_worker_presenting_a_client_certificate_cannot_join(local_cluster, cluster_ca):
    client_cert = pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "client", user="alice")

    async def join():
        async with Worker(local_cluster.address, security=security_for(cluster_ca.cert_pem, client_cert, "worker"),
                          nthreads=1, dashboard=False):
            pass

    with pytest.raises(RuntimeError) as failure:
        asyncio.run(join())
    assert "role is 'client'; worker required" in str(failure.value.__cause__)
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir) as client:
        assert len(client.scheduler_info()["workers"]) == 2


def test_worker_certificate_cannot_call_client_operations(local_cluster, cluster_ca):
    worker_cert = pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "worker")
    sec = security_for(cluster_ca.cert_pem, worker_cert, "worker")

    async def terminate():
        async with rpc(local_cluster.address, connection_args=sec.get_connection_args("worker")) as scheduler:
            await scheduler.terminate()

    with pytest.raises(PermissionError, match="operation .*role is 'worker'; admin or client required"):
        asyncio.run(terminate())
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir) as client:
        assert client.submit(len, "alive").result(timeout=30) == 5


def test_client_with_different_core_packages_is_refused(local_cluster, second_venv):
    code = (
        "import daskfleet, sys\n"
        "from daskfleet.errors import DaskfleetError\n"
        "try:\n"
        f"    daskfleet.connect('local', state_dir={local_cluster.state_dir!r}, timeout=20)\n"
        "except DaskfleetError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    result = subprocess.run([str(second_venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert f"toolz 0.12.1 (yours) != {metadata.version('toolz')} (cluster)" in result.stdout


def test_a_client_cannot_speak_for_a_worker_on_its_stream(local_cluster):
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir) as client:
        worker = next(iter(client.scheduler_info()["workers"]))
        client.scheduler_comm.send({"op": "task-erred", "worker": worker, "key": "x", "stimulus_id": "forged"})
        client_id = client.id
        assert client.submit(len, "still fine").result(timeout=30) == 10
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        refused = [e for e in _audit(local_cluster) if e["event"] == "client-stream-refused" and e.get("op") == "task-erred"]
        if refused:
            assert refused[-1]["identity"] == local_cluster.user and "not a client's" in refused[-1]["reason"]
            return
        time.sleep(0.1)
    pytest.fail(f"no client-stream-refused audit line for {client_id}")


def test_a_worker_certificate_cannot_open_a_raw_stream_to_act_for_a_client(local_cluster, cluster_ca):
    worker_cert = pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "worker")
    sec = security_for(cluster_ca.cert_pem, worker_cert, "worker")
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir) as victim:

        async def hijack():
            comm = await connect(local_cluster.address, **sec.get_connection_args("worker"))
            await comm.write({"op": "connection_stream"})
            reply = await comm.read()
            await comm.write([{"op": "close-client", "client": victim.id}])
            await asyncio.sleep(0.5)
            comm.abort()
            return reply

        reply = asyncio.run(hijack())
        assert reply["status"] == "uncaught-error"
        assert victim.submit(len, "still here").result(timeout=30) == 10
    refused = [e for e in _audit(local_cluster) if e["event"] == "operation-refused" and e.get("op") == "connection_stream"]
    assert refused and refused[-1]["role"] == "worker"


def test_published_datasets_and_fire_and_forget_work_for_clients(local_cluster, tmp_path):
    from distributed import fire_and_forget

    marker = tmp_path / "ran"
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir) as client:
        client.publish_dataset(answer=client.submit(int, "42"))
        assert client.get_dataset("answer").result(timeout=30) == 42
        client.unpublish_dataset("answer")
        fire_and_forget(client.submit(lambda path: (time.sleep(1), open(path, "w").close()), str(marker)))
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the fire-and-forget task was cancelled"
        time.sleep(0.1)


def test_a_task_becomes_a_task_client_with_its_workers_certificate(local_cluster):
    def nested():
        from distributed import get_client

        return get_client().submit(len, "xyz").result()

    with daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir) as client:
        assert client.submit(nested).result(timeout=60) == 3


def test_a_client_cannot_run_code_on_a_worker_behind_the_schedulers_back(local_cluster, cluster_ca):
    client_cert = pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "client", user="mallory")
    sec = security_for(cluster_ca.cert_pem, client_cert)
    with daskfleet.connect(LOCAL_CLUSTER, state_dir=local_cluster.state_dir) as client:
        worker = next(iter(client.scheduler_info()["workers"]))

        async def run_directly():
            async with rpc(worker, connection_args=sec.get_connection_args("client")) as direct:
                return await direct.run(function=b"irrelevant")

        with pytest.raises(PermissionError, match="worker refused 'run' from mallory .*scheduler required"):
            asyncio.run(run_directly())
        # What clients do reach workers for still works, and so does code run through the scheduler.
        [scattered] = client.scatter([123], direct=True)
        assert client.gather(scattered, direct=True) == 123
        assert set(client.run(lambda: "ran").values()) == {"ran"}
