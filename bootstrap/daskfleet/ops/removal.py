"""Delete one found resource of each kind, with what it holds (thin adapters; the order lives in ``leaks``).

Each remover raises ``Gone`` when there is nothing left to delete and DaskfleetError when AWS
refuses; ``OpsApi`` has already retried throttling and dependencies still being released.
Some kinds need every selected resource of that kind prepared first (``PREPARE``): security
groups reference each other, so all their rules go before any group does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import DaskfleetError, ExitCode
from .awsapi import Gone, OpsApi
from .leaks import Found

#: KMS schedules a key's deletion at least 7 days ahead; the janitor asks for the minimum.
KMS_MIN_PENDING_DAYS = 7
#: Secrets Manager's shortest recovery window, for secrets of stacks that were not ephemeral.
SECRET_MIN_RECOVERY_DAYS = 7
_BATCH = 50


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def remove_group(api: OpsApi, item: Found) -> None:
    """Unprotect the group's instances (workers are protected from scale-in), then delete it with them."""
    (group,) = api.call("autoscaling", "DescribeAutoScalingGroups", item.id, AutoScalingGroupNames=[item.id])[
        "AutoScalingGroups"] or [None]
    if group is None:
        raise Gone(item.id)
    protected = [i["InstanceId"] for i in group.get("Instances", []) if i.get("ProtectedFromScaleIn")]
    for batch in _chunks(protected, _BATCH):
        api.call("autoscaling", "SetInstanceProtection", item.id, AutoScalingGroupName=item.id,
                 InstanceIds=list(batch), ProtectedFromScaleIn=False)
    api.call("autoscaling", "DeleteAutoScalingGroup", f"auto scaling group {item.id}",
             AutoScalingGroupName=item.id, ForceDelete=True)


def remove_hook(api: OpsApi, item: Found) -> None:
    api.call("autoscaling", "DeleteLifecycleHook", f"lifecycle hook {item.id}",
             AutoScalingGroupName=item.detail["group"], LifecycleHookName=item.detail["hook"])


def remove_event_rule(api: OpsApi, item: Found) -> None:
    bus = item.detail.get("bus", "default")
    targets = api.pages("events", "ListTargetsByRule", "Targets", Rule=item.id, EventBusName=bus)
    for batch in _chunks([target["Id"] for target in targets], 10):
        api.call("events", "RemoveTargets", f"targets of rule {item.id}", Rule=item.id, EventBusName=bus, Ids=list(batch))
    api.call("events", "DeleteRule", f"rule {item.id}", Name=item.id, EventBusName=bus)


def remove_vpc_endpoint(api: OpsApi, item: Found) -> None:
    answer = api.call("ec2", "DeleteVpcEndpoints", f"VPC endpoint {item.id}", VpcEndpointIds=[item.id])
    for failed in answer.get("Unsuccessful", []):
        error = failed.get("Error", {})
        if "NotFound" in str(error.get("Code", "")):
            raise Gone(item.id)
        raise DaskfleetError(f"ec2:DeleteVpcEndpoints on {item.id} failed: {error.get('Code')}: {error.get('Message')}",
                             ExitCode.SOURCE_UNAVAILABLE)


def remove_internet_gateway(api: OpsApi, item: Found) -> None:
    for vpc in filter(None, item.detail.get("vpcs", "").split(",")):
        try:
            api.call("ec2", "DetachInternetGateway", f"internet gateway {item.id}", InternetGatewayId=item.id, VpcId=vpc)
        except Gone:
            pass
    api.call("ec2", "DeleteInternetGateway", f"internet gateway {item.id}", InternetGatewayId=item.id)


def revoke_group_rules(api: OpsApi, items: Sequence[Found]) -> None:
    """Every rule of every selected group, so no group is held by another's reference to it."""
    ids = [item.id for item in items]
    for batch in _chunks(ids, _BATCH):
        try:
            groups = api.call("ec2", "DescribeSecurityGroups", "security groups", GroupIds=list(batch))["SecurityGroups"]
        except Gone:
            groups = [g for one in batch for g in _one_group(api, one)]
        for group in groups:
            if group.get("IpPermissions"):
                api.call("ec2", "RevokeSecurityGroupIngress", f"security group {group['GroupId']}",
                         GroupId=group["GroupId"], IpPermissions=group["IpPermissions"])
            if group.get("IpPermissionsEgress"):
                api.call("ec2", "RevokeSecurityGroupEgress", f"security group {group['GroupId']}",
                         GroupId=group["GroupId"], IpPermissions=group["IpPermissionsEgress"])


