"""SchedulerDns: a launch of the scheduler group points the scheduler's name at the new instance.

The handler runs against a real moto server; the declarations (rule, target, permission,
function, role, policy) are read from the program evaluated under Pulumi's mocks.
"""

from __future__ import annotations

import ast
import json
import uuid
from pathlib import Path

import boto3
import pytest

from infra.helpers import allowing, allows, statements
from infra.program import INFRA_DIR

from daskfleet import conventions
from daskfleet_infra.dns_updater import handler
from daskfleet_infra.dns_updater.handler import DnsUpdateError

COMPONENT = "daskfleet:aws:SchedulerDns"
REGION = "eu-west-1"
ACCOUNT = "123456789012"
CLUSTER = "analytics"
RECORD = conventions.scheduler_dns_name(CLUSTER, "daskfleet.internal")
GROUP = conventions.node_group_name(CLUSTER, "scheduler")
#: Where the function's code is, relative to the project directory Pulumi runs the program in.
HANDLER_IN_PROJECT = "daskfleet_infra/dns_updater/handler.py"
#: moto launches from any image id; listing its own catalogue would take seconds.
IMAGE = "ami-0a1b2c3d4e5f60718"


def launch_event(instance_id: str, group: str = GROUP, detail_type: str = "EC2 Instance Launch Successful") -> dict:
    """An EventBridge event as Amazon EC2 Auto Scaling sends it (EC2 Auto Scaling event reference)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.autoscaling",
        "account": ACCOUNT,
        "time": "2026-11-26T12:00:00Z",
        "region": REGION,
        "resources": [
            f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:{uuid.uuid4()}:autoScalingGroupName/{group}",
            f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}",
        ],
        "detail": {
            "StatusCode": "InProgress",
            "Description": f"Launching a new EC2 instance: {instance_id}",
            "AutoScalingGroupName": group,
            "ActivityId": str(uuid.uuid4()),
            "Details": {"Availability Zone": f"{REGION}a", "Subnet ID": "subnet-0123456789abcdef0"},
            "RequestId": str(uuid.uuid4()),
            "StatusMessage": "",
            "EndTime": "2026-11-26T12:00:00Z",
            "EC2InstanceId": instance_id,
            "StartTime": "2026-11-26T11:59:30Z",
            "Cause": "An instance was started in response to a difference between desired and actual capacity.",
            "Origin": "EC2",
            "Destination": "AutoScalingGroup",
        },
    }


# --- the handler, against a moto server ---------------------------------------------------------


class Account:
    """A fresh moto account holding the cluster's VPC, private zone and a subnet to launch into."""

    def __init__(self, endpoint: str):
        self.ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
        self.route53 = boto3.client("route53", region_name=REGION, endpoint_url=endpoint)
        vpc = self.ec2.create_vpc(CidrBlock="10.64.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.64.16.0/20")["Subnet"]["SubnetId"]
        zone = self.route53.create_hosted_zone(
            Name=RECORD.split(".", 1)[1], CallerReference=str(uuid.uuid4()),
            VPC={"VPCRegion": REGION, "VPCId": vpc}, HostedZoneConfig={"PrivateZone": True},
        )
        self.zone_id = zone["HostedZone"]["Id"].rsplit("/", 1)[-1]  # as aws.route53.Zone's zone_id

    def launch(self) -> tuple[str, str]:
        (instance,) = self.ec2.run_instances(ImageId=IMAGE, MinCount=1, MaxCount=1, SubnetId=self.subnet)["Instances"]
        return instance["InstanceId"], instance["PrivateIpAddress"]

    def a_records(self) -> list[dict]:
        records = self.route53.list_resource_record_sets(HostedZoneId=self.zone_id)["ResourceRecordSets"]
        return [r for r in records if r["Type"] == "A" and r["Name"].rstrip(".") == RECORD]


