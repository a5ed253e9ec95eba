"""Gather ``daskfleet status``: the groups, the worker spec, Cost Explorer, the budget from AWS; the rest from the scheduler.

The scheduler is asked over mutual TLS with the operator's own client certificate (fetched like
``daskfleet.connect`` does), without registering as a client: ``identity`` lists the workers
with their fingerprints, and ``conventions.SCALING_STATE_HANDLER`` the scaler's idle state
(a scheduler without that handler answers None: "not available").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from collections.abc import Callable
from typing import Any

from distributed.comm import connect

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..trust.gatekeeper import FINGERPRINT_KEY
from ..trust.peers import Peer
from ..trust.tls import client_security
from .awsapi import OPERATOR, Gone, OpsApi, open_session
from .status import ClusterView, FailureGroup, Part, count_group, group_failures, unavailable, workers_seen

#: How far back ``daskfleet status`` looks for nodes that could not start.
FAILURE_WINDOW_S = 24 * 3600.0


def observe_cluster(
    cluster: str,
    *,
    region: str | None,
    profile: str | None,
    address: str | None,
    user: str | None,
    timeout: float,
    api: OpsApi | None = None,
    today: dt.date | None = None,
) -> ClusterView:
    """Every part of the view; only a bad cluster name or no usable AWS login is an error."""
    if not re.fullmatch(conventions.CLUSTER_NAME_PATTERN, cluster):
        raise DaskfleetError(f"CLUSTER: {cluster!r} does not match {conventions.CLUSTER_NAME_PATTERN}", ExitCode.CONFIG)
    api = api or OpsApi(open_session(region, profile))
    api.call("sts", "GetCallerIdentity")  # no login is the one error: every part below would say so
    view = ClusterView(cluster, api.region)
    groups = {role: _part(lambda role=role: _group(api, cluster, role)) for role in conventions.NODE_ROLES}
    view.groups = {role: Part(part.value[0]) if part.available else part for role, part in groups.items()}
    view.expires = _expiry(groups["scheduler"])
    view.expected_fingerprint = _part(lambda: _expected_fingerprint(api, cluster))
    view.spend = _part(lambda: _spend(api, cluster, today or dt.datetime.now(dt.timezone.utc).date()))
    view.budget = _part(lambda: _budget(api, cluster))
    view.boot_failures = _part(lambda: _boot_failures(api, cluster, time.time() - FAILURE_WINDOW_S))
    view.deny_list = _part(lambda: _deny_list(api, cluster))
    scheduler = groups["scheduler"]
    if scheduler.available and scheduler.value[0].desired == 0 and address is None:
        asleep = unavailable("the scheduler is asleep (its group wants 0 instances)")
        view.scheduler = view.workers = view.idle = asleep
        return view
    _ask_scheduler(view, api, cluster, address, user, timeout, profile)
    return view


def _part(read: Callable[[], Any]) -> Part:
    try:
        return Part(read())
    except (DaskfleetError, Gone) as error:
        return unavailable(str(error) or "not found")


def _group(api: OpsApi, cluster: str, role: str) -> tuple[Any, dict[str, str]]:
    name = conventions.node_group_name(cluster, role)
    groups = api.call("autoscaling", "DescribeAutoScalingGroups", name, AutoScalingGroupNames=[name])["AutoScalingGroups"]
    if not groups:
        raise DaskfleetError(f"no auto scaling group {name} in {api.region}", ExitCode.CONFIG)
    group = groups[0]
    tags = {tag["Key"]: tag["Value"] for tag in group.get("Tags", [])}
    return count_group(group["DesiredCapacity"], [i["LifecycleState"] for i in group.get("Instances", [])]), tags


def _expiry(scheduler: Part) -> Part:
    if not scheduler.available:
        return unavailable(scheduler.reason)
    expires = scheduler.value[1].get(conventions.TAG_EXPIRES)
    return Part(expires) if expires else Part("never (not an ephemeral stack)")


def _deny_list(api: OpsApi, cluster: str) -> list[dict[str, Any]]:
    from ..trust.denylist import DenyList  # noqa: PLC0415
    from .status import deny_list_rows  # noqa: PLC0415

    name = conventions.deny_list_parameter_name(cluster)
    try:
        value = api.call("ssm", "GetParameter", f"SSM parameter {name}", Name=name)["Parameter"]["Value"]
    except Gone:
        return []
    return deny_list_rows(DenyList.from_json(value, f"SSM parameter {name}"))


def _expected_fingerprint(api: OpsApi, cluster: str) -> str:
    name = conventions.spec_parameter_name(cluster, "worker")
    value = api.call("ssm", "GetParameter", f"SSM parameter {name}", Name=name)["Parameter"]["Value"]
    try:
        fingerprint = json.loads(value).get("expected_fingerprint")
    except (json.JSONDecodeError, AttributeError):
        fingerprint = None
    if not fingerprint:
        raise DaskfleetError(f"SSM parameter {name} names no expected_fingerprint", ExitCode.SPEC_INVALID)
    return fingerprint


def _spend(api: OpsApi, cluster: str, today: dt.date) -> dict[str, Any]:
    """Month to date under the cluster's cost-allocation tag (Cost Explorer's end date is exclusive)."""
    start = today.replace(day=1)
    answer = api.call(
        "ce", "GetCostAndUsage", f"cost of cluster {cluster}",
        TimePeriod={"Start": start.isoformat(), "End": (today + dt.timedelta(days=1)).isoformat()},
        Granularity="MONTHLY", Metrics=["UnblendedCost"],
        Filter={"Tags": {"Key": conventions.TAG_CLUSTER, "Values": [cluster]}},
    )
    amounts = [period["Total"]["UnblendedCost"] for period in answer.get("ResultsByTime", [])
               if "UnblendedCost" in period.get("Total", {})]
    if not amounts:
        raise DaskfleetError(f"Cost Explorer has no data for {conventions.TAG_CLUSTER}={cluster} (the tag must be an "
                             "activated cost-allocation tag; spend appears about a day later)", ExitCode.SOURCE_UNAVAILABLE)
    return {"amount": sum(float(a["Amount"]) for a in amounts), "unit": amounts[0]["Unit"], "since": start.isoformat()}


def _boot_failures(api: OpsApi, cluster: str, since: float) -> list[FailureGroup]:
    """Nodes that stopped for good (their own report in the log group), by role and launch template version."""
    from ..aws.nodefailures import launch_versions, read_failures  # noqa: PLC0415

    failures = read_failures(api.client("logs"), cluster, since, OPERATOR)
    versions = launch_versions(api.client("ec2"), [failure.instance for failure in failures], OPERATOR)
    return group_failures(failures, versions)


def _budget(api: OpsApi, cluster: str) -> dict[str, Any]:
    name = conventions.budget_name(cluster)
    account = api.call("sts", "GetCallerIdentity")["Account"]
    budget = api.call("budgets", "DescribeBudget", f"budget {name}", AccountId=account, BudgetName=name)["Budget"]
    actual = (budget.get("CalculatedSpend") or {}).get("ActualSpend")
    limit = budget["BudgetLimit"]
    return {"amount": float(limit["Amount"]), "unit": limit["Unit"],
            "actual": {"amount": float(actual["Amount"]), "unit": actual["Unit"]} if actual else None}


def _ask_scheduler(
    view: ClusterView, api: OpsApi, cluster: str, address: str | None, user: str | None, timeout: float, profile: str | None,
) -> None:
    from ..aws.user import discover_scheduler_address  # noqa: PLC0415
    from ..aws.login import cluster_issuer  # noqa: PLC0415
    from ..client.connect import stack_issued  # noqa: PLC0415
    from ..client.login import CredentialStore, credentials_dir, fresh_material  # noqa: PLC0415

    try:
        target = discover_scheduler_address(cluster, override=address, region=api.region, profile=profile)
        # Your certificate from the cluster's vendor (logging in when needed), or a stack from before vendors' own.
        issue = cluster_issuer(cluster, region=api.region, profile=profile) if user is None else None
        material = (fresh_material(CredentialStore(credentials_dir(cluster)), issue) if issue is not None
                    else stack_issued(cluster, user, profile, api.region))
        security = client_security(material, cluster)
        identity, scaling = asyncio.run(asyncio.wait_for(probe_scheduler(target, security, cluster), timeout))
    except DaskfleetError as error:
        view.scheduler = view.workers = view.idle = unavailable(str(error))
        return
    except (OSError, asyncio.TimeoutError) as error:
        reason = f"the scheduler at {address or 'its address'} does not answer over TLS within {timeout:g} s ({type(error).__name__})"
        view.scheduler = view.workers = view.idle = unavailable(reason)
        return
    view.scheduler = Part(f"answers over TLS at {target} as the scheduler of {cluster}")
    expected = view.expected_fingerprint.value if view.expected_fingerprint.available else None
    view.workers = Part(workers_seen(identity.get("workers", {}), FINGERPRINT_KEY, expected))
    view.idle = Part(scaling) if isinstance(scaling, dict) else unavailable(
        f"the scheduler serves no {conventions.SCALING_STATE_HANDLER} (no scaler deployed on it yet)")


async def probe_scheduler(address: str, security: Any, cluster: str) -> tuple[dict, Any]:
    """(identity, scaling state) from the scheduler, as a client certificate that does not register as a client."""
    comm = await connect(address, **security.get_connection_args("client"))
    try:
        peer = Peer.from_peercert(comm.extra_info.get("peercert"))
        if (peer.cluster, peer.role) != (cluster, "scheduler"):
            raise DaskfleetError(f"the server at {address} presented a {peer.role or 'role-less'} certificate for cluster "
                                 f"{peer.cluster!r}, not the scheduler of {cluster!r}", ExitCode.CONFIG)
        await comm.write({"op": "identity", "reply": True})
        identity = await comm.read()
        await comm.write({"op": conventions.SCALING_STATE_HANDLER, "reply": True})
        scaling = await comm.read()
        return identity, scaling
    finally:
        await comm.close()
