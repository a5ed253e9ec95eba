"""Revocation and expiry on the session's local cluster: real processes, real TLS on 127.0.0.1.

The local scheduler reads ``<state>/deny-list.json`` every second (``local_revocation``) and sweeps expired peers
every second; ``daskfleet revoke local USER`` writes that file. Users here are this file's own, so the other tests
sharing the cluster never meet a revoked name.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websocket
from distributed import Client

import daskfleet
from daskfleet.errors import DaskfleetError
from daskfleet.local.members import issue_member
from daskfleet.local.state import LOCAL_CLUSTER
from daskfleet.trust import pki

from support import dashboard_context, security_for, user_client, wait_until


def waiting_task():
    """A task that runs until its file exists (bounded), so a client has unfinished work when it is closed; made
    here, so it is pickled by value (the workers cannot import test modules)."""

    def wait_for_file(path: str, limit: float = 120.0) -> str:
        from pathlib import Path as _Path  # noqa: PLC0415  (runs on a worker)
        import time as _time  # noqa: PLC0415

        deadline = _time.monotonic() + limit
        while not _Path(path).exists() and _time.monotonic() < deadline:
            _time.sleep(0.05)
        return path

    return wait_for_file


def task_with_a_task_client():
    """A task that submits through its worker's task client (so the scheduler knows that client works for its user),
    says so with its ``ready`` file, waits for ``release``, then writes what a further submit through it does."""

    def use_task_client(ready: str, release: str, report: str, limit: float = 120.0) -> str:
        import time as _time  # noqa: PLC0415  (runs on a worker)
        from pathlib import Path as _Path  # noqa: PLC0415

        from distributed import worker_client  # noqa: PLC0415

        with worker_client() as inner:
            first = inner.submit(len, "ab", pure=False).result(timeout=60)
            _Path(ready).write_text(str(first))
            deadline = _time.monotonic() + limit
            while not _Path(release).exists() and _time.monotonic() < deadline:
                _time.sleep(0.05)
            try:
                outcome = f"ran: {inner.submit(len, 'abc', pure=False).result(timeout=60)}"
            except Exception as exc:  # noqa: BLE001  (recorded for the test to read)
                outcome = f"{type(exc).__name__}: {exc}"
        _Path(report).write_text(outcome)
        return release

    return use_task_client


def task_client_on(worker: str):
    """A task that submits through its worker's task client: the worker's client still works."""

    def submit_inside(limit: float = 60.0) -> int:
        from distributed import worker_client  # noqa: PLC0415

        with worker_client() as inner:
            return inner.submit(len, "abcd", pure=False).result(timeout=limit)

    return submit_inside


def websocket_closed(ws: websocket.WebSocket) -> bool:
    """Whether the server closed ``ws`` (one read of at most a second)."""
    try:
        ws.recv()
    except websocket.WebSocketTimeoutException:
        return False
    except (websocket.WebSocketConnectionClosedException, OSError):
        return True
    return not ws.connected


def daskfleet_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskfleet", *args], capture_output=True, text=True, timeout=120)


def audit_events(state: Path, event: str, identity: str) -> list[dict]:
    lines = (state / "audit.jsonl").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["event"] == event and entry.get("identity") == identity]


def test_a_revoked_user_is_closed_and_refused_while_others_carry_on(local_cluster, cluster_ca, tmp_path, capfd):
    state = Path(local_cluster.state_dir)
    issue_member(state, "mallory", LOCAL_CLUSTER)
    ready, release, report = tmp_path / "ready", tmp_path / "release", tmp_path / "report"
    mallory = daskfleet.connect(LOCAL_CLUSTER, state_dir=state, user="mallory", timeout=30)
    carol = user_client(local_cluster, cluster_ca, "carol")
    base = local_cluster.dashboard.split("/status")[0]
    # Her dashboard websocket, straight to the dashboard port with her own certificate.
    ws = websocket.create_connection(base.replace("https://", "wss://") + "/eventstream", timeout=30,
                                     sslopt={"context": dashboard_context(state, "client", user="mallory")})
    try:
        running = mallory.submit(task_with_a_task_client(), str(ready), str(release), str(report), pure=False)
        wait_until(lambda: ready.exists() or running.status != "pending", 60, "mallory's task using its task client")
        assert running.status == "pending", running.exception()
        ws.settimeout(1)
        assert not websocket_closed(ws)

        done = daskfleet_cli("revoke", LOCAL_CLUSTER, "mallory", "--state-dir", str(state), "--reason", "left the team")
        assert done.returncode == 0, done.stderr
        assert "revoked mallory on local" in done.stdout and "left the team" in done.stdout

        # Her open client is closed with the revocation named: her unfinished work errs with it.
        wait_until(lambda: running.status == "error", 60, "mallory's running task erred")
        message = str(running.exception())
        assert isinstance(running.exception(), PermissionError)
        assert "mallory" in message and "revoked" in message and "left the team" in message
        seen: list[str] = []
        wait_until(lambda: seen.append(capfd.readouterr().err) or "daskfleet: error: daskfleet closed this client: "
                   "the access of mallory" in "".join(seen), 30, "the one error line on mallory's client")
        # Any later use of that client raises the same one error, not distributed's closed-connection ones.
        wait_until(lambda: mallory.closed_reason, 30, "mallory's client told why it was closed")
        revoked = "daskfleet closed this client: the access of mallory to cluster 'local' was revoked .*left the team"
        with pytest.raises(DaskfleetError, match=revoked):
            mallory.submit(sum, [1, 2], pure=False)
        with pytest.raises(DaskfleetError, match=revoked):
            mallory.gather([running])
        # Her dashboard websocket is closed too.
        wait_until(lambda: websocket_closed(ws), 60, "mallory's dashboard websocket closed")

        release.touch()  # her task, released by the scheduler, still holds its worker's one thread until it returns
        # Her task client was cut: what the task submits for her afterwards is refused.
        wait_until(report.exists, 120, "mallory's task reporting its later submit")
        assert report.read_text().startswith("PermissionError: daskfleet refused the graph"), report.read_text()

        # A new connection is refused with one clear line.
        with pytest.raises(DaskfleetError, match="the access of mallory to cluster 'local' was revoked .*left the team"):
            daskfleet.connect(LOCAL_CLUSTER, state_dir=state, user="mallory", timeout=30)
        # Other users carry on, task clients included, on every worker.
        assert carol.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        for worker in carol.scheduler_info()["workers"]:
            assert carol.submit(task_client_on(worker), workers=[worker], pure=False).result(timeout=120) == 4

        assert audit_events(state, "revocation-seen", "mallory")
        audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
        closed = {e["kind"] for e in audit if e["event"] == "revoked-connection-closed" and "of mallory" in e["reason"]}
        assert {"client", "task-client", "dashboard"} <= closed, closed  # a task client's identity is its worker's

        # Lifted: she may connect again.
        lifted = daskfleet_cli("unrevoke", LOCAL_CLUSTER, "mallory", "--state-dir", str(state))
        assert lifted.returncode == 0 and "lifted the revocation of mallory" in lifted.stdout
        again = wait_until(lambda: _connects(state, "mallory"), 60, "mallory connecting again after the lift")
        assert again.submit(sum, [1, 1]).result(timeout=60) == 2
        again.close()
    finally:
        release.touch()
        ws.close()
        carol.close()
        mallory.close()


def _connects(state: Path, user: str) -> Client | None:
    try:
        return daskfleet.connect(LOCAL_CLUSTER, state_dir=state, user=user, timeout=30)
    except DaskfleetError:
        return None


def test_the_sweep_closes_a_peer_whose_certificate_expired(local_cluster, cluster_ca, tmp_path):
    """TLS checks a certificate only at the handshake: the scheduler closes the connection when it expires."""
    state = Path(local_cluster.state_dir)
    lifetime = dt.timedelta(seconds=8)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1) + lifetime
    cert = pki.issue_certificate(cluster_ca, LOCAL_CLUSTER, "client", user="shortlived", valid_hours=1, not_before=start)
    release = tmp_path / "release"
    client = Client(local_cluster.address, security=security_for(cluster_ca.cert_pem, cert), timeout=5)
    try:
        running = client.submit(waiting_task(), str(release), pure=False)
        wait_until(lambda: running.status == "error", 120, "the expired client's task erred")
        assert "certificate of shortlived (client) expired" in str(running.exception())
        closed = audit_events(state, "expired-peer-closed", "shortlived")
        assert any(entry["kind"] == "client" for entry in closed)
    finally:
        release.touch()
        client.close()
