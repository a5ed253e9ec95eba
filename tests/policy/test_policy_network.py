"""Security-group ingress: no world-open source, nothing that reaches SSH, in every way a rule can be written."""

import pytest
from policy.harness import UNKNOWN, resource_violations

RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
GROUP = "aws:ec2/securityGroup:SecurityGroup"
LEGACY_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"

WORLD = "no-world-open-ingress"
SSH = "no-ssh-ingress"


def rule(**props):
    return {"securityGroupId": "sg-0123", "ipProtocol": "tcp", "fromPort": 8786, "toPort": 8786, **props}


def group(*ingress, egress=()):
    return {"vpcId": "vpc-0123", "description": "scheduler", "ingress": list(ingress), "egress": list(egress)}


def block(**props):
    return {"protocol": "tcp", "fromPort": 8786, "toPort": 8786, **props}


@pytest.mark.parametrize(
    "props",
    [
        rule(cidrIpv4="10.20.0.0/16"),
        rule(cidrIpv6="2001:db8::/56"),
        rule(referencedSecurityGroupId="sg-0worker"),
        rule(prefixListId="pl-0123"),
        rule(cidrIpv4=UNKNOWN),  # preview: checked again with the known value before creation
    ],
)
def test_rules_from_named_sources_pass(props):
    assert resource_violations(WORLD, RULE, props) == []


@pytest.mark.parametrize("source", [{"cidrIpv4": "0.0.0.0/0"}, {"cidrIpv6": "::/0"}, {"cidrIpv4": "0.0.0.0/00"}])
def test_a_world_open_rule_fails(source):
    [message] = resource_violations(WORLD, RULE, rule(**source))
    assert "tcp 8786-8786 from" in message and "never the whole internet" in message


def test_inline_ingress_of_a_security_group_is_checked_block_by_block():
    props = group(block(cidrBlocks=["10.0.0.0/16"]), block(cidrBlocks=["10.1.0.0/16", "0.0.0.0/0"], ipv6CidrBlocks=["::/0"]))
    messages = resource_violations(WORLD, GROUP, props)
    assert len(messages) == 2
    assert all(message.startswith("ingress[1] allows tcp 8786-8786 from") for message in messages)


def test_world_open_egress_is_not_ingress():
    anywhere = block(protocol="-1", fromPort=0, toPort=0, cidrBlocks=["0.0.0.0/0"])
    props = group(block(securityGroups=["sg-0worker"]), egress=[anywhere])
    assert resource_violations(WORLD, GROUP, props) == []


@pytest.mark.parametrize(("kind", "fails"), [("ingress", True), ("egress", False)])
def test_the_legacy_rule_resource_is_checked_when_it_is_ingress(kind, fails):
    props = {"type": kind, "securityGroupId": "sg-0123", **block(cidrBlocks=["0.0.0.0/0"])}
    assert bool(resource_violations(WORLD, LEGACY_RULE, props)) is fails


@pytest.mark.parametrize(
    ("protocol", "ports"),
    [("tcp", (22, 22)), ("tcp", (0, 65535)), ("6", (20, 30)), ("-1", (None, None)), ("all", (0, 0)), ("tcp", (None, None))],
)
def test_a_rule_reaching_port_22_fails(protocol, ports):
    props = rule(ipProtocol=protocol, referencedSecurityGroupId="sg-0admin", fromPort=ports[0], toPort=ports[1])
    props = {key: value for key, value in props.items() if value is not None}
    [message] = resource_violations(SSH, RULE, props)
    assert "includes SSH (port 22)" in message and "Session Manager" in message


def test_ports_arrive_as_floats_from_the_wire():
    assert resource_violations(SSH, RULE, rule(fromPort=22.0, toPort=22.0, cidrIpv4="10.0.0.0/8"))


@pytest.mark.parametrize(
    "props",
    [
        rule(fromPort=8786, toPort=8787),
        rule(fromPort=23, toPort=1024),
        rule(ipProtocol="udp", fromPort=22, toPort=22),
        rule(ipProtocol="icmp", fromPort=-1, toPort=-1),
        rule(fromPort=UNKNOWN, toPort=UNKNOWN),
    ],
)
def test_rules_away_from_port_22_pass(props):
    assert resource_violations(SSH, RULE, props) == []


def test_an_all_traffic_block_inside_a_security_group_reaches_ssh():
    props = group(block(), block(protocol="-1", fromPort=0, toPort=0, self=True))
    [message] = resource_violations(SSH, GROUP, props)
    assert message.startswith("ingress[1] allows all traffic")
