"""Who may talk to the scheduler and workers: decided by ``plan_rules`` (pure), declared by ``SecurityGroups``.

Ingress: the scheduler port from the workers and the configured clients, the dashboard from
the clients only, the worker port from the scheduler and workers only; nothing else (no 22).
Egress: HTTPS into the VPC (its endpoints) and to S3's prefix list, Dask ports between the
groups, and HTTPS to the internet only when the stack routes through a NAT gateway.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_aws as aws

from daskfleet import conventions

Group = Literal["scheduler", "worker"]


@dataclass(frozen=True)
class Rule:
    """One security-group rule; exactly one of cidr, peer, security_group_id, prefix_list_id names the other side."""

    key: str
    group: Group
    direction: Literal["ingress", "egress"]
    port: int
    description: str
    cidr: str | None = None
    peer: Group | None = None
    security_group_id: str | None = None
    prefix_list_id: str | None = None


@dataclass(frozen=True)
class SecurityGroupsArgs:
    cluster: str
    vpc_id: pulumi.Input[str]
    vpc_cidr: str
    s3_prefix_list_id: str
    client_cidrs: tuple[str, ...]
    client_security_group_ids: tuple[str, ...]
    internet_egress: bool


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def plan_rules(args: SecurityGroupsArgs) -> list[Rule]:
    """Every rule of both groups, in a stable order with stable keys."""
    scheduler, dashboard, worker = conventions.SCHEDULER_PORT, conventions.DASHBOARD_PORT, conventions.WORKER_PORT
    https = conventions.HTTPS_PORT
    rules = [
        Rule("scheduler-from-workers", "scheduler", "ingress", scheduler, "workers register with the scheduler", peer="worker"),
        Rule("worker-from-scheduler", "worker", "ingress", worker, "the scheduler reaches its workers", peer="scheduler"),
        Rule("worker-from-workers", "worker", "ingress", worker, "workers exchange data", peer="worker"),
    ]
    for cidr in args.client_cidrs:
        rules += [
            Rule(f"scheduler-from-{_slug(cidr)}", "scheduler", "ingress", scheduler, f"clients in {cidr}", cidr=cidr),
            Rule(f"dashboard-from-{_slug(cidr)}", "scheduler", "ingress", dashboard, f"dashboard for {cidr}", cidr=cidr),
        ]
    for group_id in args.client_security_group_ids:
        rules += [
            Rule(f"scheduler-from-{group_id}", "scheduler", "ingress", scheduler, f"clients in {group_id}", security_group_id=group_id),
            Rule(f"dashboard-from-{group_id}", "scheduler", "ingress", dashboard, f"dashboard for {group_id}", security_group_id=group_id),
        ]
    rules += [
        Rule("worker-to-scheduler", "worker", "egress", scheduler, "register with the scheduler", peer="scheduler"),
        Rule("worker-to-workers", "worker", "egress", worker, "exchange data with workers", peer="worker"),
        Rule("scheduler-to-workers", "scheduler", "egress", worker, "reach the workers", peer="worker"),
    ]
    for group in ("scheduler", "worker"):
        rules += [
            Rule(f"{group}-to-vpc-https", group, "egress", https, "AWS APIs through the VPC endpoints", cidr=args.vpc_cidr),
            Rule(f"{group}-to-s3", group, "egress", https, "S3 through its gateway endpoint", prefix_list_id=args.s3_prefix_list_id),
        ]
        if args.internet_egress:
            rules.append(Rule(f"{group}-to-internet-https", group, "egress", https, "HTTPS through the NAT gateway", cidr="0.0.0.0/0"))
    return rules


class SecurityGroups(pulumi.ComponentResource):
    """The scheduler's and the workers' security groups and every rule between them."""

    scheduler_id: pulumi.Output[str]
    worker_id: pulumi.Output[str]

    def __init__(self, name: str, args: SecurityGroupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:SecurityGroups", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        groups = {
            group: aws.ec2.SecurityGroup(
                f"{name}-{group}",
                vpc_id=args.vpc_id,
                description=f"daskfleet {args.cluster} {group} nodes",
                tags={"Name": conventions.resource_name(args.cluster, group), conventions.TAG_ROLE: group},
                opts=child,
            )
            for group in ("scheduler", "worker")
        }
        for rule in plan_rules(args):
            declare = aws.vpc.SecurityGroupIngressRule if rule.direction == "ingress" else aws.vpc.SecurityGroupEgressRule
            declare(
                f"{name}-{rule.key}",
                security_group_id=groups[rule.group].id,
                description=rule.description,
                ip_protocol="tcp",
                from_port=rule.port,
                to_port=rule.port,
                cidr_ipv4=rule.cidr if rule.cidr and ipaddress.ip_network(rule.cidr).version == 4 else None,
                cidr_ipv6=rule.cidr if rule.cidr and ipaddress.ip_network(rule.cidr).version == 6 else None,
                referenced_security_group_id=groups[rule.peer].id if rule.peer else rule.security_group_id,
                prefix_list_id=rule.prefix_list_id,
                opts=child,
            )
        self.scheduler_id = groups["scheduler"].id
        self.worker_id = groups["worker"].id
        self.register_outputs({"scheduler_id": self.scheduler_id, "worker_id": self.worker_id})
