"""``daskfleet local …``: start, show and stop clusters on this machine, and make member certificates for them."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..scaling.defaults import DEFAULT_COOLDOWN_S, DEFAULT_IDLE_TIMEOUT_S, DEFAULT_NO_CLIENT_TIMEOUT_S, LOCAL_INTERVAL_S
from ..conventions import DEFAULT_PREFIXES_PER_USER, MAX_PREFIXES_PER_USER


@click.group()
def local() -> None:
    """A whole secured cluster on this machine (the embedded default)."""


_state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Where certificates, logs and process records live (default: $DASKFLEET_HOME/CLUSTER or ~/.daskfleet/CLUSTER).",
)
_seconds = click.FloatRange(min=0)


def _cluster_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ..conventions import CLUSTER_NAME_PATTERN
    from ..errors import DaskfleetError, ExitCode

    if value is not None and not re.fullmatch(CLUSTER_NAME_PATTERN, value):
        raise DaskfleetError(f"--cluster: {value!r} does not match {CLUSTER_NAME_PATTERN}", ExitCode.CONFIG)
    return value


_cluster_option = click.option(
    "--cluster", "name", callback=_cluster_name, metavar="NAME",
    help="Which local cluster: its name, which its certificates carry and its state directory is named after "
    "[default: local]. Several run side by side.",
)


def _state_of(cluster: str | None, state_dir: Path | None) -> Path:
    """The state directory of local cluster ``cluster``: ``--state-dir``, else $DASKFLEET_HOME/CLUSTER."""
    from .state import LOCAL_CLUSTER, default_state_dir

    return (state_dir or default_state_dir(cluster or LOCAL_CLUSTER)).resolve()


def _name_of(cluster: str | None, state_dir: Path | None) -> str:
    """``--cluster``, else the name of the cluster made in ``--state-dir``, else ``local``."""
    from .state import LOCAL_CLUSTER, cluster_name

    if cluster is None and state_dir is not None:
        return cluster_name(state_dir.resolve())
    return cluster or LOCAL_CLUSTER


def _adapt_range(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    match = re.fullmatch(r"(\d+):(\d+)", value)
    if match is None or int(match[1]) > int(match[2]):
        raise click.BadParameter(f"{value!r} is not MIN:MAX with 0 <= MIN <= MAX, e.g. 0:4", ctx, param)
    return int(match[1]), int(match[2])


def _memory_limit(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from ..node.sizing import check_memory_limit

    if value is None:
        return None
    try:
        return check_memory_limit(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@local.command("up")
@click.option("--workers", type=click.IntRange(min=0), help="Keep this many workers while the cluster is in use [default: 2].")
@click.option("--adapt", "adapt", metavar="MIN:MAX", callback=_adapt_range,
              help="Adaptive workers: the scheduler follows the load between MIN and MAX (instead of --workers).")
@click.option("--worker-cap", type=click.IntRange(min=0), help="The most workers at once, whatever the load asks (cluster cap).")
@click.option("--threads", type=click.IntRange(1, 1024),
              help="Threads per worker [default: the cores split among the most workers at once, as LocalCluster].")
@click.option("--memory-limit", metavar="SIZE", callback=_memory_limit,
              help="Memory limit per worker: a size (4GiB), a fraction of this machine's memory (0.5) or auto (the "
              "worker's share by its threads) [default: the memory split among the most workers at once, as LocalCluster].")
@click.option("--idle-timeout", type=_seconds, default=DEFAULT_IDLE_TIMEOUT_S, show_default=True,
              help="Seconds without work after which workers retire to 0; 0: never.")
@click.option("--no-client-timeout", type=_seconds, default=DEFAULT_NO_CLIENT_TIMEOUT_S, show_default=True,
              help="Seconds without work and without a connected client after which workers retire to 0; 0: never.")
@click.option("--adapt-interval", type=click.FloatRange(min=0.1), default=LOCAL_INTERVAL_S, show_default=True,
              help="Seconds between the scheduler's scaling decisions.")
@click.option("--adapt-cooldown", type=_seconds, default=DEFAULT_COOLDOWN_S, show_default=True,
              help="No scale-down this many seconds after the last scaling action.")
@_cluster_option
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
@click.option("--prefixes-per-user", default=DEFAULT_PREFIXES_PER_USER, show_default=True,
              type=click.IntRange(0, MAX_PREFIXES_PER_USER),
              help="Task prefixes (functions) whose usage is kept apart per user; later ones count as '(other)'. "
              "0: per-user usage only.")
def local_up(
    workers: int | None, adapt: tuple[int, int] | None, worker_cap: int | None, threads: int | None,
    memory_limit: str | None, idle_timeout: float,
    no_client_timeout: float, adapt_interval: float, adapt_cooldown: float, name: str | None, state_dir: Path | None,
    max_workers: tuple[str, ...], compute_hours: tuple[str, ...], prices: tuple[str, ...],
    budget_monthly_usd: float | None, budget_hard_stop_percent: int, prefixes_per_user: int,
) -> None:
    """Start a TLS-secured scheduler and workers on 127.0.0.1 and run a smoke computation; you are its admin."""
    from ..errors import DaskfleetError, ExitCode
    from ..usage.policy import policy_from_entries
    from . import cluster as local_cluster
    from .state import LOCAL_CLUSTER, command_flags

    if workers is not None and adapt is not None:
        raise DaskfleetError("--workers and --adapt: give one (a fixed count, or MIN:MAX)", ExitCode.CONFIG)
    try:
        usage = policy_from_entries(
            prices=prices, user_max_workers=max_workers, user_compute_hours_per_day=compute_hours,
            budget_monthly_usd=budget_monthly_usd, budget_hard_stop_percent=budget_hard_stop_percent,
            prefixes_per_user=prefixes_per_user, keys={"prices": "--price", "user_max_workers": "--user-max-workers",
                  "user_compute_hours_per_day": "--user-compute-hours-per-day"},
        )
    except ValueError as exc:
        raise DaskfleetError(str(exc).splitlines()[0], ExitCode.CONFIG) from None
    low, high = adapt or (2 if workers is None else workers,) * 2
    scaling = local_cluster.local_scaling(
        low, high, cap=worker_cap, interval_s=adapt_interval, cooldown_s=adapt_cooldown,
        idle_timeout_s=idle_timeout, no_client_timeout_s=no_client_timeout,
    )
    name = name or LOCAL_CLUSTER
    state = _state_of(name, state_dir)
    started = local_cluster.up(state, scaling=scaling, usage=usage, cluster=name, threads=threads,
                               memory_limit=memory_limit)
    try:
        dashboard = local_cluster.start_dashboard_forwarder(state)
    except DaskfleetError:
        local_cluster.down(state)
        raise
    via = "" if state_dir is None else f", state_dir={str(state)!r}"
    flags = command_flags(state, name)
    sizing = f"adaptive {low}..{high} worker(s)" if adapt else f"{high} worker(s)"
    if worker_cap is not None:
        sizing += f", at most {worker_cap}"
    click.echo(
        f"daskfleet local cluster {name!r} is up: {sizing}, smoke computation passed.\n"
        f"  workers:   {_worker_size(started)} each\n"
        f"  scheduler: {started.address}\n"
        f"  dashboard: {dashboard}   (open it in your browser: a forwarder on this machine presents your "
        f"certificate to the cluster, whose dashboard port asks for one)\n"
        f"  audit log: {state / 'audit.jsonl'}\n"
        f"  idle:      workers retire to 0 after {idle_timeout:g}s without work, {no_client_timeout:g}s without a client "
        f"(0: never); new work brings them back\n"
        f"Connect from Python (you are its admin):\n"
        f"  import daskfleet\n"
        f"  client = daskfleet.connect(\"{name}\"{via})\n"
        f"A member's certificate, for tests and demos: daskfleet local issue --user NAME{flags}\n"
        f"Stop it with: daskfleet local down{flags}"
    )


@local.command("status")
@_cluster_option
@_state_dir_option
def local_status(name: str | None, state_dir: Path | None) -> None:
    """Show what the local cluster runs: each node's state, and the last line of one that stopped or gave up."""
    from . import state as local_state

    cluster = local_state.LocalCluster.load(_state_of(name, state_dir))
    if cluster is None:
        click.echo("no local cluster is running")
        return
    cap = f", cap {cluster.cap}" if cluster.cap else ""
    forwarded = cluster.dashboard_url if cluster.forwarder is not None and cluster.forwarder.process() else (
        f"{cluster.dashboard} asks for a certificate: `daskfleet dashboard {cluster.cluster}` forwards it to your browser")
    click.echo(f"scheduler: {cluster.address}\ndashboard: {forwarded}\nworkers:   {cluster.adapt} (min:max){cap}, "
               f"{_worker_size(cluster)} each")
    supervisor = cluster.supervisor
    if supervisor is not None and supervisor.process() is not None:
        click.echo(f"supervisor: pid {supervisor.pid}, restarts nodes that fail (log {supervisor.log})")
    else:
        click.echo("supervisor: NOT RUNNING, so no node is restarted; `daskfleet local down` then `local up`")
    for record in cluster.nodes:
        click.echo(_node_line(record))
    from ..ops.revocation import read_local
    from ..ops.status import Part, deny_list_lines, deny_list_rows

    click.echo("\n".join(deny_list_lines(Part(deny_list_rows(read_local(Path(cluster.state_dir)))))))


