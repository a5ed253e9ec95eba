"""The Network component: private subnets, endpoints instead of internet, an adopted VPC, the cluster's zone."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import daskfleet.aws
from infra.scenarios import ADOPTED_SUBNETS, ADOPTED_VPC

from daskfleet import conventions
from daskfleet_infra.network import INTERFACE_ENDPOINT_SERVICES, subnet_cidrs

NETWORK = "daskfleet:aws:Network"


def network_resources(record):
    return record.descendants(record.component(NETWORK))


def test_subnet_cidrs_are_equal_disjoint_parts_of_the_vpc():
    cidrs = [ipaddress.ip_network(cidr) for cidr in subnet_cidrs("10.64.0.0/16", 3)]
    assert [str(cidr) for cidr in cidrs] == ["10.64.0.0/20", "10.64.16.0/20", "10.64.32.0/20"]
    assert all(cidr.subnet_of(ipaddress.ip_network("10.64.0.0/16")) for cidr in cidrs)


def test_a_created_network_has_private_subnets_in_two_zones_and_no_way_out(example):
    vpc = example.one("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == "10.64.0.0/16"
    assert vpc.inputs["enableDnsSupport"] and vpc.inputs["enableDnsHostnames"]
    subnets = example.of_type("aws:ec2/subnet:Subnet")
    assert len(subnets) == 2
    assert len({subnet.inputs["availabilityZone"] for subnet in subnets}) == 2
    assert all(subnet.inputs["mapPublicIpOnLaunch"] is False for subnet in subnets)
    for absent in ("aws:ec2/internetGateway:InternetGateway", "aws:ec2/natGateway:NatGateway", "aws:ec2/eip:Eip", "aws:ec2/route:Route"):
        assert example.of_type(absent) == [], absent
    assert {resource.urn for resource in example.of_type("aws:ec2/subnet:Subnet")} <= {r.urn for r in network_resources(example)}


def test_nodes_reach_aws_through_endpoints(example):
    endpoints = {e.inputs["serviceName"].rsplit(".", 1)[-1]: e for e in example.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert set(endpoints) == {"s3", *INTERFACE_ENDPOINT_SERVICES}
    assert {"ssm", "ssmmessages", "ec2messages", "lambda", "logs", "ec2", "autoscaling"} <= set(endpoints)
    assert "secretsmanager" not in endpoints  # no node reads a secret
    private_route_table = example.one("aws:ec2/routeTable:RouteTable")
    assert endpoints["s3"].inputs["vpcEndpointType"] == "Gateway"
    assert endpoints["s3"].inputs["routeTableIds"] == [private_route_table.id]
    subnet_ids = sorted(subnet.id for subnet in example.of_type("aws:ec2/subnet:Subnet"))
    endpoint_group = example.one("aws:ec2/securityGroup:SecurityGroup", "network-endpoints")
    for service in INTERFACE_ENDPOINT_SERVICES:
        endpoint = endpoints[service]
        assert endpoint.inputs["serviceName"] == f"com.amazonaws.eu-west-1.{service}"
        assert endpoint.inputs["vpcEndpointType"] == "Interface" and endpoint.inputs["privateDnsEnabled"] is True
        assert sorted(endpoint.inputs["subnetIds"]) == subnet_ids
        assert endpoint.inputs["securityGroupIds"] == [endpoint_group.id]
    (https,) = [rule for rule in example.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
                if rule.inputs["securityGroupId"] == endpoint_group.id]
    assert (https.inputs["fromPort"], https.inputs["toPort"], https.inputs["cidrIpv4"]) == (443, 443, "10.64.0.0/16")


#: The agent's modules that call AWS from a node (daskfleet.aws): its source, its certificate (login), its group,
#: published environments, usage records, logs, the deny-list.
NODE_MODULES = ("source", "login", "workers", "published", "usagerecords", "cloudwatch", "nodefailures", "denylist")
#: Services a node names but never sends a request to from the VPC: its proof for the vendor is an STS request it
#: only signs (the vendor sends it); Secrets Manager serves only a stack from before the vendor, which still has its
#: endpoint until the `pulumi up` that brings the vendor.
NOT_SENT_FROM_NODES = {"sts", "secretsmanager"}


def test_every_aws_service_a_node_calls_has_an_endpoint_when_there_is_no_nat_gateway(example):
    """Without internet egress (the default), a service without an endpoint is unreachable from a node: a node that
    cannot invoke the certificate vendor never boots."""
    package = Path(daskfleet.aws.__file__).parent
    called = {service for module in NODE_MODULES
              for service in re.findall(r'client\("([a-z0-9-]+)"', (package / f"{module}.py").read_text())}
    endpoints = {e.inputs["serviceName"].rsplit(".", 1)[-1] for e in example.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert "lambda" in called and "ssm" in called  # the scan sees the agent's calls
    assert called - NOT_SENT_FROM_NODES <= endpoints


def test_every_private_subnet_routes_through_the_private_route_table(example):
    table = example.one("aws:ec2/routeTable:RouteTable")
    associations = example.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    assert sorted(a.inputs["subnetId"] for a in associations) == sorted(s.id for s in example.of_type("aws:ec2/subnet:Subnet"))
    assert {a.inputs["routeTableId"] for a in associations} == {table.id}


def test_a_nat_gateway_sits_alone_in_a_public_subnet(with_nat):
    gateway = with_nat.one("aws:ec2/natGateway:NatGateway")
    public = with_nat.one("aws:ec2/subnet:Subnet", "network-public")
    assert gateway.inputs["subnetId"] == public.id
    assert gateway.inputs["allocationId"] == with_nat.one("aws:ec2/eip:Eip").id
    routes = {route.name: route.inputs for route in with_nat.of_type("aws:ec2/route:Route")}
    assert routes["network-private-internet"]["natGatewayId"] == gateway.id
    assert routes["network-public-internet"]["gatewayId"] == with_nat.one("aws:ec2/internetGateway:InternetGateway").id
    private = [s for s in with_nat.of_type("aws:ec2/subnet:Subnet") if s.name != "network-public"]
    assert len(private) == 2 and all(s.inputs["mapPublicIpOnLaunch"] is False for s in with_nat.of_type("aws:ec2/subnet:Subnet"))
    cidrs = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in with_nat.of_type("aws:ec2/subnet:Subnet")]
    assert not any(a.overlaps(b) for i, a in enumerate(cidrs) for b in cidrs[i + 1:])
    launch_subnets = with_nat.one("aws:autoscaling/group:Group", "compute-worker").inputs["vpcZoneIdentifiers"]
    assert public.id not in launch_subnets


def test_an_adopted_network_is_used_as_it_is(adopted):
    for created in ("aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/vpcEndpoint:VpcEndpoint", "aws:ec2/natGateway:NatGateway"):
        assert adopted.of_type(created) == [], created
    tokens = [call["token"] for call in adopted.calls]
    assert tokens.count("aws:ec2/getSubnet:getSubnet") == 2 and "aws:ec2/getVpc:getVpc" in tokens
    for group in adopted.of_type("aws:autoscaling/group:Group"):
        assert sorted(group.inputs["vpcZoneIdentifiers"]) == sorted(ADOPTED_SUBNETS)
    for group in adopted.of_type("aws:ec2/securityGroup:SecurityGroup"):
        assert group.inputs["vpcId"] == ADOPTED_VPC


def test_adopted_subnets_in_one_zone_are_refused_before_anything_is_declared(evaluations):
    error = evaluations.failure("one-zone")
    assert error.kind == "StackConfigError"
    assert "subnetIds: subnet-0aaaaaaaaaaaaaaa1, subnet-0bbbbbbbbbbbbbbb2 all lie in eu-west-1a" in error.message
    assert "at least 2 availability zones" in error.message
    assert error.declared == ["pulumi:providers:aws"]


def test_the_cluster_has_its_own_private_zone_holding_the_scheduler_name(every_record):
    zone = every_record.one("aws:route53/zone:Zone")
    config = every_record.config
    dns_name = conventions.scheduler_dns_name(config["cluster"], config["dnsZone"])
    assert zone.inputs["name"] == f"{config['cluster']}.{config['dnsZone']}"
    assert dns_name == f"scheduler.{zone.inputs['name']}"
    (association,) = zone.inputs["vpcs"]
    vpc_id = config.get("vpcId") or every_record.one("aws:ec2/vpc:Vpc").id
    assert association["vpcId"] == vpc_id
    assert zone.inputs["forceDestroy"] is True  # the DNS updater's record must not block `pulumi destroy`
