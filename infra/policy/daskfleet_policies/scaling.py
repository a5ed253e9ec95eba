"""Who may change an auto scaling group: named groups only, a cluster's workers by its scheduler's role alone.

A cluster's scheduler sizes its own worker group and may set its own group's desired capacity
to 0 when idle; users may set that capacity to wake it. Each node's role may mark an instance of
its own group unhealthy (a node that cannot start does so for itself). A grant of group-changing
actions on ``*`` (or on every group) would let one cluster's role resize or terminate another's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from . import tokens
from .properties import allow_statements, as_list, is_unknown
from .storage import StackResource

#: Auto scaling actions that change a group or its instances (lower-case).
GROUP_CHANGING_ACTIONS = frozenset(
    {
        "setdesiredcapacity", "terminateinstanceinautoscalinggroup", "updateautoscalinggroup",
        "setinstanceprotection", "setinstancehealth", "attachinstances", "detachinstances", "enterstandby",
        "exitstandby", "putscalingpolicy", "executepolicy", "putscheduledupdategroupaction",
        "batchputscheduledupdategroupaction", "deleteautoscalinggroup", "suspendprocesses", "resumeprocesses",
        "startinstancerefresh", "putlifecyclehook", "deletelifecyclehook", "putwarmpool", "deletewarmpool",
        "createorupdatetags", "deletetags",
    }
)
#: What may be granted on a cluster's scheduler group: its desired capacity (0 when idle, 1 to wake).
SCHEDULER_GROUP_ACTIONS = frozenset({"setdesiredcapacity"})
#: What a node's own role may do on its own group: mark an instance unhealthy (its own, when it cannot start).
NODE_SELF_ACTIONS = frozenset({"setinstancehealth"})
_GROUP_ARN = re.compile(r"^arn:[a-z-]+:autoscaling:[^:]*:[^:]*:autoScalingGroup:[^:]*:autoScalingGroupName/(?P<name>.+)$")
_NODE_GROUP = re.compile(r"^daskfleet-(?P<cluster>[a-z0-9-]+)-(?P<role>scheduler|worker)$")


def changing_actions(action: str) -> set[str]:
    """The group-changing actions an action pattern (``autoscaling:Set*``, ``*``) can match."""
    pattern = action.strip().lower()
    service, _, name = pattern.partition(":") if pattern != "*" else ("*", "", "*")
    if not fnmatchcase("autoscaling", service):
        return set()
    return {known for known in GROUP_CHANGING_ACTIONS if fnmatchcase(known, name or "*")}


def _granted(statement: Mapping[str, Any]) -> set[str]:
    if "NotAction" in statement:
        return set(GROUP_CHANGING_ACTIONS)
    return {known for action in as_list(statement.get("Action")) if isinstance(action, str)
            for known in changing_actions(action)}


def unnamed_group_changes(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Group-changing actions granted on anything but named auto scaling groups."""
    if resource_type not in tokens.IAM_POLICY_DOCUMENT_TYPES:
        return []
    problems = []
    for label, statement in allow_statements(props.get("policy")):
        granted = _granted(statement)
        if not granted:
            continue
        if "NotResource" in statement:
            problems.append(f"{label} allows {', '.join(sorted(granted))} on every resource but those under NotResource")
            continue
        unnamed = [r for r in as_list(statement.get("Resource")) if isinstance(r, str) and not _names_one_group(r)]
        if unnamed:
            problems.append(
                f"{label} allows {', '.join(sorted(granted))} on {', '.join(map(repr, unnamed))}: name the "
                "cluster's own auto scaling group by ARN (autoScalingGroupName/<group>, no wildcard)"
            )
    return problems


def _names_one_group(resource: str) -> bool:
    match = _GROUP_ARN.match(resource.strip())
    return match is not None and not any(c in match["name"] for c in "*?")


def foreign_group_changes(resources: Iterable[StackResource]) -> list[tuple[str, str]]:
    """A worker group changed by any policy but its cluster's scheduler role's; a scheduler group beyond its capacity."""
    reported = []
    for resource in resources:
        if resource.resource_type not in tokens.IAM_POLICY_DOCUMENT_TYPES:
            continue
        holder = resource.props.get("role") if resource.resource_type == tokens.IAM_ROLE_POLICY else None
        for label, statement in allow_statements(resource.props.get("policy")):
            granted = _granted(statement)
            for group in _node_groups(statement):
                cluster, role = group["cluster"], group["role"]
                own = set(NODE_SELF_ACTIONS) if holder == f"daskfleet-{cluster}-{role}" else set()
                foreign = granted - own
                if role == "worker" and foreign and not is_unknown(holder) and holder != f"daskfleet-{cluster}-scheduler":
                    reported.append((resource.urn, (
                        f"{label} allows {', '.join(sorted(foreign))} on worker group {group.string}: only the role "
                        f"daskfleet-{cluster}-scheduler may change its cluster's workers (its worker role may only "
                        "mark an instance unhealthy)"
                    )))
                beyond = granted - SCHEDULER_GROUP_ACTIONS - own
                if role == "scheduler" and beyond:
                    reported.append((resource.urn, (
                        f"{label} allows {', '.join(sorted(beyond))} on scheduler group {group.string}: only its "
                        "desired capacity may be set (0 when idle, 1 to wake), and its instances marked unhealthy by "
                        "its own role"
                    )))
    return reported


def _node_groups(statement: Mapping[str, Any]) -> list[re.Match[str]]:
    groups = []
    for resource in as_list(statement.get("Resource")):
        match = _GROUP_ARN.match(resource.strip()) if isinstance(resource, str) else None
        node = _NODE_GROUP.match(match["name"]) if match else None
        if node is not None:
            groups.append(node)
    return groups