def _one_group(api: OpsApi, group_id: str) -> list[dict]:
    try:
        return api.call("ec2", "DescribeSecurityGroups", group_id, GroupIds=[group_id])["SecurityGroups"]
    except Gone:
        return []


def remove_route_table(api: OpsApi, item: Found) -> None:
    (table,) = api.call("ec2", "DescribeRouteTables", f"route table {item.id}", RouteTableIds=[item.id])["RouteTables"]
    for association in table.get("Associations", []):
        if not association.get("Main"):
            try:
                api.call("ec2", "DisassociateRouteTable", f"route table {item.id}",
                         AssociationId=association["RouteTableAssociationId"])
            except Gone:
                pass
    api.call("ec2", "DeleteRouteTable", f"route table {item.id}", RouteTableId=item.id)


def remove_hosted_zone(api: OpsApi, item: Found) -> None:
    """Every record but the zone's own SOA and NS, then the zone."""
    apex = item.detail.get("name", "")
    records = api.pages("route53", "ListResourceRecordSets", "ResourceRecordSets", HostedZoneId=item.id)
    changes = [{"Action": "DELETE", "ResourceRecordSet": record} for record in records
               if not (record["Type"] in ("SOA", "NS") and record["Name"] == apex)]
    for batch in _chunks(changes, 100):
        api.call("route53", "ChangeResourceRecordSets", f"records of hosted zone {item.id}", HostedZoneId=item.id,
                 ChangeBatch={"Changes": list(batch)})
    api.call("route53", "DeleteHostedZone", f"hosted zone {item.id}", Id=item.id)


def remove_secret(api: OpsApi, item: Found) -> None:
    """Ephemeral secrets (with an expiry) go at once, so the cluster name is free again; others keep a recovery window."""
    window = {"ForceDeleteWithoutRecovery": True} if item.expires else {"RecoveryWindowInDays": SECRET_MIN_RECOVERY_DAYS}
    api.call("secretsmanager", "DeleteSecret", f"secret {item.id}", SecretId=item.detail.get("arn", item.id), **window)


