"""``daskfleet janitor`` and ``daskfleet status``: an operator's commands against a region (imports only click here)."""

from __future__ import annotations

import sys

import click

_region = click.option("--region", help="AWS region (default: AWS_REGION or your profile's).")
_profile = click.option("--profile", help="AWS profile (default: the standard credential chain).")


@click.command()
@_region
@_profile
@click.option("--yes", is_flag=True, help="Delete what is listed (default: only list it).")
@click.option("--orphans", is_flag=True, help="Also select resources whose cluster has no live stack (needs --live or --pulumi-backend).")
@click.option("--live", "live", multiple=True, metavar="CLUSTER", help="A cluster whose stack is live (repeatable), for --orphans.")
@click.option("--pulumi-backend", metavar="URL", help="Ask this Pulumi backend which clusters are live, for --orphans.")
@click.option("--orphan-grace-hours", type=click.FloatRange(min=0), default=6.0, show_default=True,
              help="A cluster without a stack must be at least this old to count as an orphan.")
def janitor(region, profile, yes, orphans, live, pulumi_backend, orphan_grace_hours) -> None:
    """Find resources tagged daskfleet:cluster whose expires tag has passed (or, with --orphans, whose cluster has
    no live stack) and list them; with --yes delete them in dependency order. Untagged and unexpired resources are
    never touched. Exits non-zero when anything could not be listed or deleted, naming each."""
    from .janitor import run_janitor

    run_janitor(region=region, profile=profile, yes=yes, orphans=orphans, live=live, pulumi_backend=pulumi_backend,
                orphan_grace_hours=orphan_grace_hours, out=sys.stdout)


@click.command()
@click.argument("cluster")
@_region
@_profile
@click.option("--address", metavar="tls://HOST:PORT", help="The scheduler's address, e.g. tls://localhost:8786 through an SSM port forward.")
@click.option("--user", help="Your daskfleet user name (default: derived from your AWS identity).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the table.")
@click.option("--timeout", type=click.FloatRange(min=1), default=10.0, show_default=True, help="Seconds to wait for the scheduler.")
def status(cluster, region, profile, address, user, as_json, timeout) -> None:
    """Show CLUSTER: its groups, whether its scheduler answers over TLS, its workers' fingerprints, idle state,
    this month's spend, its budget and its expiry. A part that cannot be seen says why; that is not an error."""
    from .observe import observe_cluster
    from .status import render_json, render_text

    view = observe_cluster(cluster, region=region, profile=profile, address=address, user=user, timeout=timeout)
    click.echo(render_json(view) if as_json else render_text(view))