@pytest.fixture
def account(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Account:
    """What the function sees in Lambda: its environment, credentials and region, here pointed at moto."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # the handler's clients read this environment afresh
    created = Account(moto_endpoint)
    monkeypatch.setenv(handler.ZONE_ID_ENV, created.zone_id)
    monkeypatch.setenv(handler.RECORD_NAME_ENV, RECORD)
    monkeypatch.setenv(handler.GROUP_NAME_ENV, GROUP)
    return created


def test_a_launch_points_the_schedulers_name_at_the_instance(account):
    instance, address = account.launch()
    result = handler.handler(launch_event(instance), None)
    assert result == {"instance": instance, "record": RECORD, "address": address}
    (record,) = account.a_records()
    assert record["TTL"] == 15 and record["ResourceRecords"] == [{"Value": address}]


def test_the_next_launch_replaces_the_record_and_repeating_an_event_changes_nothing(account):
    first, _ = account.launch()
    handler.handler(launch_event(first), None)
    second, address = account.launch()
    event = launch_event(second)
    handler.handler(event, None)
    handler.handler(event, None)  # EventBridge and Lambda may deliver an event more than once
    (record,) = account.a_records()
    assert record["ResourceRecords"] == [{"Value": address}]


def test_a_late_event_for_an_instance_already_going_away_leaves_the_newer_record(account):
    """Terminate-then-launch: the old instance's event arriving last must not win."""
    old, _ = account.launch()
    new, address = account.launch()
    handler.handler(launch_event(new), None)
    account.ec2.terminate_instances(InstanceIds=[old])
    assert handler.handler(launch_event(old), None) == {"instance": old, "skipped": "instance is going away"}
    (record,) = account.a_records()
    assert record["ResourceRecords"] == [{"Value": address}]


def test_an_unknown_instance_fails_naming_it(account):
    with pytest.raises(DnsUpdateError, match=r"^instance i-0123456789abcdef0 not found \(InvalidInstanceID.NotFound\)$"):
        handler.handler(launch_event("i-0123456789abcdef0"), None)
    assert account.a_records() == []


def test_an_instance_without_a_private_address_fails_naming_it():
    """EC2 answers so for an instance whose network interface is not attached yet: nothing to point at."""
    description = {"Reservations": [{"Instances": [{
        "InstanceId": "i-0abc", "State": {"Code": 0, "Name": "pending"}, "NetworkInterfaces": [],
    }]}]}
    with pytest.raises(DnsUpdateError, match=r"^instance i-0abc \(pending\) has no private IPv4 address$"):
        handler.private_address("i-0abc", description)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (launch_event("i-0abc", group=conventions.node_group_name(CLUSTER, "worker")),
         "the event is for auto scaling group 'daskfleet-analytics-worker', not 'daskfleet-analytics-scheduler'"),
        (launch_event("i-0abc", detail_type="EC2 Instance Terminate Successful"),
         "expected a aws.autoscaling 'EC2 Instance Launch Successful' event, got 'aws.autoscaling' 'EC2 Instance Terminate Successful'"),
        ({**launch_event("i-0abc"), "detail": {"AutoScalingGroupName": GROUP}},
         "the event names no instance (detail.EC2InstanceId is None)"),
    ],
)
def test_an_event_that_is_not_a_launch_of_the_scheduler_group_is_refused(account, event, message):
    with pytest.raises(DnsUpdateError) as error:
        handler.handler(event, None)
    assert str(error.value) == message
    assert account.a_records() == []


def test_a_function_without_its_configuration_fails_naming_what_is_missing(monkeypatch):
    for name in (handler.ZONE_ID_ENV, handler.RECORD_NAME_ENV, handler.GROUP_NAME_ENV):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DnsUpdateError, match="DASKFLEET_ZONE_ID, DASKFLEET_RECORD_NAME, DASKFLEET_GROUP_NAME"):
        handler.handler(launch_event("i-0abc"), None)


