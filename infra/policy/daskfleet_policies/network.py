"""Security-group ingress: nothing open to the world, nothing that reaches SSH."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import tokens
from .properties import UNKNOWN, as_int, as_list, as_mapping, is_unknown

SSH_PORT = 22
_ALL_PROTOCOLS = frozenset({"-1", "all"})
_TCP = frozenset({"tcp", "6"})


@dataclass(frozen=True)
class IngressRule:
    """One ingress permission, whichever resource declared it."""

    where: str
    protocol: Any
    from_port: Any
    to_port: Any
    sources: tuple[Any, ...]

    def reaches_port(self, port: int) -> bool | None:
        """Whether traffic to ``port`` over TCP is allowed; None when not known yet."""
        protocol = _protocol_name(self.protocol)
        if protocol is None:
            return None
        if protocol in _ALL_PROTOCOLS:
            return True
        if protocol not in _TCP:
            return False
        if is_unknown(self.from_port) or is_unknown(self.to_port):
            return None
        low, high = as_int(self.from_port), as_int(self.to_port)
        if low is None or high is None:  # a TCP rule without ports is read as every port
            return True
        return low <= port <= high

    def describe_ports(self) -> str:
        protocol = _protocol_name(self.protocol) or "?"
        if protocol in _ALL_PROTOCOLS:
            return "all traffic"
        return f"{protocol} {as_int(self.from_port)}-{as_int(self.to_port)}"


def _protocol_name(protocol: Any) -> str | None:
    if protocol is None or is_unknown(protocol):
        return None
    if isinstance(protocol, float) and protocol.is_integer():
        protocol = int(protocol)
    return str(protocol).strip().lower()


def ingress_rules(resource_type: str, props: Mapping[str, Any]) -> Iterator[IngressRule]:
    """Every ingress permission a resource declares, in one shape."""
    if resource_type == tokens.SECURITY_GROUP_INGRESS_RULE:
        yield IngressRule(
            "rule",
            props.get("ipProtocol"),
            props.get("fromPort"),
            props.get("toPort"),
            tuple(source for source in (props.get("cidrIpv4"), props.get("cidrIpv6")) if source is not None),
        )
    elif resource_type == tokens.SECURITY_GROUP_RULE:
        if props.get("type") in ("ingress", UNKNOWN):
            yield _rule_from_block("rule", props)
    elif resource_type in (tokens.SECURITY_GROUP, tokens.DEFAULT_SECURITY_GROUP):
        for index, block in enumerate(as_list(props.get("ingress"))):
            yield _rule_from_block(f"ingress[{index}]", as_mapping(block))


def _rule_from_block(where: str, block: Mapping[str, Any]) -> IngressRule:
    sources = as_list(block.get("cidrBlocks")) + as_list(block.get("ipv6CidrBlocks"))
    return IngressRule(where, block.get("protocol"), block.get("fromPort"), block.get("toPort"), tuple(sources))


def is_world_open(cidr: Any) -> bool:
    """True for a CIDR that spans every address of its family (0.0.0.0/0, ::/0)."""
    if not isinstance(cidr, str):
        return False
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


def world_open_ingress(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Messages for each world-open source of ingress."""
    return [
        f"{rule.where} allows {rule.describe_ports()} from {source}: ingress must name client CIDRs "
        "or security groups, never the whole internet"
        for rule in ingress_rules(resource_type, props)
        for source in rule.sources
        if is_world_open(source)
    ]


def ssh_ingress(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Messages for each ingress permission that reaches TCP port 22."""
    return [
        f"{rule.where} allows {rule.describe_ports()}, which includes SSH (port {SSH_PORT}): "
        "no SSH anywhere; reach nodes through SSM Session Manager"
        for rule in ingress_rules(resource_type, props)
        if rule.reaches_port(SSH_PORT)
    ]
