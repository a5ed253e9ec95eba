"""Point the scheduler's private DNS name at the instance its auto scaling group just launched.

An AWS Lambda function (python3.12; boto3 comes with the runtime) invoked by EventBridge with
the scheduler group's "EC2 Instance Launch Successful" event. It reads the instance's private
IPv4 address (ec2:DescribeInstances) and UPSERTs the A record in the cluster's private zone.
The node agent cannot do this itself: without NAT an instance reaches no Route 53 API.

Idempotent: the same event twice writes the same record. When launches race (a replacement
launched while the old scheduler terminates), the last launch handled wins; an event whose
instance is already going away is skipped, so a late retry cannot point the name at it.

This module is packaged on its own, so it imports nothing from daskfleet; the Pulumi
component imports its names (environment variables, TTL, event pattern) from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import ClientError

#: Environment variables the function is configured with.
ZONE_ID_ENV = "DASKFLEET_ZONE_ID"
RECORD_NAME_ENV = "DASKFLEET_RECORD_NAME"
GROUP_NAME_ENV = "DASKFLEET_GROUP_NAME"
RECORD_TTL_SECONDS = 15
EVENT_SOURCE = "aws.autoscaling"
LAUNCH_SUCCESSFUL = "EC2 Instance Launch Successful"
#: Instance states after which the launch is history: the name must not follow it.
GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)


class DnsUpdateError(Exception):
    """The event cannot be acted on; the message says why. The invocation fails, so Lambda retries it."""


@dataclass(frozen=True)
class Target:
    """Which record to keep, and for which auto scaling group."""

    zone_id: str
    record_name: str
    group_name: str

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Target:
        missing = [name for name in (ZONE_ID_ENV, RECORD_NAME_ENV, GROUP_NAME_ENV) if not environ.get(name)]
        if missing:
            raise DnsUpdateError(f"the function's environment lacks {', '.join(missing)}")
        return cls(environ[ZONE_ID_ENV], environ[RECORD_NAME_ENV], environ[GROUP_NAME_ENV])


def launched_instance(event: Mapping[str, Any], group_name: str) -> str:
    """The instance id of a launch-successful event of ``group_name``; any other event is refused."""
    detail = event.get("detail") if isinstance(event.get("detail"), Mapping) else {}
    kind = (event.get("source"), event.get("detail-type"))
    if kind != (EVENT_SOURCE, LAUNCH_SUCCESSFUL):
        raise DnsUpdateError(f"expected a {EVENT_SOURCE} {LAUNCH_SUCCESSFUL!r} event, got {kind[0]!r} {kind[1]!r}")
    if detail.get("AutoScalingGroupName") != group_name:
        raise DnsUpdateError(
            f"the event is for auto scaling group {detail.get('AutoScalingGroupName')!r}, not {group_name!r}"
        )
    instance_id = detail.get("EC2InstanceId")
    if not isinstance(instance_id, str) or not instance_id.startswith("i-"):
        raise DnsUpdateError(f"the event names no instance (detail.EC2InstanceId is {instance_id!r})")
    return instance_id


def private_address(instance_id: str, description: Mapping[str, Any]) -> str | None:
    """The instance's private IPv4 address from a DescribeInstances response; None when it is going away."""
    instances = [
        instance
        for reservation in description.get("Reservations", [])
        for instance in reservation.get("Instances", [])
        if instance.get("InstanceId") == instance_id
    ]
    if not instances:
        raise DnsUpdateError(f"instance {instance_id} not found")
    (instance,) = instances
    state = instance.get("State", {}).get("Name")
    if state in GONE_STATES:
        return None
    address = instance.get("PrivateIpAddress")
    if not address:
        raise DnsUpdateError(f"instance {instance_id} ({state}) has no private IPv4 address")
    return address


def describe(ec2: Any, instance_id: str) -> Mapping[str, Any]:
    try:
        return ec2.describe_instances(InstanceIds=[instance_id])
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
            raise DnsUpdateError(f"instance {instance_id} not found ({code})") from None
        raise


def upsert_record(route53: Any, target: Target, address: str, instance_id: str) -> None:
    route53.change_resource_record_sets(
        HostedZoneId=target.zone_id,
        ChangeBatch={
            "Comment": f"daskfleet scheduler {instance_id}",
            "Changes": [{
                "Action": "UPSERT",
                "ResourceRecordSet": {
                    "Name": target.record_name,
                    "Type": "A",
                    "TTL": RECORD_TTL_SECONDS,
                    "ResourceRecords": [{"Value": address}],
                },
            }],
        },
    )


def update_record(event: Mapping[str, Any], target: Target, *, ec2: Any, route53: Any) -> dict[str, str]:
    """Act on one event: the record now names the launched instance, or the event was stale."""
    instance_id = launched_instance(event, target.group_name)
    address = private_address(instance_id, describe(ec2, instance_id))
    if address is None:
        log.info("instance %s is already going away; %s left as it is", instance_id, target.record_name)
        return {"instance": instance_id, "skipped": "instance is going away"}
    upsert_record(route53, target, address, instance_id)
    log.info("%s A %s (instance %s)", target.record_name, address, instance_id)
    return {"instance": instance_id, "record": target.record_name, "address": address}


def handler(event: Mapping[str, Any], context: Any) -> dict[str, str]:
    """The Lambda entry point."""
    target = Target.from_environment(os.environ)
    return update_record(event, target, ec2=boto3.client("ec2"), route53=boto3.client("route53"))
