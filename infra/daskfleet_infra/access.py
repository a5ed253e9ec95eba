"""How people reach a cluster that exposes nothing publicly: addresses and SSM port-forwarding commands."""

from __future__ import annotations

import json
import shlex

from daskfleet import conventions

PORT_FORWARD_DOCUMENT = "AWS-StartPortForwardingSessionToRemoteHost"
#: Of the cluster's running schedulers, the one launched last. While the group replaces its
#: scheduler the old and the new instance may both run for a while, in either order in the
#: answer; the new one is the one the DNS name follows and the one that stays.
NEWEST_INSTANCE_QUERY = "sort_by(Reservations[].Instances[], &LaunchTime)[-1].InstanceId"


def dashboard_url(host: str) -> str:
    return f"https://{host}:{conventions.DASHBOARD_PORT}/status"


def scheduler_instance_query(cluster: str, region: str) -> list[str]:
    """The AWS CLI call printing the newest running scheduler's instance id (the session's jump host)."""
    return [
        "aws", "ec2", "describe-instances", "--region", region,
        "--filters",
        f"Name=tag:{conventions.TAG_CLUSTER},Values={cluster}",
        f"Name=tag:{conventions.TAG_ROLE},Values=scheduler",
        "Name=instance-state-name,Values=running",
        "--query", NEWEST_INSTANCE_QUERY,
        "--output", "text",
    ]


def port_forward_command(cluster: str, region: str, host: str, port: int) -> str:
    """A shell command forwarding localhost:port to host:port inside the VPC, through the scheduler instance."""
    parameters = json.dumps({"host": [host], "portNumber": [str(port)], "localPortNumber": [str(port)]}, separators=(",", ":"))
    target = f'"$({shlex.join(scheduler_instance_query(cluster, region))})"'
    return " ".join([
        "aws", "ssm", "start-session", "--region", shlex.quote(region),
        "--target", target,
        "--document-name", PORT_FORWARD_DOCUMENT,
        "--parameters", shlex.quote(parameters),
    ])
