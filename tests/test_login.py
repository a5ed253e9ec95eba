"""Short-lived certificates on the local cluster: ``daskfleet login local``, and a client renewing by itself."""

from __future__ import annotations

import datetime as dt
import os
import stat
import time
from pathlib import Path

from click.testing import CliRunner
from distributed.comm import connect as dask_connect

import daskfleet
from daskfleet.cli import cli
from daskfleet.node.sources import CERT_FILE, KEY_FILE
from daskfleet.trust import pki

#: Bounds for waits; reached only when something is broken.
DEADLINE_S = 120.0


def inc(x: int) -> int:
    return x + 1


def test_a_client_computes_across_renewals_of_2_second_certificates(local_cluster) -> None:
    state = Path(local_cluster.state_dir)
    with daskfleet.connect("local", state_dir=state, ttl=2, in_memory=True) as client:
        renewal = client._daskfleet_renewal
        first = pki.identity_of(renewal.store.cert_pem())
        assert first.not_after - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(seconds=3)
        deadline = time.monotonic() + DEADLINE_S
        results, i = [], 0
        while renewal.renewals < 3:  # computing all along, across three renewals
            assert time.monotonic() < deadline, f"only {renewal.renewals} renewals; last error: {renewal.error!r}"
            results.append(client.submit(inc, i, pure=False).result(timeout=30))
            i += 1
        assert results == [n + 1 for n in range(i)]
        assert renewal.error == ""
        # Long after the first certificate ended, a new connection of the client presents a live one, same key.
        assert dt.datetime.now(dt.timezone.utc) > first.not_after
        current = renewal.store.cert_pem()
        assert pki.public_key_der(current) == pki.public_key_der(renewal.store.key_pem())

        async def handshake() -> str:
            comm = await dask_connect(client.scheduler.address, **client.connection_args)
            try:
                return comm.peer_address
            finally:
                await comm.close()

        assert client.sync(handshake)
        assert client.submit(inc, 41, pure=False).result(timeout=30) == 42


def test_login_local_renews_the_admin_certificate_for_the_same_key(local_cluster) -> None:
    state = Path(local_cluster.state_dir)
    client_dir = state / "client"
    key_before = (client_dir / KEY_FILE).read_text()
    result = CliRunner().invoke(cli, ["login", "local", "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    identity = pki.identity_of((client_dir / CERT_FILE).read_text())
    assert f"logged in: {identity.common_name} (admin) of cluster 'local'" in result.output
    assert dt.timedelta(hours=11, minutes=59) <= identity.not_after - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(hours=12)
    assert (client_dir / KEY_FILE).read_text() == key_before  # renewal keeps the key pair; it never left here
    assert stat.S_IMODE(os.stat(client_dir / KEY_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(client_dir).st_mode) == 0o700


def test_login_local_metrics_writes_a_certificate_that_scrapes_metrics_only(local_cluster) -> None:
    """What a Prometheus scrape config points at: its files read /metrics on the dashboard port, nothing else."""
    import ssl  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    state = Path(local_cluster.state_dir)
    result = CliRunner().invoke(cli, ["login", "local", "--state-dir", str(state), "--metrics"])
    assert result.exit_code == 0, result.output
    directory = state / "client" / "metrics"
    assert f"cert_file: {directory / CERT_FILE}" in result.output and "run this command again" in result.output
    assert pki.identity_of((directory / CERT_FILE).read_text()).role == "metrics"
    context = ssl.create_default_context(cafile=str(directory / "ca.pem"))
    context.check_hostname = False
    context.load_cert_chain(directory / CERT_FILE, directory / KEY_FILE)
    base = local_cluster.dashboard.split("/status")[0]
    with urllib.request.urlopen(base + "/metrics", context=context, timeout=30) as response:
        assert response.status == 200 and "dask_scheduler_" in response.read().decode()
    try:
        urllib.request.urlopen(base + "/status", context=context, timeout=30)
        status = 200
    except urllib.error.HTTPError as error:
        status = error.code
    assert status == 403
