"""Nodes that stopped for good, in the cluster's log group: written by the failing agent, read by the scaler and status.

A node that stops on a configuration-class exit code (or gives up) writes one JSON line to the
stream ``failures/<instance id>`` before it marks its instance unhealthy. Readers map each
instance to the launch template version it was started from (the instance's
``aws:ec2launchtemplate:*`` tags), so repeated failures of one version can be seen and acted on:
the worker group's scaler holds launches, and a scheduler that keeps failing stands its cluster
down (``repeated_failures``) instead of being replaced in a loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import conventions
from ..errors import ExitCode
from ..node.supervision import Outcome
from .calls import INSTANCE_ROLE, Caller, Deadline, call_aws

TEMPLATE_ID_TAG = "aws:ec2launchtemplate:id"
TEMPLATE_VERSION_TAG = "aws:ec2launchtemplate:version"


@dataclass(frozen=True)
class NodeFailure:
    """One stop for good, as the node reported it."""

    instance: str
    role: str
    code: int
    line: str
    #: Epoch seconds.
    at: float


def template_version(template_id: str, version: str | int) -> str:
    """How a launch template version is named in messages, the audit log and ``daskfleet status``."""
    return f"launch template {template_id} version {version}"


def repeated_failures(
    failures: Iterable[NodeFailure], versions: Mapping[str, str], this: NodeFailure, *, window_s: float,
) -> list[NodeFailure]:
    """``this`` failure and the earlier ones of its role from the same launch template version, within the window.

    ``this`` counts even when the log group does not return it yet (its reads are eventually
    consistent); an instance whose version is unknown is counted only when ``this``'s is unknown too.
    """
    version = versions.get(this.instance)
    same = [failure for failure in failures
            if failure.instance != this.instance and failure.role == this.role and failure.at >= this.at - window_s
            and versions.get(failure.instance) == version]
    return [*same, this]


def report_failure(logs: Any, cluster: str, instance: str, role: str, outcome: Outcome, deadline: Deadline) -> None:
    """Write the node's failure line to ``failures/<instance>`` in the cluster's log group."""
    group = conventions.log_group_name(cluster)
    stream = f"{conventions.FAILURE_STREAM_PREFIX}{instance}"
    call_aws(logs, "CreateLogStream", f"log stream {stream}", INSTANCE_ROLE, missing=ExitCode.SOURCE_UNAVAILABLE,
             deadline=deadline, fine=frozenset({"ResourceAlreadyExistsException"}), logGroupName=group,
             logStreamName=stream)
    message = json.dumps({"event": "node-stopped", "instance": instance, "role": role, "code": int(outcome.code),
                          "line": outcome.line}, sort_keys=True)
    call_aws(logs, "PutLogEvents", f"log stream {stream}", INSTANCE_ROLE, missing=ExitCode.SOURCE_UNAVAILABLE,
             deadline=deadline, logGroupName=group, logStreamName=stream,
             logEvents=[{"timestamp": int(time.time() * 1000), "message": message}])


def read_failures(logs: Any, cluster: str, since: float, caller: Caller, role: str | None = None) -> list[NodeFailure]:
    """Every node (of ``role``, if given) that stopped for good since ``since`` (epoch seconds), oldest first."""
    params: dict[str, Any] = {
        "logGroupName": conventions.log_group_name(cluster), "logStreamNamePrefix": conventions.FAILURE_STREAM_PREFIX,
        "startTime": int(since * 1000),
    }
    failures = []
    while True:
        page = call_aws(logs, "FilterLogEvents", f"log group {params['logGroupName']}", caller,
                        missing=ExitCode.SOURCE_UNAVAILABLE, **params)
        for event in page.get("events", []):
            try:
                doc = json.loads(event["message"])
                failure = NodeFailure(str(doc["instance"]), str(doc["role"]), int(doc["code"]), str(doc["line"]),
                                      event["timestamp"] / 1000)
            except (ValueError, KeyError, TypeError):
                continue  # not a failure line: nothing to count
            if role is None or failure.role == role:
                failures.append(failure)
        if not page.get("nextToken"):
            return sorted(failures, key=lambda failure: failure.at)
        params["nextToken"] = page["nextToken"]


def launch_versions(ec2: Any, instances: Iterable[str], caller: Caller) -> dict[str, str]:
    """Each instance's launch template version (from its tags; kept after it terminated, for a while)."""
    ids = sorted(set(instances))
    if not ids:
        return {}
    response = call_aws(ec2, "DescribeInstances", "", caller, missing=ExitCode.SOURCE_UNAVAILABLE,
                        Filters=[{"Name": "instance-id", "Values": ids}])
    versions = {}
    for reservation in response.get("Reservations", []):
        for instance in reservation.get("Instances", []):
            tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
            if TEMPLATE_ID_TAG in tags and TEMPLATE_VERSION_TAG in tags:
                versions[instance["InstanceId"]] = template_version(tags[TEMPLATE_ID_TAG], tags[TEMPLATE_VERSION_TAG])
    return versions
