"""The cluster's private network: an adopted VPC, or a created one with VPC endpoints instead of internet egress.

Either way the stack's own cluster gets its own private hosted zone holding its scheduler's
stable name (kept by the SchedulerDns component); the other clusters of a fleet keep theirs in
one shared zone, the ``dnsZone`` itself (Route 53 answers from the most specific zone, so the
two overlap without conflict, and each DNS updater may change its own record only). A created network has private subnets only (plus, with a NAT gateway, one
public subnet holding the gateway); nodes never get public addresses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from daskfleet import conventions

from .lookups import Account, NetworkFacts

#: Interface endpoints that let nodes without internet egress reach what they use: Session Manager (ssm,
#: ssmmessages, ec2messages; ssm also holds their specs), the certificate vendor (lambda: a node's certificate at
#: boot and its renewals), logs, and EC2/autoscaling. No node reads Secrets Manager.
INTERFACE_ENDPOINT_SERVICES: tuple[str, ...] = (
    "ssm", "ssmmessages", "ec2messages", "lambda", "logs", "ec2", "autoscaling",
)


@dataclass(frozen=True)
class NetworkArgs:
    cluster: str
    account: Account
    facts: NetworkFacts
    #: Adopt this VPC and these subnets instead of creating a network.
    vpc_id: str | None
    subnet_ids: tuple[str, ...]
    nat_gateway: bool
    #: The stack's own cluster's private hosted zone, e.g. analytics.daskfleet.internal; None when not a fleet member.
    zone_name: str | None
    #: The zone holding the other clusters' scheduler names (the dnsZone, e.g. daskfleet.internal); None if none.
    fleet_zone_name: str | None = None


def subnet_cidrs(vpc_cidr: str, count: int) -> list[str]:
    """``count`` equal, non-overlapping subnets of a VPC: a sixteenth of it each (a /20 of a /16)."""
    network = ipaddress.ip_network(vpc_cidr)
    return [str(subnet) for subnet in list(network.subnets(prefixlen_diff=4))[:count]]


class Network(pulumi.ComponentResource):
    """VPC, private subnets, endpoints (when created) and the cluster's private DNS zone."""

    vpc_id: pulumi.Output[str]
    vpc_cidr: str
    private_subnet_ids: list[pulumi.Output[str]]
    s3_prefix_list_id: str
    zone_id: pulumi.Output[str] | None
    fleet_zone_id: pulumi.Output[str] | None

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Network", name, None, opts)
        self._prefix = name
        self._args = args
        self._child = pulumi.ResourceOptions(parent=self)
        self.vpc_cidr = args.facts.vpc_cidr
        self.s3_prefix_list_id = args.facts.s3_prefix_list_id
        if args.vpc_id:
            self.vpc_id = pulumi.Output.from_input(args.vpc_id)
            self.private_subnet_ids = [pulumi.Output.from_input(subnet_id) for subnet_id in args.subnet_ids]
        else:
            self._create_network()
        self.zone_id = self.fleet_zone_id = None
        if args.zone_name:
            self.zone_id = self._zone(f"{name}-zone", args.zone_name, f"daskfleet cluster {args.cluster}: the scheduler's private name")
        if args.fleet_zone_name:
            self.fleet_zone_id = self._zone(f"{name}-fleet-zone", args.fleet_zone_name,
                                            f"daskfleet fleet {args.cluster}: its clusters' schedulers' private names")
        self.register_outputs({
            "vpc_id": self.vpc_id,
            "private_subnet_ids": self.private_subnet_ids,
            "zone_id": self.zone_id,
            "fleet_zone_id": self.fleet_zone_id,
        })

    def _zone(self, resource_name: str, zone_name: str, comment: str) -> pulumi.Output[str]:
        zone = aws.route53.Zone(
            resource_name,
            name=zone_name,
            comment=comment,
            vpcs=[aws.route53.ZoneVpcArgs(vpc_id=self.vpc_id)],
            # The DNS updaters write the schedulers' records outside Pulumi; destroying the stack removes them too.
            force_destroy=True,
            opts=self._child,
        )
        return zone.zone_id

    def _create_network(self) -> None:
        args, name = self._args, self._prefix
        zones = args.facts.availability_zones
        cidrs = subnet_cidrs(args.facts.vpc_cidr, len(zones) + 1)
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.facts.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={"Name": conventions.resource_name(args.cluster)},
            opts=self._child,
        )
        self.vpc_id = vpc.id
        routes = aws.ec2.RouteTable(
            f"{name}-private", vpc_id=vpc.id, tags={"Name": conventions.resource_name(args.cluster, "private")},
            opts=self._child,
        )
        subnets = []
        for index, (zone, cidr) in enumerate(zip(zones, cidrs)):
            subnet = aws.ec2.Subnet(
                f"{name}-private-{index}",
                vpc_id=vpc.id,
                availability_zone=zone,
                cidr_block=cidr,
                map_public_ip_on_launch=False,
                tags={"Name": conventions.resource_name(args.cluster, "private", zone)},
                opts=self._child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{index}", subnet_id=subnet.id, route_table_id=routes.id, opts=self._child
            )
            subnets.append(subnet)
        self.private_subnet_ids = [subnet.id for subnet in subnets]
        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=args.account.service_name("s3"),
            vpc_endpoint_type="Gateway",
            route_table_ids=[routes.id],
            tags={"Name": conventions.resource_name(args.cluster, "s3")},
            opts=self._child,
        )
        self._create_interface_endpoints(vpc)
        if args.nat_gateway:
            self._create_nat_gateway(vpc, routes, zones[0], cidrs[len(zones)])

    def _create_interface_endpoints(self, vpc: aws.ec2.Vpc) -> None:
        args, name = self._args, self._prefix
        endpoints = aws.ec2.SecurityGroup(
            f"{name}-endpoints",
            vpc_id=vpc.id,
            description=f"daskfleet {args.cluster}: HTTPS to the VPC endpoints from inside the VPC",
            tags={"Name": conventions.resource_name(args.cluster, "endpoints")},
            opts=self._child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-endpoints-https",
            security_group_id=endpoints.id,
            description="HTTPS from the VPC",
            ip_protocol="tcp",
            from_port=conventions.HTTPS_PORT,
            to_port=conventions.HTTPS_PORT,
            cidr_ipv4=args.facts.vpc_cidr,
            opts=self._child,
        )
        for service in INTERFACE_ENDPOINT_SERVICES:
            aws.ec2.VpcEndpoint(
                f"{name}-{service}",
                vpc_id=vpc.id,
                service_name=args.account.service_name(service),
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=self.private_subnet_ids,
                security_group_ids=[endpoints.id],
                tags={"Name": conventions.resource_name(args.cluster, service)},
                opts=self._child,
            )

    def _create_nat_gateway(self, vpc: aws.ec2.Vpc, private_routes: aws.ec2.RouteTable, zone: str, cidr: str) -> None:
        """One NAT gateway in a public subnet that holds nothing else; nodes stay in the private subnets."""
        args, name = self._args, self._prefix
        gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags={"Name": conventions.resource_name(args.cluster)}, opts=self._child
        )
        public = aws.ec2.Subnet(
            f"{name}-public",
            vpc_id=vpc.id,
            availability_zone=zone,
            cidr_block=cidr,
            map_public_ip_on_launch=False,
            tags={"Name": conventions.resource_name(args.cluster, "nat")},
            opts=self._child,
        )
        public_routes = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=vpc.id, tags={"Name": conventions.resource_name(args.cluster, "public")},
            opts=self._child,
        )
        aws.ec2.Route(
            f"{name}-public-internet",
            route_table_id=public_routes.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=gateway.id,
            opts=self._child,
        )
        aws.ec2.RouteTableAssociation(
            f"{name}-public", subnet_id=public.id, route_table_id=public_routes.id, opts=self._child
        )
        address = aws.ec2.Eip(
            f"{name}-nat", domain="vpc", tags={"Name": conventions.resource_name(args.cluster, "nat")}, opts=self._child,
        )
        nat = aws.ec2.NatGateway(
            f"{name}-nat",
            subnet_id=public.id,
            allocation_id=address.id,
            tags={"Name": conventions.resource_name(args.cluster)},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
        )
        aws.ec2.Route(
            f"{name}-private-internet",
            route_table_id=private_routes.id,
            destination_cidr_block="0.0.0.0/0",
            nat_gateway_id=nat.id,
            opts=self._child,
        )
