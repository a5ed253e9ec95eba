"""``daskfleet janitor``, ``status``, ``revoke`` and ``unrevoke``: an operator's commands against a region (imports only click here)."""

from __future__ import annotations

import sys
from pathlib import Path

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


def _deny_list_command(lift: bool):
    verb = "unrevoke" if lift else "revoke"

    @click.command(verb)
    @click.argument("cluster")
    @click.argument("user")
    @_region
    @_profile
    @click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                  help="A local cluster's state directory (default: $DASKFLEET_HOME/CLUSTER for a local cluster).")
    def command(cluster: str, user: str, region, profile, state_dir: Path | None, **kwargs) -> None:
        from .. import conventions
        from ..local.state import find_state_dir
        from .revocation import change_aws, change_local, check_cluster
        from .status import Part, deny_list_lines, deny_list_rows

        reason = kwargs.get("reason") or ""
        state = find_state_dir(check_cluster(cluster), state_dir)
        if state is not None:
            change = change_local(state, user, lift=lift, reason=reason)
        else:
            change = change_aws(cluster, user, lift=lift, reason=reason, region=region, profile=profile)
        if change.version is None:
            click.echo(f"{user} was {'not' if lift else 'already'} revoked on {cluster}: nothing written ({change.where})")
        elif lift:
            click.echo(f"lifted the revocation of {user} on {cluster} ({change.where}): they may connect again, and "
                       f"get certificates again")
        else:
            click.echo(f"revoked {user} on {cluster} ({change.where}): every scheduler of it closes their connections "
                       f"within {conventions.DENY_LIST_POLL_SECONDS:g}s (a local one within seconds), and no new "
                       f"certificate is issued to them")
        click.echo("\n".join(deny_list_lines(Part(deny_list_rows(change.deny)))))

    if not lift:
        command = click.option("--reason", default="", help="Why, for the audit trail and the user's error line.")(command)
    command.help = (
        "Lift USER's revocation on CLUSTER (operators)." if lift else
        "Revoke USER's access to CLUSTER (operators): its schedulers refuse USER's new connections and close their "
        "open ones (clients and task clients) within a poll; no new certificate is issued to them. On AWS it writes "
        "the cluster's deny-list parameter (its versions are the history); `daskfleet revoke local USER` writes the "
        "local cluster's deny-list file."
    )
    return command


revoke = _deny_list_command(lift=False)
unrevoke = _deny_list_command(lift=True)
