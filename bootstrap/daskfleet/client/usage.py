"""Usage records for ``daskfleet usage``: asked of the live scheduler with the user's certificate, or read
from where they are stored (the local cluster's file, the cluster's log group on AWS); and a task prefix's
profile for ``daskfleet profile``, asked of the scheduler the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..usage.profiles import PROFILE_OP
from ..usage.records import RECORDS_FILE, USAGE_OP, parse_lines, read_file
from .connect import connect, local_cluster


def live_records(cluster: str, since: float, *, state_dir: Path | None = None, address: str | None = None,
                 profile: str | None = None, region: str | None = None) -> list[dict[str, Any]]:
    """The scheduler's records (its own and those it restored at start) plus its open period."""
    with connect(cluster, address=address, state_dir=state_dir, profile=profile, region=region) as client:
        return client.sync(getattr(client.scheduler, USAGE_OP), since=since)


def stored_records(cluster: str, since: float, *, state_dir: Path | None = None, address: str | None = None,
                   profile: str | None = None, region: str | None = None) -> list[dict[str, Any]]:
    """Records as stored: they outlive the scheduler (and a cluster scaled to zero)."""
    local = local_cluster(cluster, state_dir)
    if local is not None:
        return read_file(local[1] / RECORDS_FILE, since)
    from ..aws.usagerecords import recorded_usage_lines  # noqa: PLC0415  (boto3 only for AWS clusters)

    return parse_lines(recorded_usage_lines(cluster, since, profile=profile, region=region))


def prefix_profile(cluster: str, prefix: str, *, state_dir: Path | None = None, address: str | None = None,
                   profile: str | None = None, region: str | None = None) -> dict[str, Any]:
    """``prefix``'s profile merged over the workers, with the window it covers (daskfleet.usage.profiles).

    A cluster gone idle is not woken: its workers left, and their profiles with them."""
    with connect(cluster, address=address, state_dir=state_dir, profile=profile, region=region, wake=False) as client:
        return client.sync(getattr(client.scheduler, PROFILE_OP), prefix=prefix)
