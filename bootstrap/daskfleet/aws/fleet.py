"""The AWS clusters a user can reach, found with their own login: those the program made them a member of.

Each person's membership record (a secret holding the cluster's CA certificate and their role, no key; a
stack from before the certificate vendor kept their certificate there) carries the ``daskfleet:user`` tag
(conventions.TAG_USER); one
``ListSecrets`` filtered by it (metadata only, never a value; the member policy allows it) names
the user's clusters, and one ``DescribeAutoScalingGroups`` per 50 of them tells each cluster's
state. Nothing of a cluster the user holds no certificate for is read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .. import conventions
from ..client.clusters import ClusterState, aws_state
from ..errors import ExitCode
from .calls import BOTO_CONFIG, call_aws
from .user import YOUR_IDENTITY, caller_arn, user_from_arn, user_session

#: DescribeAutoScalingGroups names at most this many groups per call (two per cluster).
GROUPS_PER_CALL = 100
_CLIENT_SECRET = re.compile(r"^" + re.escape(conventions.NAME_PREFIX) + r"/(?P<cluster>[a-z0-9-]+)/clients/(?P<user>[^/]+)$")


def certificate_clusters(secrets: Any, user: str) -> list[str]:
    """The clusters in which ``user`` holds a certificate: their secrets' names, found by the user tag."""
    params: dict[str, Any] = {"Filters": [{"Key": "tag-key", "Values": [conventions.TAG_USER]},
                                          {"Key": "tag-value", "Values": [user]}]}
    clusters = set()
    while True:
        page = call_aws(secrets, "ListSecrets", "", YOUR_IDENTITY, missing=ExitCode.CONFIG, **params)
        for secret in page.get("SecretList", []):
            match = _CLIENT_SECRET.match(secret.get("Name", ""))
            tags = {tag["Key"]: tag["Value"] for tag in secret.get("Tags", [])}
            if match and match["user"] == user and tags.get(conventions.TAG_USER) == user:
                clusters.add(match["cluster"])
        if not page.get("NextToken"):
            return sorted(clusters)
        params["NextToken"] = page["NextToken"]


def group_states(autoscaling: Any, clusters: Sequence[str]) -> dict[str, tuple[dict | None, dict | None]]:
    """Cluster -> (scheduler group, worker group) as described (None where the group does not exist)."""
    names = [conventions.node_group_name(c, role) for c in clusters for role in conventions.NODE_ROLES]
    groups: dict[str, dict] = {}
    for start in range(0, len(names), GROUPS_PER_CALL):
        params: dict[str, Any] = {"AutoScalingGroupNames": names[start:start + GROUPS_PER_CALL]}
        while True:
            page = call_aws(autoscaling, "DescribeAutoScalingGroups", "auto scaling groups", YOUR_IDENTITY,
                            missing=ExitCode.CONFIG, **params)
            groups.update({group["AutoScalingGroupName"]: group for group in page.get("AutoScalingGroups", [])})
            if not page.get("NextToken"):
                break
            params["NextToken"] = page["NextToken"]
    return {c: tuple(groups.get(conventions.node_group_name(c, role)) for role in conventions.NODE_ROLES)
            for c in clusters}


def aws_clusters(*, region: str | None = None, profile: str | None = None, user: str | None = None) -> list[ClusterState]:
    """The AWS clusters the caller (``user``, default derived from their login) holds a certificate for, with states."""
    session = user_session(region, profile)
    user = user or user_from_arn(caller_arn(session))
    clusters = certificate_clusters(session.client("secretsmanager", config=BOTO_CONFIG), user)
    if not clusters:
        return []
    states = group_states(session.client("autoscaling", config=BOTO_CONFIG), clusters)
    where = f"aws {session.region_name}"
    found = []
    for cluster in clusters:
        state, workers, detail = aws_state(*states[cluster])
        found.append(ClusterState(cluster, where, state, workers, detail))
    return found

