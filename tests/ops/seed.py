"""Seed a moto server with what the Pulumi program creates for one cluster, and snapshot a region independently.

``seed_cluster`` creates one resource of every kind the program declares (tests/ops/
test_janitor_coverage.py holds the two lists together), tagged as the provider's default tags
tag them: the cluster tag, and ``expires`` for ephemeral stacks. ``tags=None`` creates the
same resources with the same names and no tags at all (look-alikes the janitor must not touch).
``snapshot`` lists a region with plain service calls, not with the janitor's own inventory.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field

from daskfleet import conventions

ACCOUNT = "123456789012"
#: The description of the one standalone network interface each seeded cluster gets.
SPARE_INTERFACE = "daskfleet test: a spare network interface"


@dataclass
class Seeded:
    cluster: str
    #: (service kind, id) of everything created, as ``snapshot`` names it.
    ids: set[tuple[str, str]] = field(default_factory=set)


def _tag_list(tags: dict[str, str] | None) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in (tags or {}).items()]


def _spec(kind: str, tags: dict[str, str] | None) -> list[dict]:
    return [{"ResourceType": kind, "Tags": _tag_list(tags)}] if tags else []


def cluster_tags(cluster: str, expires: str | None) -> dict[str, str]:
    tags = {conventions.TAG_CLUSTER: cluster, conventions.TAG_TEAM: "data-science", conventions.TAG_OWNER: "ops@example.com",
            conventions.TAG_COST_CENTER: "cc-1"}
    if expires:
        tags[conventions.TAG_EXPIRES] = expires
    return tags


def seed_cluster(moto, cluster: str, tags: dict[str, str] | None, *, cidr: str = "10.64.0.0/16") -> Seeded:
    """One of everything the program creates for ``cluster`` (with a NAT gateway), tagged with ``tags``."""
    seeded = Seeded(cluster)
    _network(moto, cluster, tags, cidr, seeded)
    _compute(moto, cluster, tags, seeded)
    _identity_and_data(moto, cluster, tags, seeded)
    return seeded


def _network(moto, cluster: str, tags, cidr: str, seeded: Seeded) -> None:
    ec2 = moto.client("ec2")
    name = conventions.resource_name(cluster)
    vpc = ec2.create_vpc(CidrBlock=cidr, TagSpecifications=_spec("vpc", tags))["Vpc"]["VpcId"]
    seeded.ids.add(("vpc", vpc))
    base = cidr.split(".")
    subnets = []
    for index, zone in enumerate(("us-east-1a", "us-east-1b", "us-east-1a")):
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{base[0]}.{base[1]}.{16 * index}.0/20", AvailabilityZone=zone,
                                   TagSpecifications=_spec("subnet", tags))["Subnet"]["SubnetId"]
        subnets.append(subnet)
        seeded.ids.add(("subnet", subnet))
    private = ec2.create_route_table(VpcId=vpc, TagSpecifications=_spec("route-table", tags))["RouteTable"]["RouteTableId"]
    public = ec2.create_route_table(VpcId=vpc, TagSpecifications=_spec("route-table", tags))["RouteTable"]["RouteTableId"]
    seeded.ids |= {("route-table", private), ("route-table", public)}
    for subnet in subnets[:2]:
        ec2.associate_route_table(RouteTableId=private, SubnetId=subnet)
    ec2.associate_route_table(RouteTableId=public, SubnetId=subnets[2])
    igw = ec2.create_internet_gateway(TagSpecifications=_spec("internet-gateway", tags))["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.create_route(RouteTableId=public, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    seeded.ids.add(("internet-gateway", igw))
    eip = ec2.allocate_address(Domain="vpc", TagSpecifications=_spec("elastic-ip", tags))["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=subnets[2], AllocationId=eip,
                                 TagSpecifications=_spec("natgateway", tags))["NatGateway"]["NatGatewayId"]
    ec2.create_route(RouteTableId=private, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    seeded.ids |= {("elastic-ip", eip), ("nat-gateway", nat)}
    endpoints_sg = ec2.create_security_group(GroupName=f"{name}-endpoints", Description="endpoints", VpcId=vpc,
                                             TagSpecifications=_spec("security-group", tags))["GroupId"]
    groups = {role: ec2.create_security_group(GroupName=f"{name}-{role}", Description=role, VpcId=vpc,
                                              TagSpecifications=_spec("security-group", tags))["GroupId"]
              for role in conventions.NODE_ROLES}
    seeded.ids |= {("security-group", endpoints_sg), *(("security-group", g) for g in groups.values())}
    # The groups reference each other, as the program's rules do: neither can go before the other's rules.
    ec2.authorize_security_group_ingress(GroupId=groups["scheduler"], IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 8786, "ToPort": 8786, "UserIdGroupPairs": [{"GroupId": groups["worker"]}]}])
    ec2.authorize_security_group_ingress(GroupId=groups["worker"], IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 8788, "ToPort": 8788, "UserIdGroupPairs": [{"GroupId": groups["scheduler"]}]}])
    gateway = ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.s3", VpcEndpointType="Gateway",
                                      RouteTableIds=[private], TagSpecifications=_spec("vpc-endpoint", tags))
    interface = ec2.create_vpc_endpoint(VpcId=vpc, ServiceName="com.amazonaws.us-east-1.ssm", VpcEndpointType="Interface",
                                        SubnetIds=subnets[:2], SecurityGroupIds=[endpoints_sg],
                                        TagSpecifications=_spec("vpc-endpoint", tags))
    seeded.ids |= {("vpc-endpoint", gateway["VpcEndpoint"]["VpcEndpointId"]),
                   ("vpc-endpoint", interface["VpcEndpoint"]["VpcEndpointId"])}
    eni = ec2.create_network_interface(SubnetId=subnets[0], Groups=[groups["worker"]], Description=SPARE_INTERFACE,
                                       TagSpecifications=_spec("network-interface", tags))["NetworkInterface"]["NetworkInterfaceId"]
    seeded.ids.add(("network-interface", eni))
    route53 = moto.client("route53")
    zone = route53.create_hosted_zone(Name=f"{cluster}.daskfleet.internal", CallerReference=f"{cluster}-{vpc}",
                                      VPC={"VPCRegion": "us-east-1", "VPCId": vpc},
                                      HostedZoneConfig={"PrivateZone": True})["HostedZone"]["Id"].rsplit("/", 1)[-1]
    if tags:
        route53.change_tags_for_resource(ResourceType="hostedzone", ResourceId=zone, AddTags=_tag_list(tags))
    route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
        "Name": conventions.scheduler_dns_name(cluster, "daskfleet.internal"), "Type": "A", "TTL": 15,
        "ResourceRecords": [{"Value": "10.64.0.10"}]}}]})
    seeded.ids.add(("hosted-zone", zone))
    seeded.network = {"vpc": vpc, "subnets": subnets[:2], "groups": groups}  # type: ignore[attr-defined]


def _compute(moto, cluster: str, tags, seeded: Seeded) -> None:
    ec2, autoscaling = moto.client("ec2"), moto.client("autoscaling")
    network = seeded.network  # type: ignore[attr-defined]
    for role in conventions.NODE_ROLES:
        name = conventions.resource_name(cluster, role)
        node_tags = {**(tags or {}), conventions.TAG_ROLE: role} if tags else None
        template = ec2.create_launch_template(
            LaunchTemplateName=name, TagSpecifications=_spec("launch-template", tags),
            LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro",
                                "SecurityGroupIds": [network["groups"][role]],
                                "TagSpecifications": _spec("instance", node_tags)})["LaunchTemplate"]["LaunchTemplateId"]
        seeded.ids.add(("launch-template", template))
        group = conventions.node_group_name(cluster, role)
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=group, MinSize=0, MaxSize=2, DesiredCapacity=1,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
            VPCZoneIdentifier=",".join(network["subnets"]), NewInstancesProtectedFromScaleIn=role == "worker",
            Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True, "ResourceId": group, "ResourceType": "auto-scaling-group"}
                  for k, v in (node_tags or {}).items()])
        seeded.ids.add(("autoscaling-group", group))
        if role == "worker":
            autoscaling.put_lifecycle_hook(LifecycleHookName=conventions.DRAIN_HOOK_NAME, AutoScalingGroupName=group,
                                           LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", HeartbeatTimeout=900)
    groups = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[conventions.node_group_name(cluster, r) for r in conventions.NODE_ROLES])["AutoScalingGroups"]
    seeded.ids |= {("instance", i["InstanceId"]) for g in groups for i in g["Instances"]}


def _identity_and_data(moto, cluster: str, tags, seeded: Seeded) -> None:
    iam = moto.client("iam")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"}]})
    managed = iam.create_policy(
        PolicyName=f"{conventions.resource_name(cluster)}-extra", PolicyDocument=policy, **({"Tags": _tag_list(tags)} if tags else {}),
    )["Policy"]["Arn"]
    # Like the wake policy, attached to a principal the stack does not own (a user's role): detached, never deleted.
    person = f"{cluster}-person"
    iam.create_role(RoleName=person, AssumeRolePolicyDocument=trust)
    iam.attach_role_policy(RoleName=person, PolicyArn=managed)
    seeded.ids.add(("iam-policy", managed))
    for role in (*conventions.NODE_ROLES, "dns"):
        name = conventions.scheduler_dns_function_name(cluster) if role == "dns" else conventions.iam_role_name(cluster, role)
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust, Tags=_tag_list(tags))["Role"]["Arn"]
        iam.put_role_policy(RoleName=name, PolicyName=f"{conventions.NAME_PREFIX}-node", PolicyDocument=policy)
        iam.attach_role_policy(RoleName=name, PolicyArn=managed)
        seeded.ids.add(("iam-role", name))
        if role != "dns":
            iam.create_instance_profile(InstanceProfileName=name, Tags=_tag_list(tags))
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
            seeded.ids.add(("instance-profile", name))
    function = conventions.scheduler_dns_function_name(cluster)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("handler.py", "def handler(event, context):\n    return None\n")
    lam = moto.client("lambda")
    lam.create_function(FunctionName=function, Runtime="python3.12", Role=arn, Handler="handler.handler",
                        Code={"ZipFile": archive.getvalue()}, Tags=tags or {})
    seeded.ids.add(("lambda-function", function))
    events = moto.client("events")
    rule_arn = events.put_rule(Name=function, EventPattern=json.dumps({"source": ["aws.autoscaling"]}), Tags=_tag_list(tags))["RuleArn"]
    events.put_targets(Rule=function, Targets=[{"Id": "dns", "Arn": lam.get_function(FunctionName=function)["Configuration"]["FunctionArn"]}])
    seeded.ids.add(("event-rule", function))
    assert rule_arn
    logs = moto.client("logs")
    for group in (conventions.log_group_name(cluster), f"/aws/lambda/{function}"):
        logs.create_log_group(logGroupName=group, **({"tags": tags} if tags else {}))
        seeded.ids.add(("log-group", group))
    secrets = moto.client("secretsmanager")
    for name in (conventions.node_tls_secret_name(cluster, "scheduler"), conventions.client_tls_secret_name(cluster, "alice")):
        secrets.create_secret(Name=name, SecretString="{}", **({"Tags": _tag_list(tags)} if tags else {}))
        seeded.ids.add(("secret", name))
    ssm = moto.client("ssm")
    for role in conventions.NODE_ROLES:
        name = conventions.spec_parameter_name(cluster, role)
        ssm.put_parameter(Name=name, Value="{}", Type="String", **({"Tags": _tag_list(tags)} if tags else {}))
        seeded.ids.add(("ssm-parameter", name))
    kms = moto.client("kms")
    key = kms.create_key(Description=f"daskfleet cluster {cluster}",
                         Tags=[{"TagKey": k, "TagValue": v} for k, v in (tags or {}).items()])["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=conventions.kms_alias(cluster), TargetKeyId=key)
    seeded.ids.add(("kms-key", key))
    s3 = moto.client("s3")
    bucket = conventions.bucket_name_prefix(cluster) + "0a1b2c3"
    s3.create_bucket(Bucket=bucket)
    if tags:
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": _tag_list(tags)})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"one", b"two"):
        s3.put_object(Bucket=bucket, Key="scratch/data.bin", Body=body)
    s3.delete_object(Bucket=bucket, Key="scratch/data.bin")  # a delete marker over two versions
    s3.put_object(Bucket=bucket, Key="results/out.parquet", Body=b"x")
    seeded.ids.add(("bucket", bucket))
    budgets = moto.client("budgets")
    budgets.create_budget(AccountId=ACCOUNT, Budget={
        "BudgetName": conventions.budget_name(cluster), "BudgetLimit": {"Amount": "500", "Unit": "USD"},
        "TimeUnit": "MONTHLY", "BudgetType": "COST"})
    seeded.ids.add(("budget", conventions.budget_name(cluster)))


def snapshot(moto) -> set[tuple[str, str]]:
    """Every resource of the kinds seed_cluster creates, listed with plain service calls."""
    ec2, ids = moto.client("ec2"), set()
    ids |= {("vpc", v["VpcId"]) for v in ec2.describe_vpcs()["Vpcs"] if not v.get("IsDefault")}
    ids |= {("subnet", s["SubnetId"]) for s in ec2.describe_subnets()["Subnets"] if not s.get("DefaultForAz")}
    ids |= {("route-table", t["RouteTableId"]) for t in ec2.describe_route_tables()["RouteTables"]
            if not any(a.get("Main") for a in t.get("Associations", []))}
    ids |= {("internet-gateway", g["InternetGatewayId"]) for g in ec2.describe_internet_gateways()["InternetGateways"]
            if not any(a["VpcId"].startswith("vpc-") and _is_default_vpc(ec2, a["VpcId"]) for a in g.get("Attachments", []))}
    ids |= {("elastic-ip", a["AllocationId"]) for a in ec2.describe_addresses()["Addresses"]}
    ids |= {("nat-gateway", n["NatGatewayId"]) for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] != "deleted"}
    ids |= {("security-group", g["GroupId"]) for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"}
    ids |= {("vpc-endpoint", e["VpcEndpointId"]) for e in ec2.describe_vpc_endpoints()["VpcEndpoints"]
            if e.get("State", "").lower() != "deleted"}
    ids |= {("network-interface", n["NetworkInterfaceId"]) for n in ec2.describe_network_interfaces()["NetworkInterfaces"]
            if n.get("Description") == SPARE_INTERFACE}
    ids |= {("launch-template", t["LaunchTemplateId"]) for t in ec2.describe_launch_templates()["LaunchTemplates"]}
    ids |= {("instance", i["InstanceId"]) for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] != "terminated"}
    autoscaling = moto.client("autoscaling")
    ids |= {("autoscaling-group", g["AutoScalingGroupName"]) for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]}
    ids |= {("hosted-zone", z["Id"].rsplit("/", 1)[-1]) for z in moto.client("route53").list_hosted_zones()["HostedZones"]}
    iam = moto.client("iam")
    ids |= {("iam-role", r["RoleName"]) for r in iam.list_roles()["Roles"]}
    ids |= {("instance-profile", p["InstanceProfileName"]) for p in iam.list_instance_profiles()["InstanceProfiles"]}
    ids |= {("iam-policy", p["Arn"]) for p in iam.list_policies(Scope="Local")["Policies"]}
    ids |= {("lambda-function", f["FunctionName"]) for f in moto.client("lambda").list_functions()["Functions"]}
    ids |= {("event-rule", r["Name"]) for r in moto.client("events").list_rules()["Rules"]}
    ids |= {("log-group", g["logGroupName"]) for g in moto.client("logs").describe_log_groups()["logGroups"]}
    ids |= {("secret", s["Name"]) for s in moto.client("secretsmanager").list_secrets()["SecretList"] if not s.get("DeletedDate")}
    ids |= {("ssm-parameter", p["Name"]) for p in moto.client("ssm").describe_parameters()["Parameters"]}
    kms = moto.client("kms")
    ids |= {("kms-key", k["KeyId"]) for k in kms.list_keys()["Keys"]
            if kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["KeyState"] != "PendingDeletion"}
    ids |= {("bucket", b["Name"]) for b in moto.client("s3").list_buckets()["Buckets"]}
    ids |= {("budget", b["BudgetName"]) for b in moto.client("budgets").describe_budgets(AccountId=ACCOUNT).get("Budgets", [])}
    return ids


def _is_default_vpc(ec2, vpc_id: str) -> bool:
    return any(v.get("IsDefault") for v in ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"])
