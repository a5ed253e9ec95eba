"""``daskfleet clusters``: the clusters you can reach, on AWS and on this machine (imports only click here)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("clusters")
@click.option("--profile", help="AWS profile of your own login (default: the default credential chain).")
@click.option("--region", help="AWS region of the fleet (default: your profile's).")
@click.option("--user", help="Your daskfleet user name (default: derived from your AWS identity).")
@click.option("--local-only", is_flag=True, help="Only the local clusters; do not ask AWS.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the table.")
def clusters(profile: str | None, region: str | None, user: str | None, local_only: bool, as_json: bool) -> None:
    """List the clusters you can reach and their state: asleep, waking, running (with its workers) or stopped.

    On AWS, the clusters whose certificate your login holds (the fleet's member policy lets it see
    them); here, every local cluster under $DASKFLEET_HOME. Where AWS cannot be asked (no login,
    no region), a note says why; that is not an error.
    """
    from ..conventions import daskfleet_home
    from ..errors import DaskfleetError
    from .clusters import local_clusters, render_json, render_text

    found = local_clusters(daskfleet_home())
    notes = []
    if not local_only:
        from ..aws.fleet import aws_clusters

        try:
            found = aws_clusters(region=region, profile=profile, user=user) + found
        except DaskfleetError as error:
            notes.append(f"AWS clusters not listed: {error.message}")
    click.echo(render_json(found, notes) if as_json else render_text(found, notes))


@click.command("login")
@click.argument("cluster")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="A local cluster's state directory (default: $DASKFLEET_HOME/CLUSTER for a local cluster).")
@click.option("--profile", help="AWS profile of your own login (default: the default credential chain).")
@click.option("--region", help="AWS region of the cluster (default: your profile's).")
@click.option("--ttl", type=click.FloatRange(min=1, min_open=False), metavar="SECONDS",
              help="Ask for a certificate shorter than the cluster's (12 h unless the stack says otherwise).")
@click.option("--metrics", is_flag=True,
              help="Instead: the read-only `metrics` certificate a Prometheus presents to scrape /metrics (your "
                   "login must be among the stack's metricsScrapers); prints the files for its scrape config.")
def login(cluster: str, state_dir: Path | None, profile: str | None, region: str | None, ttl: float | None,
          metrics: bool) -> None:
    """Get your short-lived certificate for CLUSTER (`local` for the local cluster).

    A key pair is made on this machine (0600 in a 0700 directory; it is never sent), and the cluster's
    certificate vendor signs it for 12 h on the proof of your AWS login (a signed sts:GetCallerIdentity),
    or, for a local cluster, of your OS identity. daskfleet.connect does the same by itself when your
    certificate is missing or has less than a third of its life left, and renews it while connected.
    With --metrics, nothing renews it: run this again before it expires (a cron job or systemd timer).
    """
    from .connect import login as log_in, login_directory
    from .login import describe

    material = log_in(cluster, state_dir=state_dir, profile=profile, region=region, ttl=ttl, metrics=metrics)
    if not metrics:
        click.echo(f"logged in: {describe(material)}\nconnect: daskfleet.connect(\"{cluster}\")")
        return
    directory = login_directory(cluster, state_dir=state_dir, metrics=True)
    click.echo(f"metrics certificate: {describe(material)}\n"
               f"{render_scrape_config(directory)}\n"
               "it is not renewed by itself: run this command again before it expires (e.g. every 6 h from a cron "
               "job or systemd timer); Prometheus reads the files again for new connections")


def render_scrape_config(directory: Path) -> str:
    """The Prometheus ``tls_config`` for the metrics certificate files in ``directory``."""
    from ..node.sources import CA_FILE, CERT_FILE, KEY_FILE

    return (f"Prometheus tls_config (scheme: https, metrics_path: /metrics, the scheduler's dashboard port):\n"
            f"  tls_config:\n    ca_file: {directory / CA_FILE}\n    cert_file: {directory / CERT_FILE}\n"
            f"    key_file: {directory / KEY_FILE}")
