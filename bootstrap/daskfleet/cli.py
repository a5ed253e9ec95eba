"""The ``daskfleet`` command: ``node`` (the agent) here; each capability adds its own commands.

Every command module imports only click at load time, so ``daskfleet --help`` stays fast and
the agent does not import what it does not run.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from .aws import commands as aws_commands
from .client import dashboard_commands
from .client import env_commands as client_env_commands
from .client import fleet_commands
from .environments import commands as env_commands
from .errors import DaskfleetError, ExitCode
from .local import commands as local_commands
from .ops import commands as ops_commands
from .usage import commands as usage_commands


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
@click.option("--worker-backend", "backend_text", metavar="BACKEND",
              help="What a scheduler scales its workers with: local:STATE_DIR (a local cluster's worker processes), "
              "aws:CLUSTER (the cluster's worker group) or none. Default: aws:CLUSTER with an aws: source, else none.")
@click.option("--restart-history", type=click.Path(dir_okay=False, path_type=Path),
              help="The node's run history, for its backoff after failures and its give-up window (default: "
              "$STATE_DIRECTORY/restarts-ROLE.json under systemd; none: no backoff, no give-up).")
@click.option("--no-memory-watcher", "memory_watcher", flag_value=False, default=True,
              help="A worker's supervisor follows its memory itself (the local cluster's does): start no watcher process.")
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def node(
    role: str, source_text: str, runtime_dir: Path | None, backend_text: str | None, restart_history: Path | None,
    memory_watcher: bool, log_level: str,
) -> None:
    """Run this machine's scheduler or worker (the node agent).

    Ends with one line and an exit code (docs/agent.md): 0 stopped on request, 13 environment switch,
    14 restart requested by the scheduler, 15 retired, 16 drained, 17 lost the scheduler; failures:
    65 bad spec, 66 unreadable certificate, 69 source unavailable, 70 certificate expired or not yet
    valid, 71 certificate role mismatch, 72 environment mismatch, 75 scheduler unreachable, 76 refused
    by the scheduler, 78 configuration, 79 gave up after repeated failures, 80 a worker ended for exceeding
    its memory limit (recorded by its memory watcher or supervisor, which killed it).

    A worker is ended once its RSS is above distributed.worker.memory.terminate of its memory limit, as a
    nanny would: by this agent's own watcher process, or by its supervisor (--no-memory-watcher).
    """
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    source = make_source(source_text)
    argv = [sys.executable, "-m", "daskfleet", *sys.argv[1:]]
    spare, stamp = False, ()
    if role == "worker":  # what distributed's nanny sets before the worker process starts; before distributed loads
        from .node.prespawn import exec_with_worker_environment
        from .node.spare import environment_stamp, spare_requested, wait_for_go

        exec_with_worker_environment(argv)
        spare = spare_requested()  # started ahead of need by the local supervisor (daskfleet.node.spare)
        stamp = environment_stamp() if spare else ()
    from .node.agent import run_node, run_supervised
    from .node.supervision import RunHistory

    if spare:  # all imported: wait for the supervisor's "go"; spec, certificate and environment come after it
        wait_for_go(stamp, argv)
    history_path = restart_history or _systemd_history(role)
    backend = make_worker_backend(backend_text, source_text, source) if role == "scheduler" else None
    outcome = run_supervised(
        role, source, RunHistory(history_path) if history_path else None,
        lambda: run_node(role, source, runtime_dir, backend, memory_watcher=memory_watcher, history=history_path),
    )
    click.echo(f"daskfleet: {outcome.line}", err=True)
    if outcome.code == ExitCode.ENVIRONMENT_SWITCH and (python := source.switch_interpreter()) is not None:
        # The new environment is installed already (the local cluster): become the agent in it, same process.
        sys.stderr.flush()
        os.execv(python, [python, "-m", "daskfleet", *sys.argv[1:]])
    if role == "worker":
        end_at_once(int(outcome.code))
    sys.exit(int(outcome.code))


def end_at_once(code: int) -> None:
    """Exit without tearing the interpreter down, as a nanny's worker process does (multiprocessing ends it with
    ``os._exit``): a worker that loaded pandas or pyarrow takes about half a second to finalize, which a restart
    would wait for. Everything the run leaves is written by now (its line, its run history); logs are flushed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _systemd_history(role: str) -> Path | None:
    """Under systemd, the unit's StateDirectory keeps the node's run history across restarts."""
    state = os.environ.get("STATE_DIRECTORY")
    return Path(state.split(":")[0]) / f"restarts-{role}.json" if state else None


def make_source(text: str):
    """A node source from its command-line form: ``dir:/path/to/node`` or ``aws:<cluster>``.

    The caller picks the implementation; the AWS one (and boto3) is imported only when asked for.
    """
    scheme, _, rest = text.partition(":")
    if scheme == "dir" and rest:
        from .local.vendor import local_node_issuer
        from .node.sources import DirectorySource

        return DirectorySource(rest, issuer_of=local_node_issuer)
    if scheme == "aws" and rest:
        from .aws.source import AwsSource

        return AwsSource(rest)
    raise DaskfleetError(f"--source: unknown source {text!r} (accepted: dir:PATH, aws:CLUSTER)", ExitCode.CONFIG)


def _live_usage(cluster: str, since: float, **where):
    from .client.usage import live_records

    return live_records(cluster, since, **where)


def _stored_usage(cluster: str, since: float, **where):
    from .client.usage import stored_records

    return stored_records(cluster, since, **where)


def _prefix_profile(cluster: str, prefix: str, **where):
    from .client.usage import prefix_profile

    return prefix_profile(cluster, prefix, **where)


def make_worker_backend(text: str | None, source_text: str, source):
    """What a scheduler scales its workers with, from ``--worker-backend`` (a factory, called only if the spec scales).

    The composition root picks the implementation, so the node agent imports neither the AWS nor the local one.
    """
    if text is None:
        text = source_text if source_text.startswith("aws:") else "none"
    scheme, _, rest = text.partition(":")
    if scheme == "none" and not rest:
        return None
    if scheme == "local" and rest:
        from .local.workers import LocalWorkerProcesses

        return lambda: LocalWorkerProcesses(Path(rest))
    if scheme == "aws" and rest:
        from .aws.source import AwsSource
        from .aws.workers import AutoScalingWorkers

        if not isinstance(source, AwsSource) or source.cluster != rest:
            raise DaskfleetError(f"--worker-backend {text}: needs --source {text} (the instance's own cluster)", ExitCode.CONFIG)
        return lambda: AutoScalingWorkers(rest, source.client)
    raise DaskfleetError(
        f"--worker-backend: unknown backend {text!r} (accepted: local:STATE_DIR, aws:CLUSTER, none)", ExitCode.CONFIG
    )


cli.add_command(local_commands.local)
cli.add_command(env_commands.fingerprint)
cli.add_command(env_commands.env)
for command in (client_env_commands.publish, client_env_commands.status, client_env_commands.rollback,
                client_env_commands.sync, aws_commands.follow):
    env_commands.env.add_command(command)
cli.add_command(fleet_commands.clusters)
cli.add_command(fleet_commands.login)
cli.add_command(ops_commands.janitor)
cli.add_command(ops_commands.status)
cli.add_command(ops_commands.revoke)
cli.add_command(dashboard_commands.dashboard)
cli.add_command(ops_commands.unrevoke)
cli.add_command(usage_commands.usage_command(live=_live_usage, stored=_stored_usage))
cli.add_command(usage_commands.profile_command(fetch=_prefix_profile))


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
