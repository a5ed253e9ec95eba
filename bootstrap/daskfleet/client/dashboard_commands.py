"""``daskfleet dashboard CLUSTER``: forward the cluster's dashboard to a loopback URL (imports only click here)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("dashboard")
@click.argument("cluster", default="local")
@click.option("--open", "open_browser", is_flag=True, help="Open the URL in your browser.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="The loopback port to serve on (0: a free one).")
@click.option("--user", help="Whose certificate to present (a local cluster's member; default: yours).")
@click.option("--address", metavar="https://HOST:PORT",
              help="The dashboard's address, e.g. https://localhost:8787 through an SSM port forward "
              "(dashboardPortForwardCommand); default: the scheduler's host, port 8787.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="A local cluster's state directory.")
@click.option("--region", help="AWS region (default: AWS_REGION or your profile's).")
@click.option("--profile", help="AWS profile (default: the standard credential chain).")
def dashboard(cluster: str, open_browser: bool, port: int, user: str | None, address: str | None,
              state_dir: Path | None, region: str | None, profile: str | None) -> None:
    """Serve CLUSTER's dashboard on http://127.0.0.1:PORT, presenting your certificate to the cluster, until Ctrl-C.

    The browser (and dask-labextension) needs no certificate and shows no warning; clients you connect with
    daskfleet.connect while it runs give this URL as their dashboard_link.
    """
    import asyncio
    import signal
    import webbrowser

    from .dashboard import DashboardForwarder, record_path

    name, upstream, context, state = _target(cluster, user, address, state_dir, region, profile)
    forwarder = DashboardForwarder(upstream, context, port=port)
    record = record_path(name, state)

    async def serve() -> None:
        url = forwarder.start()
        forwarder.record(record)
        click.echo(f"dashboard of {name}: {url}/status   (forwarding to {upstream} with your certificate; Ctrl-C stops it)",
                   nl=True)
        if open_browser:
            webbrowser.open(f"{url}/status")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        forwarder.stop()

    try:
        asyncio.run(serve())
    finally:
        record.unlink(missing_ok=True)


def _target(cluster, user, address, state_dir, region, profile):
    """(cluster name, the dashboard's https://host:port, an SSL context presenting the user's certificate, the local
    cluster's state directory or None)."""
    from ..errors import DaskfleetError, ExitCode
    from ..local.state import LocalCluster, command_flags
    from .connect import local_cluster, scheduler_address, security

    local = local_cluster(cluster, state_dir)
    name = local[0] if local is not None else cluster
    sec = security(cluster, state_dir=state_dir, user=user, profile=profile, region=region)
    context = sec.get_connection_args("client")["ssl_context"]
    if address is not None:
        if not address.startswith("https://"):
            raise DaskfleetError(f"--address: {address!r} is not https://HOST:PORT", ExitCode.CONFIG)
        return name, address.rstrip("/"), context, local[1] if local is not None else None
    if local is not None:
        recorded = LocalCluster.load(local[1])
        if recorded is None or not recorded.dashboard:
            raise DaskfleetError(f"local cluster {name!r} is not running: `daskfleet local up"
                                 f"{command_flags(local[1], name)}` starts it", ExitCode.CONFIG)
        return name, recorded.dashboard.split("/status", 1)[0], context, local[1]
    from .. import conventions

    host = scheduler_address(cluster, profile=profile, region=region).removeprefix("tls://").rsplit(":", 1)[0]
    return name, f"https://{host}:{conventions.DASHBOARD_PORT}", context, None
