"""Find every resource in a region that carries the project's cluster tag (thin adapters, one listing per kind).

Each kind is listed by its own service, which also gives what deleting it needs and, where
the service says, when it was created. Listings that cannot filter by tag are narrowed to
daskfleet's names (``conventions.NAME_PREFIX``) before their tags are read; the tag decides.
The Resource Groups Tagging API is asked too, as a cross-check: a resource it reports with
the cluster tag, of a type no listing covers, is returned as ``Unlisted`` (reported, never deleted).

What the tests' moto server cannot show, and how this copes:
- moto's Tagging API does not cover launch templates, VPC endpoints, Elastic IPs, Route 53,
  IAM or budgets; they are found by their services' own listings (as on AWS, where IAM and
  budgets are not regional and not in a region's Tagging API answer either).
- moto does not implement Budgets' ListTagsForResource. A budget whose tags cannot be read
  takes its cluster from its conventional name (``conventions.budget_name``) and inherits
  that cluster's expiry, so it goes only with a cluster whose tagged resources are selected.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import conventions
from ..errors import DaskfleetError
from .awsapi import Gone, OpsApi
from .leaks import Found

TAG_FILTER = [{"Name": "tag-key", "Values": [conventions.TAG_CLUSTER]}]
PREFIX = conventions.NAME_PREFIX + "-"


@dataclass(frozen=True)
class Unlisted:
    """A resource the Tagging API reports with the cluster tag, of a type the janitor does not list."""

    arn: str
    cluster: str
    expires: str | None


@dataclass
class Inventory:
    """What one sweep of a region found: resources, the Tagging API's extras, and listings that failed."""

    found: list[Found]
    unlisted: list[Unlisted]
    #: (what was being listed, the error): a failed listing is reported, the others still run.
    failures: list[tuple[str, str]]


def tag_dict(tags: Iterable[Mapping[str, str]] | Mapping[str, str] | None, key: str = "Key", value: str = "Value") -> dict[str, str]:
    if tags is None:
        return {}
    if isinstance(tags, Mapping):
        return dict(tags)
    return {tag[key]: tag[value] for tag in tags}


def _found(kind: str, ident: str, tags: Mapping[str, str], created: Any = None, **detail: str) -> Found | None:
    cluster = tags.get(conventions.TAG_CLUSTER)
    if not cluster:
        return None
    return Found(kind, ident, cluster, tags.get(conventions.TAG_EXPIRES), _when(created), detail=dict(detail))