def _worker_size(cluster) -> str:
    """Each worker's threads and memory limit, as ``local up`` recorded them (every worker slot has the same)."""
    from ..node.sizing import WorkerSize

    if not cluster.worker_threads:
        return "size not recorded"  # a cluster started before sizes were recorded
    return WorkerSize(cluster.worker_threads, cluster.worker_memory_limit).describe()


def _node_line(record) -> str:
    """One node: its state, restarts, and the line of its last exit when that matters."""
    alive = record.process() is not None
    state = "running" if alive and record.state in ("running", "starting") else record.state
    if not alive and state in ("running", "starting") and record.pid:
        state = "ended"  # the supervisor has not seen it yet, or is gone
    pid = f"pid {record.pid}" if alive else "-"
    line = f"  {record.name:<12} {pid:<10} {state}"
    if record.restarts:
        line += f" (restarted {record.restarts}x)"
    if record.last_line and state not in ("running", "starting"):
        line += f": exit {record.exit_code}: {record.last_line}"
    if record.memory_kills:
        line += f"; ended {record.memory_kills}x for memory, the last: {record.memory_line.removeprefix('error: ')}"
    return line


@local.command("supervise", hidden=True)
@click.option("--state-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def local_supervise(state_dir: Path) -> None:
    """The cluster's supervisor process (started by `local up`, stopped by `local down`)."""
    from .supervisor import run_local_supervisor

    run_local_supervisor(state_dir.resolve())


@local.command("down")
@_cluster_option
@_state_dir_option
def local_down(name: str | None, state_dir: Path | None) -> None:
    """Stop every process `local up` and the scheduler's scaler started."""
    from . import cluster as local_cluster

    cluster = local_cluster.down(_state_of(name, state_dir))
    if cluster is None:
        click.echo("no local cluster to stop")
    else:
        click.echo(f"stopped {len(cluster.nodes)} process(es)")


@local.group("env")
def local_env() -> None:
    """The local cluster's environment: publish a lock to it (status, rollback: `daskfleet env … local`)."""


@local_env.command("publish")
@click.option("--lock", "lock_path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="A conda-lock file.")
@click.option("--wheel", type=click.Path(dir_okay=False, path_type=Path),
              help="daskfleet's wheel to install with it (default: built from this checkout).")
@_cluster_option
@_state_dir_option
def local_env_publish(lock_path: Path, wheel: Path | None, name: str | None, state_dir: Path | None) -> None:
    """Install LOCK beside the running local cluster and roll its workers onto it without stopping it."""
    from ..environments.cache import PackageCache
    from ..environments.commands import default_cache
    from ..environments.install import daskfleet_wheel_version
    from ..environments.progress import byte_progress
    from ..environments.wheel import find_wheel
    from .environments import publish

    cache = PackageCache(default_cache())
    chosen = find_wheel(cache.root, wheel)
    state = _state_of(name, state_dir)
    with byte_progress(f"installing {lock_path.name}"):
        done = publish(state, lock_path, cache=cache, wheel=chosen, wheel_version=daskfleet_wheel_version(chosen))
    (platform, fingerprint), = done.published.fingerprints.items()
    click.echo(f"published {lock_path} to the local cluster ({platform}): {done.previous} -> {fingerprint}\n"
               f"fetched {len(done.report.fetched)} package(s), {len(done.report.from_cache)} from the cache")
    if done.published.core_packages:
        click.echo(f"core packages change ({', '.join(done.published.core_packages)}): the scheduler restarts into it")
    click.echo(f"the workers switch a few at a time; watch them with: daskfleet env status {_name_of(name, state_dir)}"
               + (f" --state-dir {state}" if state_dir else ""))


@local.command("issue")
@click.option("--user", help="The member's user name (their certificate's common name).")
@click.option("--metrics", is_flag=True, help="Instead: the read-only certificate Prometheus presents to scrape /metrics.")
@_cluster_option
@_state_dir_option
def local_issue(user: str | None, metrics: bool, name: str | None, state_dir: Path | None) -> None:
    """Make a member certificate for USER, for tests and demos: a member may compute but not administer.

    It is written under the cluster's state directory (users/USER/); connect with it from Python with
    daskfleet.connect(CLUSTER, user=USER). With --metrics, a `metrics` certificate (metrics/), which reads the
    dashboard port's /metrics and nothing else: Prometheus's.
    """
    from ..errors import DaskfleetError, ExitCode
    from .members import issue_member, issue_metrics

    name = _name_of(name, state_dir)
    state = _state_of(name, state_dir)
    if metrics == (user is not None):
        raise DaskfleetError("local issue: give --user NAME (a member) or --metrics (Prometheus), one of them",
                             ExitCode.CONFIG)
    if metrics:
        directory = issue_metrics(state, name)
        click.echo(f"a metrics certificate of local cluster {name!r} is in {directory}: it reads /metrics on the "
                   f"dashboard port and nothing else. In prometheus.yml's scrape config:\n"
                   f"  scheme: https\n  tls_config:\n    ca_file: {directory / 'ca.pem'}\n"
                   f"    cert_file: {directory / 'cert.pem'}\n    key_file: {directory / 'key.pem'}")
        return
    directory = issue_member(state, user, name)
    via = "" if state_dir is None else f", state_dir={str(state)!r}"
    click.echo(f"{user} is a member of local cluster {name!r} (certificate in {directory}): they may compute, "
               f"but only admins (you) restart it, retire workers, run code on it, register plugins or upload files.\n"
               f"Connect as {user}:  daskfleet.connect(\"{name}\"{via}, user=\"{user}\")")
