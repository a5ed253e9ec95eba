"""The ``daskfleet`` command: ``node`` (the agent), ``local`` (a cluster on this machine), ``fingerprint``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from .errors import DaskfleetError, ExitCode


def _fail(error: DaskfleetError) -> None:
    click.echo(f"daskfleet: error: {error.message}", err=True)
    sys.exit(int(error.exit_code))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Secured, reproducible Dask clusters."""


@cli.command()
@click.argument("role", type=click.Choice(["scheduler", "worker"]))
@click.option("--source", "source_text", required=True, metavar="SOURCE",
              help="Where the spec and TLS material come from: dir:PATH or aws:CLUSTER.")
@click.option("--runtime-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Private directory for certificates and Dask config (default: $RUNTIME_DIRECTORY or a new temporary one).")
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def node(role: str, source_text: str, runtime_dir: Path | None, log_level: str) -> None:
    """Run this machine's scheduler or worker (the node agent).

    Exit codes: 65 bad spec, 66 unreadable certificate, 69 source unavailable, 70 certificate
    expired or not yet valid, 71 certificate role mismatch, 72 environment mismatch,
    75 scheduler unreachable, 76 refused by the scheduler, 78 configuration.
    """
    from .node.agent import run_node

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sys.exit(int(run_node(role, make_source(source_text), runtime_dir)))


@cli.group()
def local() -> None:
    """A whole secured cluster on this machine (the embedded default)."""


_state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Where certificates, logs and process records live (default: $DASKFLEET_HOME/local or ~/.daskfleet/local).",
)


@local.command("up")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0), help="Number of workers.")
@_state_dir_option
def local_up(workers: int, state_dir: Path | None) -> None:
    """Start a TLS-secured scheduler and workers on 127.0.0.1 and run a smoke computation."""
    from .local import cluster as local_cluster
    from .local.state import default_state_dir

    state = state_dir or default_state_dir()
    cluster = local_cluster.up(state.resolve(), workers)
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
    from .local import state as local_state

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
    from .local import cluster as local_cluster
    from .local.state import default_state_dir

    cluster = local_cluster.down((state_dir or default_state_dir()).resolve())
    if cluster is None:
        click.echo("no local cluster to stop")
    else:
        click.echo(f"stopped {len(cluster.nodes)} process(es)")


@cli.command()
def fingerprint() -> None:
    """Print the environment fingerprint of this Python environment."""
    from .environments.records import current_fingerprint

    click.echo(current_fingerprint())


def make_source(text: str):
    """A node source from its command-line form: ``dir:/path/to/node`` or ``aws:<cluster>``.

    The caller picks the implementation; the AWS one (and boto3) is imported only when asked for.
    """
    scheme, _, rest = text.partition(":")
    if scheme == "dir" and rest:
        from .node.sources import DirectorySource

        return DirectorySource(rest)
    if scheme == "aws" and rest:
        from .aws.source import AwsSource

        return AwsSource(rest)
    raise DaskfleetError(f"--source: unknown source {text!r} (accepted: dir:PATH, aws:CLUSTER)", ExitCode.CONFIG)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except DaskfleetError as error:
        _fail(error)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