def test_the_handler_module_runs_on_its_own_in_the_lambda_runtime():
    """It is packaged alone: the standard library and boto3/botocore (which the runtime provides) only."""
    tree = ast.parse(Path(handler.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "logging", "os", "collections", "dataclasses", "typing", "boto3", "botocore"}, imported


# --- what the program declares -------------------------------------------------------------------


def declared(record, type_, name):
    return record.one(type_, f"scheduler-dns-{name}")


def test_the_updater_is_one_component_declared_before_the_scheduler_group(every_record):
    component = every_record.component(COMPONENT)
    inside = {(r.type, r.name) for r in every_record.descendants(component)}
    assert inside == {
        ("aws:cloudwatch/logGroup:LogGroup", "scheduler-dns-logs"),
        ("aws:iam/role:Role", "scheduler-dns-updater"),
        ("aws:iam/rolePolicy:RolePolicy", "scheduler-dns-updater"),
        ("aws:lambda/function:Function", "scheduler-dns-updater"),
        ("aws:cloudwatch/eventRule:EventRule", "scheduler-dns-launches"),
        ("aws:lambda/permission:Permission", "scheduler-dns-launches"),
        ("aws:cloudwatch/eventTarget:EventTarget", "scheduler-dns-launches"),
    }
    # The first scheduler's launch event must find the rule, its target and the permission in place.
    scheduler_group = every_record.one("aws:autoscaling/group:Group", "compute-scheduler")
    for resource in every_record.descendants(component):
        assert resource.urn in scheduler_group.dependencies, resource.name


def test_the_rule_matches_successful_launches_of_the_scheduler_group_only(every_record):
    cluster = every_record.config["cluster"]
    rule = declared(every_record, "aws:cloudwatch/eventRule:EventRule", "launches")
    scheduler_group = every_record.one("aws:autoscaling/group:Group", "compute-scheduler").outputs["name"]
    assert json.loads(rule.inputs["eventPattern"]) == {
        "source": ["aws.autoscaling"],
        "detail-type": ["EC2 Instance Launch Successful"],
        "detail": {"AutoScalingGroupName": [scheduler_group]},
    }
    assert scheduler_group == conventions.node_group_name(cluster, "scheduler")
    assert "scheduleExpression" not in rule.inputs


def test_the_rule_invokes_the_function_and_only_it_may(example):
    rule = declared(example, "aws:cloudwatch/eventRule:EventRule", "launches")
    function = declared(example, "aws:lambda/function:Function", "updater")
    target = declared(example, "aws:cloudwatch/eventTarget:EventTarget", "launches")
    assert (target.inputs["rule"], target.inputs["arn"]) == (rule.outputs["name"], function.outputs["arn"])
    assert set(target.inputs) == {"rule", "arn"}  # the event itself is the input, unchanged
    permission = declared(example, "aws:lambda/permission:Permission", "launches")
    assert permission.inputs == {
        "action": "lambda:InvokeFunction", "function": function.outputs["name"],
        "principal": "events.amazonaws.com", "sourceArn": rule.outputs["arn"],
    }


def test_the_function_runs_the_handler_module_configured_for_the_clusters_record(every_record):
    config = every_record.config
    record_name = conventions.scheduler_dns_name(config["cluster"], config["dnsZone"])
    function = declared(every_record, "aws:lambda/function:Function", "updater").inputs
    role = declared(every_record, "aws:iam/role:Role", "updater")
    logs = declared(every_record, "aws:cloudwatch/logGroup:LogGroup", "logs")
    assert function["name"] == conventions.scheduler_dns_function_name(config["cluster"])
    assert (function["runtime"], function["handler"]) == ("python3.12", "handler.handler")
    assert function["code"] == {"archive": "assets", "assets": {"handler.py": {"asset": "path", "path": HANDLER_IN_PROJECT}}}
    assert (INFRA_DIR / HANDLER_IN_PROJECT).resolve() == Path(handler.__file__).resolve()
    assert function["role"] == role.outputs["arn"]
    assert function["environment"]["variables"] == {
        handler.ZONE_ID_ENV: every_record.one("aws:route53/zone:Zone").outputs["zoneId"],
        handler.RECORD_NAME_ENV: record_name,
        handler.GROUP_NAME_ENV: conventions.node_group_name(config["cluster"], "scheduler"),
    }
    assert function["loggingConfig"]["logGroup"] == logs.outputs["name"]
    assert "vpcConfig" not in function  # outside the VPC it reaches the Route 53 API the nodes cannot
    assert logs.inputs == {"name": f"/aws/lambda/{function['name']}", "retentionInDays": config.get("logRetentionDays", 30)}


def test_the_function_role_is_for_lambda_alone(example):
    role = declared(example, "aws:iam/role:Role", "updater")
    (trust,) = statements(role.inputs["assumeRolePolicy"])
    assert trust == {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    attached = [a for a in example.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if a.inputs["role"] == role.outputs["name"]]
    assert attached == [] and not role.inputs.get("managedPolicyArns")


def test_the_function_may_log_describe_instances_and_upsert_one_a_record(example):
    policy = declared(example, "aws:iam/rolePolicy:RolePolicy", "updater").inputs["policy"]
    zone = f"arn:aws:route53:::hostedzone/{example.one('aws:route53/zone:Zone').outputs['zoneId']}"
    own_logs = declared(example, "aws:cloudwatch/logGroup:LogGroup", "logs").outputs["arn"]
    cluster_logs = example.one("aws:cloudwatch/logGroup:LogGroup", "observability-logs").outputs["arn"]
    granted = {action for statement in statements(policy) for action in statement["Action"]}
    assert granted == {"logs:CreateLogStream", "logs:PutLogEvents", "ec2:DescribeInstances", "route53:ChangeResourceRecordSets"}
    assert allows(policy, "logs:PutLogEvents", f"{own_logs}:log-stream:2026/11/26/[$LATEST]abc")
    assert not allows(policy, "logs:PutLogEvents", f"{cluster_logs}:log-stream:i-0123")
    assert not allows(policy, "logs:CreateLogGroup", "*")  # its group exists, with a retention
    (describe,) = allowing(policy, "ec2:DescribeInstances", "*")
    assert describe["Action"] == ["ec2:DescribeInstances"]
    (change,) = allowing(policy, "route53:ChangeResourceRecordSets", zone)
    assert change["Resource"] == [zone]
    assert change["Condition"] == {"ForAllValues:StringEquals": {
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": [RECORD],
        "route53:ChangeResourceRecordSetsRecordTypes": ["A"],
        "route53:ChangeResourceRecordSetsActions": ["UPSERT"],
    }}
    assert not allows(policy, "route53:ChangeResourceRecordSets", "arn:aws:route53:::hostedzone/ZOTHERZONE")