def _when(value: Any) -> dt.datetime | None:
    """A creation time from a service: datetime, epoch milliseconds (CloudWatch Logs) or ISO text."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value / 1000, dt.timezone.utc)
    try:
        return _when(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


# --- EC2 and auto scaling ---------------------------------------------------------------------


def ec2_resources(api: OpsApi) -> list[Found]:
    found: list[Found | None] = []
    running = {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]}
    for reservation in api.pages("ec2", "DescribeInstances", "Reservations", Filters=[*TAG_FILTER, running]):
        found += [_found("instance", i["InstanceId"], tag_dict(i.get("Tags")), i.get("LaunchTime")) for i in reservation["Instances"]]
    found += [_found("volume", v["VolumeId"], tag_dict(v.get("Tags")), v.get("CreateTime"))
              for v in api.pages("ec2", "DescribeVolumes", "Volumes", Filters=TAG_FILTER)]
    found += [_found("launch-template", t["LaunchTemplateId"], tag_dict(t.get("Tags")), t.get("CreateTime"), name=t["LaunchTemplateName"])
              for t in api.pages("ec2", "DescribeLaunchTemplates", "LaunchTemplates", Filters=TAG_FILTER)]
    found += [_found("vpc-endpoint", e["VpcEndpointId"], tag_dict(e.get("Tags")), e.get("CreationTimestamp"))
              for e in api.pages("ec2", "DescribeVpcEndpoints", "VpcEndpoints", Filters=TAG_FILTER)
              if e.get("State", "").lower() not in ("deleted", "deleting")]
    found += [_found("nat-gateway", n["NatGatewayId"], tag_dict(n.get("Tags")), n.get("CreateTime"))
              for n in api.pages("ec2", "DescribeNatGateways", "NatGateways", Filter=TAG_FILTER)
              if n.get("State") not in ("deleted", "deleting")]
    found += [_found("elastic-ip", a["AllocationId"], tag_dict(a.get("Tags")), None)
              for a in api.call("ec2", "DescribeAddresses", Filters=TAG_FILTER).get("Addresses", [])]
    found += [_found("internet-gateway", g["InternetGatewayId"], tag_dict(g.get("Tags")), None,
                     vpcs=",".join(a["VpcId"] for a in g.get("Attachments", [])))
              for g in api.pages("ec2", "DescribeInternetGateways", "InternetGateways", Filters=TAG_FILTER)]
    found += [_found("network-interface", n["NetworkInterfaceId"], tag_dict(n.get("TagSet")), None)
              for n in api.pages("ec2", "DescribeNetworkInterfaces", "NetworkInterfaces", Filters=TAG_FILTER)]
    found += [_found("security-group", g["GroupId"], tag_dict(g.get("Tags")), None)
              for g in api.pages("ec2", "DescribeSecurityGroups", "SecurityGroups", Filters=TAG_FILTER)
              if g.get("GroupName") != "default"]
    found += [_found("subnet", s["SubnetId"], tag_dict(s.get("Tags")), None)
              for s in api.pages("ec2", "DescribeSubnets", "Subnets", Filters=TAG_FILTER)]
    found += [_found("route-table", t["RouteTableId"], tag_dict(t.get("Tags")), None)
              for t in api.pages("ec2", "DescribeRouteTables", "RouteTables", Filters=TAG_FILTER)
              if not any(a.get("Main") for a in t.get("Associations", []))]
    found += [_found("vpc", v["VpcId"], tag_dict(v.get("Tags")), None)
              for v in api.pages("ec2", "DescribeVpcs", "Vpcs", Filters=TAG_FILTER)]
    return [item for item in found if item is not None]


def autoscaling_resources(api: OpsApi) -> list[Found]:
    found: list[Found] = []
    groups = api.pages("autoscaling", "DescribeAutoScalingGroups", "AutoScalingGroups",
                       Filters=[{"Name": "tag-key", "Values": [conventions.TAG_CLUSTER]}])
    for group in groups:
        item = _found("autoscaling-group", group["AutoScalingGroupName"], tag_dict(group.get("Tags")), group.get("CreatedTime"))
        if item is None:
            continue
        found.append(item)
        hooks = api.call("autoscaling", "DescribeLifecycleHooks", AutoScalingGroupName=item.id).get("LifecycleHooks", [])
        # A hook has no tags of its own: it is its group's.
        found += [Found("lifecycle-hook", f"{item.id}/{hook['LifecycleHookName']}", item.cluster, item.expires, item.created,
                        detail={"group": item.id, "hook": hook["LifecycleHookName"]}) for hook in hooks]
    return found


# --- services listed by name, then asked for their tags ---------------------------------------------


def lambda_functions(api: OpsApi) -> list[Found]:
    found = []
    for function in api.pages("lambda", "ListFunctions", "Functions"):
        if function["FunctionName"].startswith(PREFIX):
            tags = api.call("lambda", "ListTags", Resource=function["FunctionArn"]).get("Tags", {})
            found.append(_found("lambda-function", function["FunctionName"], tags, None))
    return [item for item in found if item]


def event_rules(api: OpsApi) -> list[Found]:
    found = []
    for rule in api.pages("events", "ListRules", "Rules", NamePrefix=PREFIX):
        tags = tag_dict(api.call("events", "ListTagsForResource", ResourceARN=rule["Arn"]).get("Tags"))
        found.append(_found("event-rule", rule["Name"], tags, None, bus=rule.get("EventBusName", "default")))
    return [item for item in found if item]


def secrets(api: OpsApi) -> list[Found]:
    listed = api.pages("secretsmanager", "ListSecrets", "SecretList",
                       Filters=[{"Key": "tag-key", "Values": [conventions.TAG_CLUSTER]}])
    found = [_found("secret", s["Name"], tag_dict(s.get("Tags")), s.get("CreatedDate"), arn=s["ARN"])
             for s in listed if not s.get("DeletedDate")]
    return [item for item in found if item]


def ssm_parameters(api: OpsApi) -> list[Found]:
    found = []
    path = {"Key": "Path", "Option": "Recursive", "Values": [f"/{conventions.NAME_PREFIX}"]}
    for parameter in api.pages("ssm", "DescribeParameters", "Parameters", ParameterFilters=[path]):
        tags = tag_dict(api.call("ssm", "ListTagsForResource", ResourceType="Parameter", ResourceId=parameter["Name"]).get("TagList"))
        found.append(_found("ssm-parameter", parameter["Name"], tags, parameter.get("LastModifiedDate")))
    return [item for item in found if item]


def log_groups(api: OpsApi) -> list[Found]:
    found = []
    for prefix in (f"/{conventions.NAME_PREFIX}/", f"/aws/lambda/{PREFIX}"):
        for group in api.pages("logs", "DescribeLogGroups", "logGroups", logGroupNamePrefix=prefix):
            arn = group.get("logGroupArn") or group["arn"].removesuffix(":*")
            tags = api.call("logs", "ListTagsForResource", resourceArn=arn).get("tags", {})
            found.append(_found("log-group", group["logGroupName"], tags, group.get("creationTime")))
    return [item for item in found if item]


def buckets(api: OpsApi) -> list[Found]:
    found = []
    for bucket in api.pages("s3", "ListBuckets", "Buckets"):
        name = bucket["Name"]
        if not name.startswith(PREFIX):
            continue
        location = api.call("s3", "GetBucketLocation", Bucket=name).get("LocationConstraint") or "us-east-1"
        if location != api.region:
            continue
        try:
            tags = tag_dict(api.call("s3", "GetBucketTagging", Bucket=name).get("TagSet"))
        except DaskfleetError as error:
            if "NoSuchTagSet" not in str(error):
                raise
            tags = {}
        found.append(_found("bucket", name, tags, bucket.get("CreationDate")))
    return [item for item in found if item]


def kms_keys(api: OpsApi) -> list[Found]:
    found = []
    for key in api.pages("kms", "ListKeys", "Keys"):
        metadata = api.call("kms", "DescribeKey", KeyId=key["KeyId"])["KeyMetadata"]
        if metadata.get("KeyManager") != "CUSTOMER" or metadata.get("KeyState") in ("PendingDeletion", "PendingReplicaDeletion"):
            continue
        tags = tag_dict(api.call("kms", "ListResourceTags", KeyId=key["KeyId"]).get("Tags"), "TagKey", "TagValue")
        found.append(_found("kms-key", key["KeyId"], tags, metadata.get("CreationDate")))
    return [item for item in found if item]


def hosted_zones(api: OpsApi) -> list[Found]:
    zones = {zone["Id"].rsplit("/", 1)[-1]: zone for zone in api.pages("route53", "ListHostedZones", "HostedZones")}
    ids = sorted(zones)
    found = []
    for start in range(0, len(ids), 10):  # ListTagsForResources takes at most 10 ids
        answer = api.call("route53", "ListTagsForResources", ResourceType="hostedzone", ResourceIds=ids[start:start + 10])
        for tag_set in answer.get("ResourceTagSets", []):
            zone_id = tag_set["ResourceId"]
            found.append(_found("hosted-zone", zone_id, tag_dict(tag_set.get("Tags")), None, name=zones[zone_id]["Name"]))
    return [item for item in found if item]


def iam_resources(api: OpsApi) -> list[Found]:
    found = []
    for role in api.pages("iam", "ListRoles", "Roles"):
        if role["RoleName"].startswith(PREFIX):
            tags = tag_dict(api.call("iam", "ListRoleTags", RoleName=role["RoleName"]).get("Tags"))
            found.append(_found("iam-role", role["RoleName"], tags, role.get("CreateDate")))
    for profile in api.pages("iam", "ListInstanceProfiles", "InstanceProfiles"):
        if profile["InstanceProfileName"].startswith(PREFIX):
            name = profile["InstanceProfileName"]
            # GetInstanceProfile carries the tags (moto has no ListInstanceProfileTags).
            tags = tag_dict(api.call("iam", "GetInstanceProfile", InstanceProfileName=name)["InstanceProfile"].get("Tags"))
            roles = ",".join(role["RoleName"] for role in profile.get("Roles", []))
            found.append(_found("instance-profile", name, tags, profile.get("CreateDate"), roles=roles))
    for policy in api.pages("iam", "ListPolicies", "Policies", Scope="Local"):
        if policy["PolicyName"].startswith(PREFIX):
            tags = tag_dict(api.call("iam", "ListPolicyTags", PolicyArn=policy["Arn"]).get("Tags"))
            found.append(_found("iam-policy", policy["Arn"], tags, policy.get("CreateDate"), name=policy["PolicyName"]))
    return [item for item in found if item]


def budgets(api: OpsApi) -> list[Found]:
    account = api.call("sts", "GetCallerIdentity")["Account"]
    found = []
    for budget in api.pages("budgets", "DescribeBudgets", "Budgets", AccountId=account):
        name = budget["BudgetName"]
        if not name.startswith(PREFIX):
            continue
        arn = f"arn:aws:budgets::{account}:budget/{name}"
        try:
            tags = tag_dict(api.call("budgets", "ListTagsForResource", ResourceARN=arn).get("ResourceTags"))
        except DaskfleetError:
            # The endpoint cannot report a budget's tags (moto): the budget is its cluster's by name.
            found.append(Found("budget", name, name.removeprefix(PREFIX), inherits=True, detail={"account": account}))
            continue
        found.append(_found("budget", name, tags, None, account=account))
    return [item for item in found if item]


LISTINGS: dict[str, Callable[[OpsApi], list[Found]]] = {
    "EC2": ec2_resources,
    "auto scaling": autoscaling_resources,
    "Lambda": lambda_functions,
    "EventBridge": event_rules,
    "Route 53": hosted_zones,
    "Secrets Manager": secrets,
    "SSM Parameter Store": ssm_parameters,
    "CloudWatch Logs": log_groups,
    "S3": buckets,
    "KMS": kms_keys,
    "IAM": iam_resources,
    "Budgets": budgets,
}


# --- the Tagging API cross-check --------------------------------------------------------------------


def arn_key(arn: str) -> tuple[str, str] | None:
    """(kind, id) a listing gives the resource an ARN names, or None for a type the janitor does not remove."""
    parts = arn.split(":", 5)
    if len(parts) != 6:
        return None
    service, resource = parts[2], parts[5]
    kind_of = {"instance": "instance", "volume": "volume", "launch-template": "launch-template",
               "vpc-endpoint": "vpc-endpoint", "natgateway": "nat-gateway", "elastic-ip": "elastic-ip",
               "internet-gateway": "internet-gateway", "network-interface": "network-interface",
               "security-group": "security-group", "subnet": "subnet", "route-table": "route-table", "vpc": "vpc"}
    if service == "ec2":
        kind, _, ident = resource.partition("/")
        return (kind_of[kind], ident) if kind in kind_of else None
    if service == "autoscaling" and "autoScalingGroupName/" in resource:
        return "autoscaling-group", resource.split("autoScalingGroupName/", 1)[1]
    if service == "lambda" and resource.startswith("function:"):
        return "lambda-function", resource.split(":")[1]
    if service == "events" and resource.startswith("rule/"):
        return "event-rule", resource.rsplit("/", 1)[1]
    if service == "secretsmanager" and resource.startswith("secret:"):
        return "secret", resource.removeprefix("secret:").rsplit("-", 1)[0]
    if service == "ssm" and resource.startswith("parameter/"):
        return "ssm-parameter", "/" + resource.removeprefix("parameter/")
    if service == "logs" and resource.startswith("log-group:"):
        return "log-group", resource.removeprefix("log-group:").removesuffix(":*")
    if service == "s3":
        return "bucket", resource
    if service == "kms" and resource.startswith("key/"):
        return "kms-key", resource.removeprefix("key/")
    return None


def tagging_cross_check(api: OpsApi) -> list[Unlisted]:
    """Tagged resources of types no listing covers. A listed type the listings skipped is already going
    (a terminated instance, a deleted NAT gateway, a key pending deletion: the Tagging API shows them a while)."""
    mappings = api.pages("resourcegroupstaggingapi", "GetResources", "ResourceTagMappingList",
                         TagFilters=[{"Key": conventions.TAG_CLUSTER}])
    unlisted = []
    for mapping in mappings:
        if arn_key(mapping["ResourceARN"]) is not None:
            continue
        tags = tag_dict(mapping.get("Tags"))
        unlisted.append(Unlisted(mapping["ResourceARN"], tags.get(conventions.TAG_CLUSTER, ""), tags.get(conventions.TAG_EXPIRES)))
    return unlisted


def take_inventory(api: OpsApi, listings: Mapping[str, Callable[[OpsApi], list[Found]]] = LISTINGS) -> Inventory:
    """Every listing, then the cross-check; one failed listing is recorded and the others still run."""
    inventory = Inventory([], [], [])
    for what, listing in listings.items():
        try:
            inventory.found += listing(api)
        except (DaskfleetError, Gone) as error:
            inventory.failures.append((what, str(error)))
    try:
        inventory.unlisted = tagging_cross_check(api)
    except (DaskfleetError, Gone) as error:
        inventory.failures.append(("Resource Groups Tagging API", str(error)))
    return inventory