def empty_and_remove_bucket(api: OpsApi, item: Found) -> None:
    """Every object version and delete marker, unfinished uploads, then the bucket."""
    bucket = item.id
    params: dict[str, Any] = {"Bucket": bucket}
    while True:
        page = api.call("s3", "ListObjectVersions", f"bucket {bucket}", **params)
        keys = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for batch in _chunks(keys, 1000):
            answer = api.call("s3", "DeleteObjects", f"bucket {bucket}", Bucket=bucket, Delete={"Objects": list(batch), "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise DaskfleetError(f"s3:DeleteObjects on bucket {bucket}: {len(answer['Errors'])} object version(s) "
                                     f"not deleted, e.g. {first.get('Key')}: {first.get('Code')}", ExitCode.SOURCE_UNAVAILABLE)
        if not page.get("IsTruncated"):
            break
        params = {"Bucket": bucket, "KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
    for upload in api.call("s3", "ListMultipartUploads", f"bucket {bucket}", Bucket=bucket).get("Uploads", []):
        api.call("s3", "AbortMultipartUpload", f"bucket {bucket}", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    api.call("s3", "DeleteBucket", f"bucket {bucket}", Bucket=bucket)


def remove_kms_key(api: OpsApi, item: Found) -> None:
    """Its aliases (so the cluster name is free again), then deletion scheduled after the minimum window."""
    for alias in api.pages("kms", "ListAliases", "Aliases", KeyId=item.id):
        api.call("kms", "DeleteAlias", f"alias {alias['AliasName']}", AliasName=alias["AliasName"])
    api.call("kms", "ScheduleKeyDeletion", f"KMS key {item.id}", KeyId=item.id, PendingWindowInDays=KMS_MIN_PENDING_DAYS)


def remove_instance_profile(api: OpsApi, item: Found) -> None:
    profile = api.call("iam", "GetInstanceProfile", f"instance profile {item.id}", InstanceProfileName=item.id)["InstanceProfile"]
    for role in profile.get("Roles", []):
        api.call("iam", "RemoveRoleFromInstanceProfile", f"instance profile {item.id}",
                 InstanceProfileName=item.id, RoleName=role["RoleName"])
    api.call("iam", "DeleteInstanceProfile", f"instance profile {item.id}", InstanceProfileName=item.id)


def remove_role(api: OpsApi, item: Found) -> None:
    """Out of its instance profiles, its inline policies deleted and managed ones detached, then the role."""
    role = item.id
    for profile in api.pages("iam", "ListInstanceProfilesForRole", "InstanceProfiles", RoleName=role):
        api.call("iam", "RemoveRoleFromInstanceProfile", f"role {role}",
                 InstanceProfileName=profile["InstanceProfileName"], RoleName=role)
    for name in api.pages("iam", "ListRolePolicies", "PolicyNames", RoleName=role):
        api.call("iam", "DeleteRolePolicy", f"policy {name} of role {role}", RoleName=role, PolicyName=name)
    for attached in api.pages("iam", "ListAttachedRolePolicies", "AttachedPolicies", RoleName=role):
        api.call("iam", "DetachRolePolicy", f"policy {attached['PolicyArn']} of role {role}", RoleName=role,
                 PolicyArn=attached["PolicyArn"])
    api.call("iam", "DeleteRole", f"role {role}", RoleName=role)


def remove_policy(api: OpsApi, item: Found) -> None:
    """A managed policy (the wake and budget-stop policies): detached from every principal, its old versions
    deleted, then the policy. The principals themselves (users' own roles among them) are left alone."""
    arn = item.id
    for kind, operation, key in (("PolicyRoles", "DetachRolePolicy", "RoleName"), ("PolicyUsers", "DetachUserPolicy", "UserName"),
                                 ("PolicyGroups", "DetachGroupPolicy", "GroupName")):
        for entity in api.pages("iam", "ListEntitiesForPolicy", kind, PolicyArn=arn):
            api.call("iam", operation, f"policy {arn} of {entity[key]}", PolicyArn=arn, **{key: entity[key]})
    for version in api.pages("iam", "ListPolicyVersions", "Versions", PolicyArn=arn):
        if not version["IsDefaultVersion"]:
            api.call("iam", "DeletePolicyVersion", f"policy {arn} version {version['VersionId']}", PolicyArn=arn,
                     VersionId=version["VersionId"])
    api.call("iam", "DeletePolicy", f"policy {arn}", PolicyArn=arn)


def _simple(service: str, operation: str, label: str, key: str) -> Callable[[OpsApi, Found], None]:
    def remove(api: OpsApi, item: Found) -> None:
        api.call(service, operation, f"{label} {item.id}", **{key: item.id})

    remove.__name__ = f"remove_{label.replace(' ', '_')}"
    return remove


def _remove_budget(api: OpsApi, item: Found) -> None:
    account = item.detail.get("account") or api.call("sts", "GetCallerIdentity")["Account"]
    api.call("budgets", "DeleteBudget", f"budget {item.id}", AccountId=account, BudgetName=item.id)


def _remove_instance(api: OpsApi, item: Found) -> None:
    api.call("ec2", "TerminateInstances", f"instance {item.id}", InstanceIds=[item.id])


REMOVERS: dict[str, Callable[[OpsApi, Found], None]] = {
    "autoscaling-group": remove_group,
    "instance": _remove_instance,
    "volume": _simple("ec2", "DeleteVolume", "volume", "VolumeId"),
    "launch-template": _simple("ec2", "DeleteLaunchTemplate", "launch template", "LaunchTemplateId"),
    "lifecycle-hook": remove_hook,
    "lambda-function": _simple("lambda", "DeleteFunction", "function", "FunctionName"),
    "event-rule": remove_event_rule,
    "vpc-endpoint": remove_vpc_endpoint,
    "nat-gateway": _simple("ec2", "DeleteNatGateway", "NAT gateway", "NatGatewayId"),
    "elastic-ip": _simple("ec2", "ReleaseAddress", "Elastic IP", "AllocationId"),
    "internet-gateway": remove_internet_gateway,
    "network-interface": _simple("ec2", "DeleteNetworkInterface", "network interface", "NetworkInterfaceId"),
    "security-group": _simple("ec2", "DeleteSecurityGroup", "security group", "GroupId"),
    "subnet": _simple("ec2", "DeleteSubnet", "subnet", "SubnetId"),
    "route-table": remove_route_table,
    "vpc": _simple("ec2", "DeleteVpc", "VPC", "VpcId"),
    "hosted-zone": remove_hosted_zone,
    "secret": remove_secret,
    "ssm-parameter": _simple("ssm", "DeleteParameter", "SSM parameter", "Name"),
    "log-group": _simple("logs", "DeleteLogGroup", "log group", "logGroupName"),
    "bucket": empty_and_remove_bucket,
    "kms-key": remove_kms_key,
    "instance-profile": remove_instance_profile,
    "iam-role": remove_role,
    "iam-policy": remove_policy,
    "budget": _remove_budget,
}
#: Run once on every selected resource of a kind before any of them is removed.
PREPARE: dict[str, Callable[[OpsApi, Sequence[Found]], None]] = {"security-group": revoke_group_rules}
