"""``daskfleet usage CLUSTER``: a table per user (tasks, compute hours, worker hours charged, cost), or with
``--by prefix`` per task prefix and user; ``daskfleet profile CLUSTER --prefix P``: a prefix's flame graph.

From the live scheduler (any user's client certificate may ask), or with ``--records`` from the
stored usage records (the local cluster's file, or the cluster's log group on AWS). The caller
(``daskfleet.cli``) passes the readers, so this module knows neither clients nor AWS.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from ..conventions import IDLE_USER as IDLE
from ..errors import DaskfleetError, ExitCode

#: (cluster, since, where) -> usage records; ``where`` holds state_dir, address, profile, region.
Reader = Callable[..., list[dict[str, Any]]]
#: Rows the prefix table shows unless ``--top`` says otherwise.
DEFAULT_TOP = 20

_DURATION = re.compile(r"^(?P<number>\d+(\.\d+)?)(?P<unit>[mhd])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}


def parse_since(text: str | None, now: float) -> float:
    """``--since``: a UTC date or date-time (ISO 8601), or a duration back from now (30m, 12h, 7d);
    unset: the start of this UTC month."""
    if text is None:
        from .ledger import month_start  # noqa: PLC0415  (the CLI imports this module; the ledger only when asked)

        return month_start(now).timestamp()
    match = _DURATION.match(text.strip())
    if match:
        return now - float(match["number"]) * _UNIT_SECONDS[match["unit"]]
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a date/time (2026-11-01, 2026-11-01T08:00) nor a duration (30m, 12h, 7d)",
                                 param_hint="--since") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def render_table(summary: Any, since: float) -> str:
    """The usage table a person reads: users by cost, then idle time and the scheduler, then the total."""
    header = ("user", "tasks", "compute h", "worker h", "cost USD")
    users = sorted(((user, usage) for user, usage in summary.users.items() if user != IDLE), key=lambda item: -item[1].cost_usd)
    rows = [(user, f"{u.tasks:d}", f"{u.compute_s / 3600:.3f}", f"{u.worker_s / 3600:.3f}", f"{u.cost_usd:.2f}") for user, u in users]
    if IDLE in summary.users:
        idle = summary.users[IDLE]
        rows.append((f"({IDLE}: no client)", "", "", f"{idle.worker_s / 3600:.3f}", f"{idle.cost_usd:.2f}"))
    rows.append(("(scheduler)", "", "", "", f"{summary.scheduler_cost_usd:.2f}"))
    total_worker_h = sum(u.worker_s for u in summary.users.values()) / 3600
    total_tasks = sum(u.tasks for u in summary.users.values())
    total_compute_h = sum(u.compute_s for u in summary.users.values()) / 3600
    rows.append(("total", f"{total_tasks:d}", f"{total_compute_h:.3f}", f"{total_worker_h:.3f}", f"{summary.cost_usd:.2f}"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip()

    start = dt.datetime.fromtimestamp(since, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"usage since {start} (idle worker time is charged to the users whose clients were connected)"
    rule = "-" * len(line(header))
    return "\n".join([title, line(header), rule, *map(line, rows[:-1]), rule, line(rows[-1])])


def prefix_rows(summary: Any, user: str | None = None) -> list[tuple[str, str, Any]]:
    """(prefix, user, figures) of every user's prefixes (of ``user`` alone if given), largest first: by cost, then
    worker time, then compute time."""
    rows = [(prefix, name, usage) for name, prefixes in summary.prefixes.items() if user is None or name == user
            for prefix, usage in prefixes.items()]
    return sorted(rows, key=lambda row: (-row[2].cost_usd, -row[2].worker_s, -row[2].compute_s, row[1], row[0]))


def prefix_report(summary: Any, since: float, *, user: str | None, top: int) -> dict[str, Any]:
    """The prefix table as data: the ``top`` largest rows (0: all), the rest summed, each row's share of the total
    cost charged to users (of their worker time while nothing is priced), and the total."""
    from .ledger import UserUsage  # noqa: PLC0415

    def added(rows: list[tuple[str, str, Any]]) -> Any:
        return functools.reduce(lambda total, row: total.plus(row[2]), rows, UserUsage())

    rows = prefix_rows(summary, user)
    total = added(rows)
    share_of = "cost_usd" if total.cost_usd > 0 else "worker_s"
    whole = getattr(total, share_of)

    def entry(prefix: str | None, name: str | None, usage: Any) -> dict[str, Any]:
        return {"prefix": prefix, "user": name, **asdict(usage), "share": getattr(usage, share_of) / whole if whole else 0.0}

    shown, rest = (rows[:top], rows[top:]) if top else (rows, [])
    folded = added(rest)
    return {
        "since": since, "user": user, "share_of": share_of,
        "rows": [entry(prefix, name, usage) for prefix, name, usage in shown],
        "more": {"rows": len(rest), **entry(None, None, folded)} if rest else None,
        "total": entry(None, None, total),
    }


def render_prefix_table(report: dict[str, Any]) -> str:
    """The prefix table a person reads: task prefixes by cost, the rest in one line, then the total."""
    header = ("prefix", "user", "tasks", "compute h", "worker h", "cost USD", "share")

    def cells(first: str, name: str, row: dict[str, Any]) -> tuple[str, ...]:
        return (first, name, f"{row['tasks']:d}", f"{row['compute_s'] / 3600:.3f}", f"{row['worker_s'] / 3600:.3f}",
                f"{row['cost_usd']:.2f}", f"{100 * row['share']:.1f}%")

    rows = [cells(row["prefix"], row["user"], row) for row in report["rows"]]
    if report["more"]:
        rows.append(cells(f"({report['more']['rows']} more)", "", report["more"]))
    total = cells("total", report["user"] or "", report["total"])
    widths = [max(len(row[i]) for row in [header, *rows, total]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip()

    start = dt.datetime.fromtimestamp(report["since"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    basis = "the cost" if report["share_of"] == "cost_usd" else "the worker time (no prices are set)"
    title = f"usage by task prefix since {start} (share: of {basis} charged to users)"
    rule = "-" * len(line(header))
    return "\n".join([title, line(header), rule, *map(line, rows), rule, line(total)])


def usage_command(live: Reader, stored: Reader) -> click.Command:
    """The ``usage`` command, reading the live scheduler with ``live`` and the records with ``stored``."""

    @click.command("usage")
    @click.argument("cluster")
    @click.option("--since", help="A UTC date/time (2026-11-01, 2026-11-01T08:00) or a duration back (30m, 12h, 7d); "
                                  "default: the start of this UTC month.")
    @click.option("--by", type=click.Choice(["user", "prefix"]), default="user", show_default=True,
                  help="One row per user, or per task prefix (the function, e.g. read_parquet) and user; (other): a "
                       "user's prefixes past the per-user bound, (idle): idle worker time charged to the user.")
    @click.option("--user", help="With --by prefix: only this user's prefixes.")
    @click.option("--top", type=click.IntRange(min=0), help=f"With --by prefix: the N largest rows, the rest summed in one "
                                                            f"(default {DEFAULT_TOP}; 0: every row).")
    @click.option("--records", "from_records", is_flag=True,
                  help="Read the stored usage records (they outlive the scheduler) instead of the live scheduler.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
    @_where
    def usage(cluster: str, since: str | None, by: str, user: str | None, top: int | None, from_records: bool,
              as_json: bool, state_dir: Path | None, address: str | None, profile: str | None, region: str | None) -> None:
        """Per-user usage of CLUSTER (a local cluster's name, e.g. 'local', or an AWS cluster's): tasks, compute and
        worker hours, cost; with --by prefix, per task prefix and user."""
        from .records import summarize

        if by == "user" and (user is not None or top is not None):
            raise click.UsageError("--user and --top go with --by prefix")
        start = parse_since(since, time.time())
        where = {"state_dir": state_dir, "address": address, "profile": profile, "region": region}
        records = (stored if from_records else live)(cluster, start, **where)
        summary = summarize(records, start)
        source = {"cluster": cluster, "since": start, "source": "records" if from_records else "scheduler"}
        if by == "prefix":
            report = prefix_report(summary, start, user=user, top=DEFAULT_TOP if top is None else top)
            click.echo(json.dumps({**source, "by": "prefix", **report}, indent=2) if as_json else render_prefix_table(report))
        elif as_json:
            click.echo(json.dumps({**source, **summary.as_json()}, indent=2))
        else:
            click.echo(render_table(summary, start))

    return usage


def profile_command(fetch: Callable[..., dict[str, Any]]) -> click.Command:
    """The ``profile`` command, asking the scheduler for a prefix's profile with ``fetch``."""

    @click.command("profile")
    @click.argument("cluster")
    @click.option("--prefix", required=True, help="The task prefix (the function, as `daskfleet usage --by prefix` names it).")
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
                  help="The HTML file to write (default: PREFIX-profile.html here).")
    @_where
    def profile_cmd(cluster: str, prefix: str, out: Path | None, state_dir: Path | None, address: str | None,
                    profile: str | None, region: str | None) -> None:
        """Save the statistical profile of a task prefix's tasks on CLUSTER (the flame graph of the dashboard's
        profile page) as one HTML file that opens anywhere; it names the time window it covers."""
        from .profiles import render_page, window_text

        if not prefix.strip():
            raise click.BadParameter("a task prefix is required", param_hint="--prefix")
        target = out or Path(f"{re.sub(r'[^A-Za-z0-9._-]+', '_', prefix).strip('._') or 'prefix'}-profile.html")
        result = fetch(cluster, prefix, state_dir=state_dir, address=address, profile=profile, region=region)
        if not result["samples"]:
            known = ", ".join(result["sampled_prefixes"]) or "none"
            raise DaskfleetError(f"no profile samples of task prefix {prefix!r} on the workers in {window_text(result)} "
                                 f"(the prefixes with most samples: {known})", ExitCode.CONFIG)
        page = render_page(result, cluster)
        try:
            target.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise DaskfleetError(f"--out: cannot write {target}: {exc.strerror or exc}", ExitCode.CONFIG) from None
        seconds = result["samples"] * result["interval_s"]
        click.echo(f"profile of {prefix} on {cluster}: {result['samples']:,} samples (about {seconds:,.1f} s of task time) "
                   f"from {result['workers']} worker(s)\n  window: {window_text(result)}\n  saved:  {target}")

    return profile_cmd


def _where(command: Callable) -> Callable:
    """The options that say where a cluster's scheduler is, as ``daskfleet.connect`` takes them."""
    options = [
        click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="The local cluster's state directory."),
        click.option("--address", help="The scheduler's address, e.g. tls://localhost:8786 through an SSM port forward."),
        click.option("--profile", help="AWS profile (AWS clusters)."),
        click.option("--region", help="AWS region (AWS clusters)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command
