"""Usage records in the cluster's CloudWatch log group: the scheduler writes them, the scheduler (at boot)
and users (`daskfleet usage CLUSTER --records`) read them back."""

from __future__ import annotations

from typing import Any

from .. import conventions
from ..errors import ExitCode
from ..usage.records import STREAM_PREFIX
from .calls import Caller, call_aws

#: Pages read at most (10,000 events each): a month of 5-minute records is 9,000 lines per scheduler.
MAX_PAGES = 200


def read_usage_lines(client: Any, cluster: str, since: float, caller: Caller) -> list[str]:
    """Every usage record line in ``cluster``'s log group logged since ``since`` (epoch seconds)."""
    group = conventions.log_group_name(cluster)
    params: dict[str, Any] = {"logGroupName": group, "logStreamNamePrefix": STREAM_PREFIX, "startTime": int(since * 1000)}
    lines: list[str] = []
    for _ in range(MAX_PAGES):
        response = call_aws(
            client, "FilterLogEvents", f"log group {group}", caller, missing=ExitCode.SOURCE_UNAVAILABLE,
            missing_hint="the cluster's log group holds its usage records", **params,
        )
        lines += [event["message"] for event in response.get("events", ())]
        token = response.get("nextToken")
        if not token:
            break
        params["nextToken"] = token
    return lines


def recorded_usage_lines(cluster: str, since: float, *, profile: str | None = None, region: str | None = None) -> list[str]:
    """The records, read with the user's own AWS login (needs logs:FilterLogEvents on the cluster's log group)."""
    from .user import YOUR_IDENTITY, user_session  # noqa: PLC0415
    from .calls import BOTO_CONFIG  # noqa: PLC0415

    return read_usage_lines(user_session(region, profile).client("logs", config=BOTO_CONFIG), cluster, since, YOUR_IDENTITY)
