"""``daskfleet janitor``: find leaked resources in a region, show them, and with consent delete them in order.

``sweep`` finds and decides (leaks.decide); ``remove`` deletes the plan kind by kind in
``leaks.DELETION_ORDER``. A failed deletion is recorded and the rest proceed; the caller reports
every failure at the end. Between the instances and the network, ``remove`` waits (bounded) for
the instances to be terminated, since their network interfaces hold subnets and groups.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from .awsapi import Gone, OpsApi, open_session
from .inventory import LISTINGS, Inventory, take_inventory
from .leaks import DEFAULT_ORPHAN_GRACE, Decision, Found, decide, deletion_plan, plan_rows, render_table
from .removal import PREPARE, REMOVERS
from .stacks import live_clusters_from_backend

#: How long the janitor waits for terminated instances to let go of the network, at most.
INSTANCE_WAIT_SECONDS = 600.0
_POLL_SECONDS = 10.0


@dataclass
class Sweep:
    inventory: Inventory
    decisions: list[Decision]
    plan: list[Found]


@dataclass
class Removal:
    removed: list[Found] = field(default_factory=list)
    already_gone: list[Found] = field(default_factory=list)
    #: (what, why) for each resource that could not be deleted.
    failures: list[tuple[str, str]] = field(default_factory=list)


def sweep(
    api: OpsApi,
    now: dt.datetime,
    *,
    live_clusters: frozenset[str] | None = None,
    orphan_grace: dt.timedelta = DEFAULT_ORPHAN_GRACE,
    listings: Mapping[str, Callable[[OpsApi], list[Found]]] = LISTINGS,
) -> Sweep:
    inventory = take_inventory(api, listings)
    decisions = decide(inventory.found, now, live_clusters=live_clusters, orphan_grace=orphan_grace)
    return Sweep(inventory, decisions, deletion_plan(decisions))


def remove(
    api: OpsApi,
    plan: Sequence[Found],
    *,
    on_result: Callable[[Found, str | None], None] = lambda item, error: None,
    instance_wait: float = INSTANCE_WAIT_SECONDS,
) -> Removal:
    """Delete ``plan`` (already in order); ``on_result(item, error)`` is told of each outcome as it happens."""
    outcome = Removal()
    for kind in dict.fromkeys(item.kind for item in plan):
        items = [item for item in plan if item.kind == kind]
        if kind in PREPARE:
            try:
                PREPARE[kind](api, items)
            except DaskfleetError as error:
                outcome.failures.append((f"{kind} (preparing)", str(error)))
        for item in items:
            _remove_one(api, item, outcome, on_result)
        if kind == "instance" or (kind == "autoscaling-group" and not any(i.kind == "instance" for i in plan)):
            _wait_for_termination(api, [i.id for i in plan if i.kind == "instance"], instance_wait, outcome)
    return outcome


def _remove_one(api: OpsApi, item: Found, outcome: Removal, on_result: Callable[[Found, str | None], None]) -> None:
    try:
        REMOVERS[item.kind](api, item)
    except Gone:
        outcome.already_gone.append(item)
        on_result(item, None)
    except DaskfleetError as error:
        outcome.failures.append((f"{item.kind} {item.id} (cluster {item.cluster})", str(error)))
        on_result(item, str(error))
    else:
        outcome.removed.append(item)
        on_result(item, None)


def _wait_for_termination(api: OpsApi, instance_ids: list[str], seconds: float, outcome: Removal) -> None:
    """Poll until every instance is terminated, or give up after ``seconds`` (what follows may then fail, and say so)."""
    waited = 0.0
    pending = list(instance_ids)
    while pending:
        try:
            reservations = api.call("ec2", "DescribeInstances", "instances", InstanceIds=pending)["Reservations"]
        except Gone:
            return
        except DaskfleetError as error:
            outcome.failures.append(("waiting for instances to terminate", str(error)))
            return
        states = {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}
        pending = [ident for ident in pending if states.get(ident, "terminated") != "terminated"]
        if not pending:
            return
        if waited >= seconds:
            outcome.failures.append((
                "waiting for instances to terminate",
                f"{len(pending)} instance(s) still not terminated after {seconds:g} s: {', '.join(pending)}",
            ))
            return
        api.sleep(_POLL_SECONDS)
        waited += _POLL_SECONDS


# --- the command -------------------------------------------------------------------------------------

HEADER = ("TYPE", "ID", "CLUSTER", "EXPIRES", "AGE")


def run_janitor(
    *,
    region: str | None,
    profile: str | None,
    yes: bool,
    orphans: bool,
    live: Sequence[str],
    pulumi_backend: str | None,
    orphan_grace_hours: float,
    out: TextIO,
    api: OpsApi | None = None,
    now: dt.datetime | None = None,
) -> Removal | None:
    """List (and with ``yes`` delete) what is selected; raise one DaskfleetError at the end if anything failed."""
    live_clusters = _live_clusters(orphans, live, pulumi_backend)
    api = api or OpsApi(open_session(region, profile))
    now = now or dt.datetime.now(dt.timezone.utc)
    found = sweep(api, now, live_clusters=live_clusters, orphan_grace=dt.timedelta(hours=orphan_grace_hours))
    failures = [(f"listing {what}", why) for what, why in found.inventory.failures]
    failures += [(f"{u.arn} (cluster {u.cluster})", "carries the cluster tag, but the janitor does not remove its type: "
                  "delete it by hand") for u in found.inventory.unlisted]
    kept = len(found.decisions) - len(found.plan)
    print(f"region {api.region}: {len(found.decisions)} resource(s) tagged {conventions.TAG_CLUSTER}, "
          f"{len(found.plan)} selected, {kept} kept (not expired, or no live-stack check asked for)", file=out)
    if found.plan:
        print(render_table(HEADER, plan_rows(found.plan, now)), file=out)
    outcome = None
    if found.plan and not yes:
        print("dry run: nothing was deleted; run again with --yes to delete the resources listed above", file=out)
    elif found.plan:
        outcome = remove(api, found.plan, on_result=lambda item, error: print(
            f"{'FAILED' if error else 'deleted'} {item.kind} {item.id}", file=out))
        failures += outcome.failures
        print(f"deleted {len(outcome.removed)}, already gone {len(outcome.already_gone)}, "
              f"failed {len(outcome.failures)}", file=out)
    if failures:
        print(f"{len(failures)} failure(s):", file=out)
        for what, why in failures:
            print(f"  {what}: {why}", file=out)
        raise DaskfleetError(f"janitor: {len(failures)} failure(s), listed above", ExitCode.SOURCE_UNAVAILABLE)
    return outcome


def _live_clusters(orphans: bool, live: Sequence[str], backend: str | None) -> frozenset[str] | None:
    if not orphans:
        if live or backend:
            raise DaskfleetError("--live and --pulumi-backend only count with --orphans", ExitCode.CONFIG)
        return None
    if bool(live) == bool(backend):
        raise DaskfleetError("--orphans: name the live clusters with --live, or a Pulumi backend with --pulumi-backend "
                             "(exactly one of them)", ExitCode.CONFIG)
    if live:
        for cluster in live:
            if not re.fullmatch(conventions.CLUSTER_NAME_PATTERN, cluster):
                raise DaskfleetError(f"--live: {cluster!r} is not a cluster name ({conventions.CLUSTER_NAME_PATTERN})",
                                     ExitCode.CONFIG)
        return frozenset(live)
    return live_clusters_from_backend(backend)
