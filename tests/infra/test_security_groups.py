"""Security groups: who may open which port on the scheduler and the workers, and where nodes may go."""

from __future__ import annotations

import pytest

from infra.scenarios import ADOPTED_VPC_CIDR, CLIENT_SECURITY_GROUP

from daskfleet import conventions
from daskfleet_infra.security_groups import SecurityGroupsArgs, plan_rules

INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SCHEDULER, DASHBOARD, WORKER = conventions.SCHEDULER_PORT, conventions.DASHBOARD_PORT, conventions.WORKER_PORT


def args(**changes) -> SecurityGroupsArgs:
    base = dict(
        cluster="analytics", vpc_id="vpc-1", vpc_cidr="10.64.0.0/16", s3_prefix_list_id="pl-1",
        client_cidrs=("10.100.0.0/16",), client_security_group_ids=("sg-0123456789abcdef0",), internet_egress=False,
    )
    return SecurityGroupsArgs(**{**base, **changes})


def sources(rules, group, port, direction="ingress"):
    """Who may reach ``group`` on ``port``: CIDRs, peer groups ("@worker") and other groups' ids."""
    found = set()
    for rule in rules:
        if (rule.group, rule.port, rule.direction) == (group, port, direction):
            found.add(rule.cidr or (f"@{rule.peer}" if rule.peer else rule.security_group_id or rule.prefix_list_id))
    return found


def test_the_scheduler_port_admits_workers_and_configured_clients_only():
    rules = plan_rules(args())
    assert sources(rules, "scheduler", SCHEDULER) == {"@worker", "10.100.0.0/16", "sg-0123456789abcdef0"}


def test_the_dashboard_admits_configured_clients_only():
    rules = plan_rules(args())
    assert sources(rules, "scheduler", DASHBOARD) == {"10.100.0.0/16", "sg-0123456789abcdef0"}
    assert sources(plan_rules(args(client_cidrs=(), client_security_group_ids=())), "scheduler", DASHBOARD) == set()


def test_the_worker_port_admits_the_scheduler_and_workers_only():
    assert sources(plan_rules(args()), "worker", WORKER) == {"@scheduler", "@worker"}


def test_nothing_else_is_open():
    opened = {(rule.group, rule.port) for rule in plan_rules(args()) if rule.direction == "ingress"}
    assert opened == {("scheduler", SCHEDULER), ("scheduler", DASHBOARD), ("worker", WORKER)}


def test_egress_stays_inside_the_vpc_and_s3_unless_there_is_a_nat_gateway():
    for group in ("scheduler", "worker"):
        assert sources(plan_rules(args()), group, 443, "egress") == {"10.64.0.0/16", "pl-1"}
        assert sources(plan_rules(args(internet_egress=True)), group, 443, "egress") == {"10.64.0.0/16", "pl-1", "0.0.0.0/0"}
    assert sources(plan_rules(args()), "worker", SCHEDULER, "egress") == {"@scheduler"}
    assert sources(plan_rules(args()), "scheduler", WORKER, "egress") == {"@worker"}


def test_rule_keys_are_stable_and_unique():
    rules = plan_rules(args(client_cidrs=("10.100.0.0/16", "2001:db8::/32")))
    keys = [rule.key for rule in rules]
    assert len(keys) == len(set(keys))
    assert "scheduler-from-2001-db8-32" in keys  # from the CIDR itself: reordering the list changes nothing


# --- as declared -----------------------------------------------------------------------------


def declared_rules(record, type_):
    groups = {g.id: g.name.removeprefix("security-groups-") for g in record.of_type("aws:ec2/securityGroup:SecurityGroup")}
    return [(groups.get(r.inputs["securityGroupId"], r.inputs["securityGroupId"]), r.inputs, groups) for r in record.of_type(type_)]


def test_no_ingress_rule_anywhere_is_world_open_or_ssh(every_record):
    for _, rule, _ in declared_rules(every_record, INGRESS):
        assert rule.get("cidrIpv4") not in ("0.0.0.0/0",) and rule.get("cidrIpv6") != "::/0"
        assert rule["ipProtocol"] == "tcp" and rule["fromPort"] == rule["toPort"]
        assert rule["fromPort"] != 22
    for group in every_record.of_type("aws:ec2/securityGroup:SecurityGroup"):
        assert not group.inputs.get("ingress") and not group.inputs.get("egress"), "rules are separate resources"


def test_declared_ingress_matches_the_plan(adopted):
    seen = {}
    for group, rule, groups in declared_rules(adopted, INGRESS):
        source = rule.get("cidrIpv4") or rule.get("cidrIpv6") or groups.get(rule.get("referencedSecurityGroupId")) or rule.get("referencedSecurityGroupId")
        seen.setdefault((group, rule["fromPort"]), set()).add(source)
    assert seen == {
        ("scheduler", SCHEDULER): {"worker", "10.100.0.0/16", "2001:db8:1234::/48", CLIENT_SECURITY_GROUP},
        ("scheduler", DASHBOARD): {"10.100.0.0/16", "2001:db8:1234::/48", CLIENT_SECURITY_GROUP},
        ("worker", WORKER): {"scheduler", "worker"},
    }
    ipv6 = [rule for _, rule, _ in declared_rules(adopted, INGRESS) if rule.get("cidrIpv6")]
    assert ipv6 and all("cidrIpv4" not in rule for rule in ipv6)


@pytest.mark.parametrize("scenario", ["example", "adopted"])
def test_declared_egress_goes_to_the_vpc_s3_and_peers_and_to_the_internet_only_with_nat(evaluations, scenario):
    record = evaluations.record(scenario)
    vpc_cidr = ADOPTED_VPC_CIDR if scenario == "adopted" else "10.64.0.0/16"
    destinations = set()
    for group, rule, groups in declared_rules(record, EGRESS):
        destinations.add(rule.get("cidrIpv4") or rule.get("prefixListId") or f"@{groups[rule['referencedSecurityGroupId']]}")
    expected = {vpc_cidr, "pl-6da54004", "@scheduler", "@worker"}
    assert destinations == (expected | {"0.0.0.0/0"} if record.config["natGateway"] else expected)
