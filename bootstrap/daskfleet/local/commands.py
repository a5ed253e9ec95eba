"""``daskfleet local …``: start, show and stop the cluster on this machine."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def local() -> None:
    """A whole secured cluster on this machine (the embedded default)."""


_state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Where certificates, logs and process records live (default: $DASKFLEET_HOME/local or ~/.daskfleet/local).",
)


@local.command("up")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0), help="Number of workers.")
@_state_dir_option
@click.option("--user-max-workers", "max_workers", multiple=True, metavar="USER=N",
              help="Most workers a user's work may hold at once ('*' for everyone not named); repeatable.")
@click.option("--user-compute-hours-per-day", "compute_hours", multiple=True, metavar="USER=HOURS",
              help="Task compute hours a user may use per UTC day ('*' for everyone not named); repeatable.")
@click.option("--price", "prices", multiple=True, metavar="TYPE=USD[/SPOT]",
              help="US dollars per hour of an instance type; local nodes are type 'local'; repeatable.")
@click.option("--budget-monthly-usd", type=click.FloatRange(min=0, min_open=True), help="Monthly budget of the cluster.")
@click.option("--budget-hard-stop-percent", default=100, show_default=True, type=click.IntRange(0, 1000),
              help="Percentage of the budget at which the scheduler stops the cluster (0: never).")
def local_up(workers: int, state_dir: Path | None, max_workers: tuple[str, ...], compute_hours: tuple[str, ...],
             prices: tuple[str, ...], budget_monthly_usd: float | None, budget_hard_stop_percent: int) -> None:
    """Start a TLS-secured scheduler and workers on 127.0.0.1 and run a smoke computation."""
    from ..errors import DaskfleetError, ExitCode
    from ..usage.policy import policy_from_entries
    from . import cluster as local_cluster
    from .state import default_state_dir

    try:
        usage = policy_from_entries(
            prices=prices, user_max_workers=max_workers, user_compute_hours_per_day=compute_hours,
            budget_monthly_usd=budget_monthly_usd, budget_hard_stop_percent=budget_hard_stop_percent,
            keys={"prices": "--price", "user_max_workers": "--user-max-workers",
                  "user_compute_hours_per_day": "--user-compute-hours-per-day"},
        )
    except ValueError as exc:
        raise DaskfleetError(str(exc).splitlines()[0], ExitCode.CONFIG) from None
    state = state_dir or default_state_dir()
    cluster = local_cluster.up(state.resolve(), workers, usage=usage)
    via = "" if state_dir is None else f", state_dir={str(state.resolve())!r}"
    click.echo(
        f"daskfleet local cluster is up: {workers} worker(s), smoke computation passed.\n"
        f"  scheduler: {cluster.address}\n"
        f"  dashboard: {cluster.dashboard}   (HTTPS with the cluster's own CA)\n"
        f"  audit log: {state / 'audit.jsonl'}\n"
        f"Connect from Python:\n"
        f"  import daskfleet\n"
        f"  client = daskfleet.connect(\"local\"{via})\n"
        f"Stop it with: daskfleet local down"
    )


@local.command("status")
@_state_dir_option
def local_status(state_dir: Path | None) -> None:
    """Show what the local cluster runs."""
    from . import state as local_state

    cluster = local_state.LocalCluster.load((state_dir or local_state.default_state_dir()).resolve())
    if cluster is None:
        click.echo("no local cluster is running")
        return
    click.echo(f"scheduler: {cluster.address}\ndashboard: {cluster.dashboard}")
    for record in cluster.nodes:
        state = "running" if record.process() is not None else "stopped"
        click.echo(f"  {record.name:<12} pid {record.pid:<8} {state}")


@local.command("down")
@_state_dir_option
def local_down(state_dir: Path | None) -> None:
    """Stop every process `local up` started."""
    from . import cluster as local_cluster
    from .state import default_state_dir

    cluster = local_cluster.down((state_dir or default_state_dir()).resolve())
    if cluster is None:
        click.echo("no local cluster to stop")
    else:
        click.echo(f"stopped {len(cluster.nodes)} process(es)")
