"""The configurations the program is evaluated under in these tests (see conftest.Evaluations)."""

from __future__ import annotations

from typing import Any

from infra.program import example_config

ADOPTED_VPC = "vpc-0a1b2c3d4e5f60718"
ADOPTED_VPC_CIDR = "10.20.0.0/16"
ADOPTED_SUBNETS = {
    "subnet-0aaaaaaaaaaaaaaa1": {"vpcId": ADOPTED_VPC, "availabilityZone": "eu-west-1a"},
    "subnet-0bbbbbbbbbbbbbbb2": {"vpcId": ADOPTED_VPC, "availabilityZone": "eu-west-1b"},
}
ADOPTED_VPCS = {ADOPTED_VPC: {"cidrBlock": ADOPTED_VPC_CIDR, "enableDnsSupport": True, "enableDnsHostnames": True}}
OVERRIDE_AMI = "ami-0fedcba9876543210"
CLIENT_SECURITY_GROUP = "sg-0123456789abcdef0"
OPERATOR = "arn:aws:iam::123456789012:role/platform-oncall"


#: The adopted stack's Prometheus: the one principal that may get a metrics certificate.
SCRAPER = "arn:aws:iam::123456789012:role/prometheus"


def adopted_config() -> dict[str, Any]:
    """A stack adopting a shared network, ephemeral, with an explicit AMI, every optional list set, workers of a
    set size and clients of other package versions let in with a warning."""
    return {
        **example_config(),
        "vpcId": ADOPTED_VPC,
        "subnetIds": list(ADOPTED_SUBNETS),
        "natGateway": True,
        "ephemeral": True,
        "expires": "2031-03-31",
        "amiId": OVERRIDE_AMI,
        "clientCidrs": ["10.100.0.0/16", "2001:db8:1234::/48"],
        "clientSecurityGroupIds": [CLIENT_SECURITY_GROUP],
        "extraReadBuckets": ["shared-reference-data"],
        "operatorPrincipalArns": [OPERATOR],
        "metricsScrapers": [SCRAPER],
        "workerMaxSize": 40,
        "workerOnDemandBase": 2,
        "workerOnDemandPercentAboveBase": 25,
        "workerThreads": 2,
        "workerMemoryLimit": "12GiB",
        "clientVersionPolicy": "warn",
    }


ADOPTED_KWARGS = {
    "vpcs": ADOPTED_VPCS,
    "subnets": ADOPTED_SUBNETS,
    "images": [{"id": OVERRIDE_AMI, "tags": {}, "root_device_name": "/dev/sda1", "owner": "999999999999"}],
}
#: The team cluster's own data: a shared prefix it writes, and a prefix of another bucket it reads.
TEAM_DATA = [{"prefix": "shared/team/", "access": "read-write"},
             {"bucket": "lab-raw-data", "prefix": "2024/", "access": "read"}]


def fleet_config() -> dict[str, Any]:
    """A fleet: alice's and bob's private clusters, and a team cluster alice administers and bob is a member of.

    Every cluster reads shared/reference/ (the stack-wide data); the team cluster declares its own data and a
    smaller worker group. The stack's own cluster (analytics) is not among them: it names the shared resources.
    """
    return {
        **example_config(),
        "privateClusters": True,
        "data": [{"prefix": "shared/reference/"}],
        "clusters": {"team": {"members": ["bob"], "admins": ["alice"], "data": TEAM_DATA, "workerMaxSize": 4}},
    }


ONE_ZONE_SUBNETS = {subnet: {**facts, "availabilityZone": "eu-west-1a"} for subnet, facts in ADOPTED_SUBNETS.items()}

#: name -> (config, evaluate_program keyword arguments)
SCENARIOS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "example": (example_config(), {}),
    "adopted": (adopted_config(), ADOPTED_KWARGS),
    "nat": ({**example_config(), "natGateway": True}, {}),
    "no-ami": (example_config(), {"images": []}),
    "one-zone": (adopted_config(), {**ADOPTED_KWARGS, "subnets": ONE_ZONE_SUBNETS}),
    "world-open": ({**example_config(), "clientCidrs": ["10.100.0.0/16", "0.0.0.0/0"]}, {}),
    "misspelt-key": ({**example_config(), "clientCidr": ["10.0.0.0/8"]}, {}),
    "fleet": (fleet_config(), {}),
}
#: Evaluated only in a test process that asks for them (the others start together on first use).
ON_DEMAND = frozenset({"fleet"})
