"""``daskfleet usage CLUSTER``: a table per user (tasks, compute hours, worker hours charged, cost).

From the live scheduler (any user's client certificate may ask), or with ``--records`` from the
stored usage records (the local cluster's file, or the cluster's log group on AWS). The caller
(``daskfleet.cli``) passes the two readers, so this module knows neither clients nor AWS.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..conventions import IDLE_USER as IDLE

#: (cluster, since, where) -> usage records; ``where`` holds state_dir, address, profile, region.
Reader = Callable[..., list[dict[str, Any]]]

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


def usage_command(live: Reader, stored: Reader) -> click.Command:
    """The ``usage`` command, reading the live scheduler with ``live`` and the records with ``stored``."""

    @click.command("usage")
    @click.argument("cluster")
    @click.option("--since", help="A UTC date/time (2026-11-01, 2026-11-01T08:00) or a duration back (30m, 12h, 7d); "
                                  "default: the start of this UTC month.")
    @click.option("--records", "from_records", is_flag=True,
                  help="Read the stored usage records (they outlive the scheduler) instead of the live scheduler.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
    @click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="The local cluster's state directory.")
    @click.option("--address", help="The scheduler's address, e.g. tls://localhost:8786 through an SSM port forward.")
    @click.option("--profile", help="AWS profile (AWS clusters).")
    @click.option("--region", help="AWS region (AWS clusters).")
    def usage(cluster: str, since: str | None, from_records: bool, as_json: bool, state_dir: Path | None,
              address: str | None, profile: str | None, region: str | None) -> None:
        """Per-user usage of CLUSTER (a local cluster's name, e.g. 'local', or an AWS cluster's): tasks, compute and
        worker hours, cost."""
        from .records import summarize

        start = parse_since(since, time.time())
        where = {"state_dir": state_dir, "address": address, "profile": profile, "region": region}
        records = (stored if from_records else live)(cluster, start, **where)
        summary = summarize(records, start)
        if as_json:
            click.echo(json.dumps({"cluster": cluster, "since": start, "source": "records" if from_records else "scheduler",
                                   **summary.as_json()}, indent=2))
        else:
            click.echo(render_table(summary, start))

    return usage
