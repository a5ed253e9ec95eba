"""``daskfleet clusters``: the clusters you can reach, on AWS and on this machine (imports only click here)."""

from __future__ import annotations

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
