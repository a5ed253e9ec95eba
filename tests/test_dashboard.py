"""The dashboard for the cluster's people only, and ``daskfleet dashboard`` in Debian's chromium.

The session's local cluster: its dashboard port asks every request for a certificate of the cluster; the
forwarder (``daskfleet dashboard local``) presents the admin's, and the browser holds none.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websocket

import daskfleet
from daskfleet.local.state import LOCAL_CLUSTER
from daskfleet.ops.revocation import change_local

from support import dashboard_context, wait_until


def test_who_may_read_what_on_the_dashboard():
    from daskfleet.trust.dashboard import dashboard_refusal  # noqa: PLC0415
    from daskfleet.trust.peers import Peer  # noqa: PLC0415

    def peer(role, cluster="alpha"):
        return Peer(cluster, role, "alice" if role in ("client", "admin") else f"{role}.{cluster}")

    for role in ("client", "admin"):
        assert dashboard_refusal("alpha", peer(role), "/status") is None
        assert dashboard_refusal("alpha", peer(role), "/metrics") is None
    assert dashboard_refusal("alpha", peer("metrics"), "/metrics") is None
    assert "reads /metrics only, not /status/ws" in dashboard_refusal("alpha", peer("metrics"), "/status/ws").reason
    for role in ("scheduler", "worker"):
        assert dashboard_refusal("alpha", peer(role), "/metrics") is not None
    assert "for cluster 'beta'" in dashboard_refusal("alpha", peer("client", "beta"), "/status").reason
    assert "no daskfleet role" in dashboard_refusal("alpha", Peer(None, None, ""), "/status").reason


def _get(url: str, context: ssl.SSLContext | None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def test_every_route_asks_for_a_certificate_of_the_cluster_and_checks_its_role(local_cluster, other_ca, tmp_path):
    state = Path(local_cluster.state_dir)
    base = local_cluster.dashboard.split("/status")[0]
    no_certificate = ssl.create_default_context(cafile=str(state / "ca" / "ca.pem"))
    no_certificate.check_hostname = False
    # No certificate: refused at the handshake, for a page and for its websocket.
    for path in ("/status", "/metrics", "/info/main/workers.html", "/health"):
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _get(base + path, no_certificate)
    ws_url = base.replace("https://", "wss://") + "/status/ws"
    with pytest.raises((ssl.SSLError, websocket.WebSocketException, ConnectionError, OSError)):
        websocket.create_connection(ws_url, sslopt={"ca_certs": str(state / "ca" / "ca.pem"), "check_hostname": False},
                                    timeout=30)

    metrics = dashboard_context(state)
    status, text = _get(base + "/metrics", metrics)
    assert status == 200 and "daskfleet_" in text
    assert _get(base + "/status", metrics)[0] == 403  # Prometheus' certificate reads /metrics only
    assert _get(base + "/info/main/workers.html", dashboard_context(state, "worker"))[0] == 403  # nodes nothing
    member = dashboard_context(state, "client", user="dashboard-dora")
    assert _get(base + "/info/main/workers.html", member)[0] == 200
    # A revoked member: refused once the scheduler has read the deny-list.
    change_local(state, "dashboard-dora", lift=False, reason="dashboard test")
    wait_until(lambda: _get(base + "/health", member)[0] == 403, 60, "the revoked member refused on the dashboard")
    audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    assert any(e["event"] == "dashboard-refused" and e.get("identity") == "dashboard-dora" for e in audit)


#: Run in the page: the Bokeh documents' task figures (the task stream's rectangles and the progress bars' tasks).
TASKS_SHOWN = """
const docs = (window.Bokeh && window.Bokeh.documents) || [];
let models = 0, tasks = 0;
const column = (data, key) => (data instanceof Map ? data.get(key) : data[key]) || [];
for (const doc of docs) {
  for (const model of doc.all_models) {
    models += 1;
    if (model.data === undefined) continue;
    tasks += column(model.data, "duration").length;
    for (const value of column(model.data, "all")) tasks += Number(value) || 0;
  }
}
return {documents: docs.length, models: models, tasks: tasks};
"""


def _frames_received(browser) -> int:
    return sum('"Network.webSocketFrameReceived"' in entry["message"] for entry in browser.get_log("performance"))


def test_through_daskfleet_dashboard_local_the_status_page_renders_tasks(local_cluster, chromium, tmp_path, home):
    state = Path(local_cluster.state_dir)
    forwarder = subprocess.Popen(
        [sys.executable, "-m", "daskfleet", "dashboard", LOCAL_CLUSTER, "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    shot = tmp_path / "dashboard-status.png"
    try:
        line = forwarder.stdout.readline()
        assert line.startswith("dashboard of local: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].split()[0]
        assert url.endswith("/status")
        client = daskfleet.connect(LOCAL_CLUSTER, state_dir=state, timeout=30)
        try:
            assert client.dashboard_link == url  # the scheduler's link, as this machine's forwarder serves it
            chromium.get(url)
            assert chromium.current_url.startswith("http://127.0.0.1:")  # plain HTTP on loopback: no certificate

            def slow(i: int) -> int:
                import time as _time  # noqa: PLC0415

                _time.sleep(0.2)
                return i

            futures = client.map(slow, range(150), pure=False)
            frames, shown = 0, {}
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                frames += _frames_received(chromium)
                shown = chromium.execute_script(TASKS_SHOWN) or {}
                if frames > 0 and shown.get("tasks", 0) > 0:
                    break
                time.sleep(0.5)
            chromium.save_screenshot(str(shot))
            assert frames > 0, f"no websocket message reached the page; screenshot: {shot}"
            assert shown.get("tasks", 0) > 0, f"no plot shows tasks ({shown}); screenshot: {shot}"
            client.cancel(futures)
        finally:
            client.close()
    finally:
        forwarder.terminate()
        forwarder.wait(timeout=30)
