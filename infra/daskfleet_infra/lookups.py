"""What the program must know about the AWS account before it declares anything.

Every lookup runs before the first real resource is declared, so a stack whose image or
network does not exist stops with one clear error and leaves nothing half-created.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from daskfleet import conventions
from daskfleet.environments.lockfile import parse_lock
from daskfleet.errors import DaskfleetError

from .config import StackConfig, StackConfigError


@dataclass(frozen=True)
class Account:
    """The account and partition the provider works in, and who is deploying."""

    account_id: str
    partition: str
    dns_suffix: str
    region: str
    #: The deploying IAM principal (a role's ARN for an assumed role): it may read the TLS secrets back.
    deployer_arn: str

    def arn(self, service: str, resource: str, *, regional: bool = True, in_account: bool = True) -> str:
        region = self.region if regional else ""
        account = self.account_id if in_account else ""
        return f"arn:{self.partition}:{service}:{region}:{account}:{resource}"

    def group_arn(self, cluster: str, role: str) -> str:
        """The ARN of one of the cluster's auto scaling groups (any group id), for policies scoped to it."""
        return self.arn("autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{conventions.node_group_name(cluster, role)}")

    def service_name(self, service: str) -> str:
        """A regional VPC endpoint service name, e.g. com.amazonaws.eu-west-1.ssm."""
        return f"com.amazonaws.{self.region}.{service}"


@dataclass(frozen=True)
class NetworkFacts:
    """The network the nodes run in: an adopted VPC's facts, or where a created one goes."""

    vpc_cidr: str
    availability_zones: tuple[str, ...]
    s3_prefix_list_id: str


@dataclass(frozen=True)
class Image:
    """The node AMI, the device its root volume is attached as, and its architecture."""

    ami_id: str
    root_device_name: str
    architecture: str = "x86_64"

    @property
    def platform(self) -> str:
        """The conda platform of the image's environment."""
        return {"arm64": "linux-aarch64"}.get(self.architecture, "linux-64")


def look_up_account(config: StackConfig, invoke: pulumi.InvokeOptions) -> Account:
    caller = aws.get_caller_identity(opts=invoke)
    partition = aws.get_partition(opts=invoke)
    context = aws.iam.get_session_context(arn=caller.arn, opts=invoke)
    return Account(
        account_id=caller.account_id,
        partition=partition.partition,
        dns_suffix=partition.dns_suffix,
        region=config.region,
        deployer_arn=context.issuer_arn,
    )


def look_up_network(config: StackConfig, account: Account, invoke: pulumi.InvokeOptions) -> NetworkFacts:
    """Check an adopted VPC and its subnets, or pick the availability zones of a new one."""
    prefix_list = aws.ec2.get_prefix_list(name=account.service_name("s3"), opts=invoke)
    if not config.adopts_network:
        zones = aws.get_availability_zones(state="available", opts=invoke).names
        if len(zones) < config.availability_zone_count:
            raise StackConfigError(
                f"availabilityZoneCount: {config.availability_zone_count} is more than the "
                f"{len(zones)} availability zones available in {config.region} ({', '.join(zones)})"
            )
        return NetworkFacts(config.vpc_cidr, tuple(sorted(zones)[: config.availability_zone_count]), prefix_list.id)
    vpc = aws.ec2.get_vpc(id=config.vpc_id, opts=invoke)
    if not (vpc.enable_dns_support and vpc.enable_dns_hostnames):
        raise StackConfigError(
            f"vpcId: {config.vpc_id} has DNS support or DNS hostnames turned off; the cluster's private "
            "DNS name and the VPC endpoints' private DNS need both on"
        )
    zones = []
    for subnet_id in config.subnet_ids:
        subnet = aws.ec2.get_subnet(id=subnet_id, opts=invoke)
        if subnet.vpc_id != config.vpc_id:
            raise StackConfigError(f"subnetIds: {subnet_id} belongs to {subnet.vpc_id}, not to vpcId {config.vpc_id}")
        zones.append(subnet.availability_zone)
    if len(set(zones)) < 2:
        raise StackConfigError(
            f"subnetIds: {', '.join(config.subnet_ids)} all lie in {zones[0]}; give subnets in at least 2 availability zones"
        )
    return NetworkFacts(vpc.cidr_block, tuple(zones), prefix_list.id)


def look_up_image(config: StackConfig, invoke: pulumi.InvokeOptions) -> Image:
    """The explicitly configured AMI, or the newest own AMI tagged with the environment fingerprint."""
    if config.ami_id:
        ami = aws.ec2.get_ami(filters=[{"name": "image-id", "values": [config.ami_id]}], most_recent=True, opts=invoke)
        return Image(ami.id, ami.root_device_name, ami.architecture)
    tag_filter = {"name": f"tag:{conventions.TAG_ENV_FINGERPRINT}", "values": [config.environment_fingerprint]}
    found = aws.ec2.get_ami_ids(owners=["self"], filters=[tag_filter], opts=invoke).ids
    if not found:
        raise StackConfigError(
            f"environmentFingerprint: no AMI owned by this account in {config.region} is tagged "
            f"{conventions.TAG_ENV_FINGERPRINT}={config.environment_fingerprint}; build it with "
            f"`make image ENV=<env> REGION={config.region}` (the walk from `make env` to `make up` is in images/README.md), "
            "or set amiId to an image to use"
        )
    ami = aws.ec2.get_ami(owners=["self"], filters=[tag_filter], most_recent=True, opts=invoke)
    return Image(ami.id, ami.root_device_name, ami.architecture)


def look_up_image_lock(config: StackConfig, image: Image) -> tuple[str, str] | None:
    """(bucket key, text) of the lock the image was built from, checked against environmentFingerprint; None unset."""
    if not config.environment_lock:
        return None
    path = Path(config.environment_lock)
    try:
        text = path.read_text()
    except OSError as exc:
        raise StackConfigError(f"environmentLock: cannot read {path} ({exc.strerror}); give the lock the image was built from")
    try:
        fingerprint = parse_lock(text, path).fingerprint(image.platform)
    except DaskfleetError as exc:
        raise StackConfigError(f"environmentLock: {exc.message}") from None
    if fingerprint != config.environment_fingerprint:
        raise StackConfigError(
            f"environmentLock: {path} gives {fingerprint} for {image.platform}, but environmentFingerprint is "
            f"{config.environment_fingerprint}; give the lock the image was built from"
        )
    return conventions.image_lock_object_key(fingerprint), text
