"""The stack's configuration: one typed schema, read from Pulumi config and validated before anything is declared.

A stack declares a fleet (``resolve_fleet``): the clusters of ``clusters`` (or, without it, the
stack's own ``cluster`` of every user) and, with ``privateClusters``, one per user. Each cluster's
settings are a StackConfig of its own (the stack's keys with its entry's on top), validated here
too, so an error names ``clusters.<name>`` and the key.

Pulumi hands every value over as text (lists as JSON); ``parse_stack_config`` decodes and
validates that text and raises one ``StackConfigError`` whose message names each bad key,
the value it got and what the key accepts. ``Pulumi.yaml`` declares the same keys with the
same descriptions and defaults (a test holds the two together).
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal


import pulumi
from pulumi.runtime import config as pulumi_runtime_config
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic.alias_generators import to_camel

from daskfleet import conventions
from daskfleet.errors import DaskfleetError, ExitCode
from daskfleet.node.sizing import check_memory_limit
from daskfleet.scaling import policy as scaling_policy
from daskfleet.usage.policy import (
    EVERYONE, IDLE, UsagePolicy, parse_limit_entry, parse_price_entry, policy_from_entries,
)

PROJECT = "daskfleet"

#: The retention periods CloudWatch Logs accepts.
LOG_RETENTION_DAYS: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)


class StackConfigError(DaskfleetError, pulumi.RunError):
    """Wrong, missing or unknown configuration keys; Pulumi prints it as one line, without a traceback.

    ``problems`` holds one sentence per bad key, each starting with the key.
    """

    def __init__(self, *problems: str):
        super().__init__(f"{PROJECT} stack configuration: " + "; ".join(problems), ExitCode.CONFIG)
        self.problems = list(problems)


# --- item types -------------------------------------------------------------------------------


def _cidr(text: str) -> str:
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"not a CIDR ({exc})") from None
    if network.prefixlen == 0:
        raise ValueError("a world-open source (0.0.0.0/0 or ::/0) is never allowed for ingress")
    return str(network)


def _user_entry(text: str) -> str:
    name, sep, arn = text.partition("=")
    if not sep:
        raise ValueError("not NAME=IAM_PRINCIPAL_ARN")
    if not re.fullmatch(conventions.USER_NAME_PATTERN, name):
        raise ValueError(f"user name {name!r} does not match {conventions.USER_NAME_PATTERN}")
    if not re.fullmatch(PRINCIPAL_ARN_PATTERN, arn):
        raise ValueError(f"{arn!r} is not an IAM user or role ARN")
    return text


def _date(text: str) -> str:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError("not a date YYYY-MM-DD") from None
    return text


def _distinct(values: list[Any]) -> list[Any]:
    duplicates = sorted({str(value) for value in values if values.count(value) > 1})
    if duplicates:
        raise ValueError(f"listed more than once: {', '.join(duplicates)}")
    return values


def _entry(parse):
    """An item validator from a daskfleet.usage.policy parser (its message names the key; pydantic names the item)."""

    def check(text: str) -> str:
        try:
            parse(text, "")
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix(": ")) from None
        return text

    return check


def _memory_limit(text: str) -> str:
    try:
        return check_memory_limit(text)
    except ValueError:
        raise ValueError("not a memory limit") from None


def _log_retention(days: int) -> int:
    if days not in LOG_RETENTION_DAYS:
        raise ValueError("not a retention period CloudWatch Logs accepts")
    return days


#: IAM users and roles (with their path): the principals secret policies can name and aws:PrincipalArn reports.
PRINCIPAL_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::\d{12}:(user|role)/[\w+=,.@/-]+$"
Cidr = Annotated[str, AfterValidator(_cidr)]
UserEntry = Annotated[str, AfterValidator(_user_entry)]
SecurityGroupId = Annotated[str, Field(pattern=r"^sg-[0-9a-f]{8,17}$")]
SubnetId = Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")]
PrincipalArn = Annotated[str, Field(pattern=PRINCIPAL_ARN_PATTERN)]
BucketName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
InstanceType = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")]
Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
TagValue = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[\w .:/=+@-]+$")]
PriceEntry = Annotated[str, AfterValidator(_entry(parse_price_entry))]
WorkerLimitEntry = Annotated[str, AfterValidator(_entry(lambda text, key: parse_limit_entry(text, key, whole=True)))]
HoursLimitEntry = Annotated[str, AfterValidator(_entry(lambda text, key: parse_limit_entry(text, key, whole=False)))]


@dataclass(frozen=True)
class User:
    """A person issued a client certificate, and the IAM principal that alone may read it."""

    name: str
    principal_arn: str


UserName = Annotated[str, Field(pattern=conventions.USER_NAME_PATTERN)]
#: A key prefix: path segments each ending in "/", no IAM wildcard (* ?) and no policy variable ($).
KEY_PREFIX_PATTERN = r"^([A-Za-z0-9!_.'()=+,;:@&-]+/)*$"
DataAccess = Literal["read", "read-write"]


class DataEntry(BaseModel):
    """One more place a cluster's nodes reach besides its own prefix: a prefix of the fleet's bucket or another bucket."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, alias_generator=to_camel, populate_by_name=True)

    prefix: str = Field(
        default="", pattern=KEY_PREFIX_PATTERN,
        description="key prefix ending in / (e.g. shared/reference/); empty: the whole bucket (another bucket only)",
    )
    bucket: BucketName | None = Field(default=None, description="another bucket's name; empty: the fleet's bucket")
    access: DataAccess = Field(default="read", description="read or read-write")

    @model_validator(mode="after")
    def _outside_what_clusters_own(self) -> DataEntry:
        if self.bucket is not None:
            return self
        if not self.prefix:
            raise ValueError("prefix: required for the fleet's bucket (a prefix such as shared/reference/; the whole "
                             "bucket holds every cluster's data)")
        if self.prefix.startswith(conventions.CLUSTER_DATA_PREFIX):
            raise ValueError(f"prefix: {self.prefix!r} lies under {conventions.CLUSTER_DATA_PREFIX}, where each cluster "
                             "owns its own prefix; share data through another prefix (e.g. shared/...)")
        if self.prefix.startswith(conventions.ENV_OBJECT_PREFIX):
            raise ValueError(f"prefix: {self.prefix!r} lies under {conventions.ENV_OBJECT_PREFIX}, the published "
                             "environments every node reads already and only publishers write")
        return self

    @property
    def writable(self) -> bool:
        return self.access == "read-write"


class StackConfig(BaseModel):
    """Every key of a daskfleet stack; the descriptions say what each accepts."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, alias_generator=to_camel, populate_by_name=True,
    )

    cluster: str = Field(
        pattern=conventions.CLUSTER_NAME_PATTERN,
        description="Cluster name: 3 to 40 lowercase letters, digits and hyphens, starting with a letter "
        "(it names DNS labels, IAM roles, secrets and the certificates' trust domain)",
    )
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$", description="AWS region to deploy into, e.g. eu-west-1")
    team: TagValue = Field(description="Team that owns the cluster (cost-allocation tag team)")
    owner: TagValue = Field(description="Who answers for the cluster, e.g. an e-mail address (cost-allocation tag owner)")
    cost_center: TagValue = Field(description="Cost center charged for the cluster (cost-allocation tag cost-center)")
    environment_fingerprint: str = Field(
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="Environment fingerprint (sha256: and 64 hex digits) of the node image: nodes refuse any other "
        "environment, and the AMI is the newest own image tagged daskfleet:env-fingerprint with it",
    )
    ami_id: str | None = Field(
        default=None, pattern=r"^ami-[0-9a-f]{8,17}$",
        description="AMI id (ami-...) to use instead of looking one up by environmentFingerprint; empty to look up",
    )
    ephemeral: bool = Field(
        default=False,
        description="true for a short-lived stack: destroying it empties the bucket, and resources carry an expires tag",
    )
    expires: Annotated[str, AfterValidator(_date)] | None = Field(
        default=None, description="Expiry date (YYYY-MM-DD) of an ephemeral stack, for its expires tag; required when ephemeral",
    )
    vpc_id: str | None = Field(
        default=None, pattern=r"^vpc-[0-9a-f]{8,17}$",
        description="Existing VPC to adopt (vpc-...); empty to create a private network",
    )
    subnet_ids: Annotated[list[SubnetId], AfterValidator(_distinct)] = Field(
        default_factory=list,
        description="Private subnets (subnet-...) of the adopted VPC, in at least 2 availability zones; required with vpcId",
    )
    vpc_cidr: Annotated[str, AfterValidator(_cidr)] = Field(
        default="10.64.0.0/16", description="IPv4 CIDR of a created VPC, /16 to /20 (unused when adopting vpcId)",
    )
    availability_zone_count: int = Field(
        default=2, ge=2, le=6, description="Availability zones of a created VPC, 2 to 6",
    )
    nat_gateway: bool = Field(
        default=False,
        description="Let nodes reach the internet over HTTPS through a NAT gateway (a created network gets one; an "
        "adopted one must route through one already). Off: nodes reach AWS through VPC endpoints only",
    )
    client_cidrs: Annotated[list[Cidr], AfterValidator(_distinct)] = Field(
        default_factory=list,
        description="CIDRs (IPv4 or IPv6) that may reach the scheduler (8786) and dashboard (8787), never 0.0.0.0/0 "
        "or ::/0; empty: reach them through an SSM port-forwarding session only",
    )
    client_security_group_ids: Annotated[list[SecurityGroupId], AfterValidator(_distinct)] = Field(
        default_factory=list,
        description="Security groups (sg-...) whose members may reach the scheduler (8786) and dashboard (8787)",
    )
    users: Annotated[list[UserEntry], AfterValidator(_distinct)] = Field(
        min_length=1,
        description="Users issued a client certificate, each NAME=IAM_PRINCIPAL_ARN (e.g. "
        "alice=arn:aws:iam::123456789012:role/alice); only that principal may read the user's certificate",
    )
    client_certificate_hours: int = Field(
        default=conventions.CLIENT_CERT_VALIDITY_HOURS, ge=1, le=conventions.CLIENT_CERT_MAX_VALIDITY_HOURS,
        description="Hours a person's certificate from the certificate vendor lasts, 1 to "
        f"{conventions.CLIENT_CERT_MAX_VALIDITY_HOURS} (clients renew it by themselves before it ends)",
    )
    operator_principal_arns: Annotated[list[PrincipalArn], AfterValidator(_distinct)] = Field(
        default_factory=list,
        description="IAM principals besides the deploying one that may read the cluster's TLS secrets "
        "(operators who run pulumi up or refresh); each arn:aws:iam::ACCOUNT:role/NAME or user/NAME",
    )
    metrics_scrapers: Annotated[list[PrincipalArn], AfterValidator(_distinct)] = Field(
        default_factory=list,
        description="IAM principals (a Prometheus's role) that may get a read-only metrics certificate with "
        "daskfleet login CLUSTER --metrics: it reads the dashboard port's /metrics and nothing else; each "
        "arn:aws:iam::ACCOUNT:role/NAME or user/NAME",
    )
    extra_read_buckets: Annotated[list[BucketName], AfterValidator(_distinct)] = Field(
        default_factory=list, description="Further S3 bucket names the nodes may read (never write)",
    )
    scheduler_instance_type: InstanceType = Field(
        default="m7i.large", description="EC2 instance type of the scheduler, e.g. m7i.large",
    )
    worker_instance_types: Annotated[list[InstanceType], AfterValidator(_distinct)] = Field(
        default_factory=lambda: ["m7i.xlarge", "m6i.xlarge", "m7a.xlarge", "m6a.xlarge"],
        min_length=1,
        description="EC2 instance types the worker group may launch, at least one (several give spot more capacity pools)",
    )
    worker_max_size: int = Field(default=10, ge=1, le=1000, description="Most worker instances at once, 1 to 1000")
    worker_on_demand_base: int = Field(
        default=0, ge=0, le=1000, description="Worker instances kept on demand before any spot is used, 0 to workerMaxSize",
    )
    worker_on_demand_percent_above_base: int = Field(
        default=0, ge=0, le=100,
        description="Percentage of the workers above the base that are on demand (the rest are spot), 0 to 100",
    )
    worker_drain_seconds: int = Field(
        default=900, ge=30, le=7200,
        description="How long a terminating worker may take to hand over its data (lifecycle hook timeout), 30 to 7200 s",
    )
    worker_threads: int = Field(
        default=0, ge=0, le=1024,
        description="Threads of each worker, 1 to 1024; 0: one per vCPU of the instance",
    )
    worker_memory_limit: Annotated[str, AfterValidator(_memory_limit)] | None = Field(
        default=None,
        description="Memory limit of each worker, in distributed's form: a size (e.g. 12GiB), a fraction of the "
        "instance's memory (e.g. 0.8) or auto (the instance's memory times workerThreads over its vCPUs); empty: "
        "all of the instance's memory",
    )
    worker_min_size: int = Field(
        default=0, ge=0, le=1000,
        description="Fewest workers while the cluster is in use, 0 to workerMaxSize; the scheduler scales between "
        "this and workerMaxSize with the load (adaptive scaling), and to 0 when idle",
    )
    cluster_worker_cap: int = Field(
        default=1000, ge=0, le=1000,
        description="Cluster cap: the most workers at once, whatever the load or workerMinSize asks, 0 to 1000 "
        "(above workerMaxSize it changes nothing)",
    )
    adapt_interval_seconds: int = Field(
        default=int(scaling_policy.DEFAULT_INTERVAL_S), ge=1, le=300,
        description="Seconds between the scheduler's scaling decisions, 1 to 300",
    )
    adapt_cooldown_seconds: int = Field(
        default=int(scaling_policy.DEFAULT_COOLDOWN_S), ge=0, le=3600,
        description="No scale-down this many seconds after the last scaling action, 0 to 3600",
    )
    adapt_max_step_down: int = Field(
        default=scaling_policy.DEFAULT_MAX_STEP_DOWN, ge=1, le=1000,
        description="Most workers retired in one scaling decision, 1 to 1000",
    )
    adapt_scale_down_targets: int = Field(
        default=scaling_policy.DEFAULT_SCALE_DOWN_TARGETS, ge=1, le=100,
        description="Scale-down follows the largest of this many recent adaptive targets (one per decision), 1 to 100",
    )
    adapt_launch_timeout_seconds: int = Field(
        default=int(scaling_policy.DEFAULT_LAUNCH_TIMEOUT_S), ge=60, le=3600,
        description="A requested worker counts as coming until it registers or this many seconds pass, 60 to 3600",
    )
    idle_timeout: int = Field(
        default=int(scaling_policy.DEFAULT_IDLE_TIMEOUT_S), ge=0, le=2_592_000,
        description="Seconds without work (no task, no graph update) after which workers retire and the scheduler "
        "stops (its group goes to 0; a user's connect wakes it), 0 for never",
    )
    no_client_timeout: int = Field(
        default=int(scaling_policy.DEFAULT_NO_CLIENT_TIMEOUT_S), ge=0, le=2_592_000,
        description="Seconds without work and without a connected client after which the cluster goes idle the same "
        "way, 0 for never",
    )
    root_volume_gb: int = Field(default=100, ge=20, le=16384, description="Encrypted root volume of each node in GiB, 20 to 16384")
    scratch_expiration_days: int = Field(
        default=7, ge=1, le=3650, description="Days after which objects under scratch/ in the cluster bucket expire, 1 to 3650",
    )
    log_retention_days: Annotated[int, AfterValidator(_log_retention)] = Field(
        default=30,
        description="Days the cluster log group keeps events: one of " + ", ".join(map(str, LOG_RETENTION_DAYS)),
    )
    budget_monthly_usd: int = Field(ge=1, le=10_000_000, description="Monthly cost budget of the cluster in whole US dollars")
    budget_thresholds_percent: Annotated[list[Annotated[int, Field(ge=1, le=1000)]], AfterValidator(_distinct)] = Field(
        default_factory=lambda: [50, 80, 100],
        min_length=1,
        description="Percentages of the budget (1 to 1000, distinct) at which actual spend is notified",
    )
    budget_emails: Annotated[list[Email], AfterValidator(_distinct)] = Field(
        min_length=1, description="E-mail addresses told when spend crosses a budget threshold, at least one",
    )
    budget_hard_stop_percent: int = Field(
        default=100, ge=0, le=1000,
        description="Percentage of budgetMonthlyUsd (0 to 1000; 0: off) at which the scheduler stops the cluster from its "
        "own ledger (no new graphs, workers to 0), and at which an AWS Budgets action denies the scheduler scaling up",
    )
    instance_prices_usd_per_hour: Annotated[list[PriceEntry], AfterValidator(_distinct)] = Field(
        min_length=1,
        description="US dollars per hour of each instance type the cluster runs, INSTANCE_TYPE=ON_DEMAND[/SPOT] (e.g. "
        "m7i.xlarge=0.2016/0.0900; spot unset: the on-demand price); every worker and the scheduler instance type needs one",
    )
    user_max_workers: Annotated[list[WorkerLimitEntry], AfterValidator(_distinct)] = Field(
        default_factory=list,
        description="Most workers a user's work may hold at once, USER=N (* for every user not named; 0 refuses the "
        "user's graphs); the cluster is clamped to the sum of the limits of the users with work",
    )
    user_compute_hours_per_day: Annotated[list[HoursLimitEntry], AfterValidator(_distinct)] = Field(
        default_factory=list,
        description="Task compute hours a user may use per UTC day, USER=HOURS (* for every user not named); "
        "further graphs are refused until the next day",
    )
    usage_prefixes_per_user: int = Field(
        default=conventions.DEFAULT_PREFIXES_PER_USER, ge=0, le=conventions.MAX_PREFIXES_PER_USER,
        description=f"Task prefixes (functions) whose usage the scheduler keeps apart per user, 0 to "
        f"{conventions.MAX_PREFIXES_PER_USER}: the first ones each user runs; later ones count as (other); 0: per-user "
        "usage only",
    )
    dns_zone: str = Field(
        default="daskfleet.internal",
        pattern=r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z][a-z0-9-]{0,61}[a-z0-9]$",
        description="Private DNS domain; the scheduler is reachable at scheduler.<cluster>.<dnsZone>",
    )
    environment_publishers: Annotated[list[PrincipalArn], AfterValidator(_distinct)] = Field(
        default_factory=list,
        description="IAM principals that may publish a new environment to the running cluster (daskfleet env publish); "
        "empty for the configured users",
    )
    environment_roll_fraction: float = Field(
        default=0.25, gt=0, le=1,
        description="The most workers that switch to a newly published environment at once, as a fraction (at least one)",
    )
    environment_lock: str | None = Field(
        default=None,
        description="The conda-lock file the image was built from (e.g. ../envs/default/conda-lock.yml), stored in the "
        "bucket so publishing uploads only what the images lack; it must match environmentFingerprint; empty for none",
    )
    client_version_policy: conventions.ClientVersionPolicy = Field(
        default="refuse",
        description="What the scheduler does with a client whose core package versions differ from the cluster's: "
        "refuse (its connection is refused) or warn (it is let in, and the difference is logged and audited)",
    )
    admins: Annotated[list[UserName], AfterValidator(_distinct)] = Field(
        default_factory=list,
        description="Users (by name) issued an admin certificate for the stack's own cluster when clusters is empty "
        "(each entry of clusters names its own); empty: nobody, only operators administer it",
    )
    data: Annotated[list[DataEntry], AfterValidator(_distinct)] = Field(
        default_factory=list,
        description="Where every cluster's nodes reach besides their own prefix clusters/<cluster>/ of the bucket, "
        "unless its clusters entry names its own: each {prefix, bucket, access}, a prefix of the fleet's bucket "
        "(never under clusters/ or envs/) or of another bucket, read or read-write",
    )
    clusters: dict[str, ClusterEntry] = Field(
        default_factory=dict,
        description="The fleet's clusters, name -> {members, admins, data, and any per-cluster setting}; a setting left "
        "out takes the stack-wide key of the same name. Empty: the fleet is the stack's own cluster, of every user",
    )
    private_clusters: bool = Field(
        default=False,
        description="true: every user also gets a private cluster named after them, of which they are the only "
        "member and the admin",
    )

    @model_validator(mode="after")
    def _consistent(self) -> StackConfig:
        if self.ephemeral and self.expires is None:
            raise ValueError("expires: required when ephemeral is true (an expiry date, YYYY-MM-DD)")
        if self.expires is not None and not self.ephemeral:
            raise ValueError(f"expires: {self.expires!r} is only for ephemeral stacks (set ephemeral: true, or leave expires empty)")
        if self.vpc_id and len(self.subnet_ids) < 2:
            raise ValueError(
                f"subnetIds: {self.subnet_ids!r} with vpcId needs at least 2 private subnets in different availability zones"
            )
        if self.subnet_ids and not self.vpc_id:
            raise ValueError("vpcId: required with subnetIds (the VPC those subnets belong to)")
        vpc_network = ipaddress.ip_network(self.vpc_cidr)
        if vpc_network.version != 4 or not 16 <= vpc_network.prefixlen <= 20:
            raise ValueError(f"vpcCidr: {self.vpc_cidr!r} is not an IPv4 CIDR from /16 to /20")
        if self.worker_min_size > self.worker_max_size:
            raise ValueError(f"workerMinSize: {self.worker_min_size} is more than workerMaxSize ({self.worker_max_size})")
        if self.worker_on_demand_base > self.worker_max_size:
            raise ValueError(
                f"workerOnDemandBase: {self.worker_on_demand_base} is more than workerMaxSize ({self.worker_max_size})"
            )
        names = [user.name for user in self.user_list]
        if len(set(names)) != len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(f"users: user name listed more than once: {', '.join(twice)}")
        if IDLE in names:
            raise ValueError(f"users: {IDLE!r} is reserved for idle worker time, not a user name")
        self._check_usage(set(names))
        if self.admins and self.clusters:
            raise ValueError("admins: only for a stack without clusters; each entry of clusters names its own admins")
        unknown = sorted(set(self.admins) - set(names))
        if unknown:
            raise ValueError(f"admins: {', '.join(unknown)} not among users ({', '.join(sorted(names))})")
        _ = self.fleet  # every cluster's settings resolved and validated now, at the edge
        return self

    def _check_usage(self, users: set[str]) -> None:
        """Every instance type priced once; limits name only the stack's users (or *)."""
        try:
            policy = self.usage_policy()
        except ValueError as exc:
            raise ValueError(str(exc).splitlines()[0]) from None
        needed = {name: "workerInstanceTypes" for name in self.worker_instance_types}
        needed.setdefault(self.scheduler_instance_type, "schedulerInstanceType")
        unpriced = [f"{name} ({key})" for name, key in needed.items() if policy.price(name) is None]
        if unpriced:
            raise ValueError(f"instancePricesUsdPerHour: no price for {', '.join(unpriced)}")
        for key, limits in (("userMaxWorkers", policy.user_max_workers),
                            ("userComputeHoursPerDay", policy.user_compute_hours_per_day)):
            unknown = sorted(set(limits) - users - {EVERYONE})
            if unknown:
                raise ValueError(f"{key}: {', '.join(unknown)} not among users ({', '.join(sorted(users))})")

    # --- derived values --------------------------------------------------------------------

    @cached_property
    def user_list(self) -> tuple[User, ...]:
        return tuple(User(*entry.split("=", 1)) for entry in self.users)

    @cached_property
    def fleet(self) -> tuple[ClusterConfig, ...]:
        """Every cluster of the stack, by name: the declared ones (or the stack's own) and the private ones."""
        return resolve_fleet(self)

    @property
    def declares_fleet(self) -> bool:
        """Whether the stack names its clusters (or gives users private ones) rather than being one cluster."""
        return bool(self.clusters) or self.private_clusters

    @property
    def publisher_arns(self) -> list[str]:
        """Who may publish environments: the listed principals, else every configured user's."""
        return sorted(set(self.environment_publishers or [user.principal_arn for user in self.user_list]))

    def usage_policy(self) -> UsagePolicy:
        """The scheduler's prices, per-user limits and budget stop (its stop lead: the workers' drain time)."""
        return policy_from_entries(
            prices=self.instance_prices_usd_per_hour, user_max_workers=self.user_max_workers,
            user_compute_hours_per_day=self.user_compute_hours_per_day, budget_monthly_usd=float(self.budget_monthly_usd),
            budget_hard_stop_percent=self.budget_hard_stop_percent, budget_stop_lead_s=float(self.worker_drain_seconds),
            prefixes_per_user=self.usage_prefixes_per_user, keys={"prices": "instancePricesUsdPerHour", "user_max_workers": "userMaxWorkers",
                  "user_compute_hours_per_day": "userComputeHoursPerDay"},
        )

    @property
    def adopts_network(self) -> bool:
        return self.vpc_id is not None

    @property
    def scheduler_dns_name(self) -> str:
        return conventions.scheduler_dns_name(self.cluster, self.dns_zone)

    @property
    def cluster_zone_name(self) -> str:
        """The cluster's private hosted zone; the scheduler's name lies directly in it."""
        return self.scheduler_dns_name.split(".", 1)[1]

    def scaling(self) -> scaling_policy.ScalingSpec:
        """The scheduler spec's scaling section: adaptive between workerMinSize and workerMaxSize, idle timeouts."""
        return scaling_policy.ScalingSpec(
            min_workers=self.worker_min_size, max_workers=self.worker_max_size, cluster_cap=self.cluster_worker_cap,
            interval_s=self.adapt_interval_seconds, cooldown_s=self.adapt_cooldown_seconds,
            max_step_down=self.adapt_max_step_down, scale_down_targets=self.adapt_scale_down_targets,
            launch_timeout_s=self.adapt_launch_timeout_seconds, idle_timeout_s=self.idle_timeout,
            no_client_timeout_s=self.no_client_timeout,
        )

    def cost_allocation_tags(self) -> dict[str, str]:
        """The tags every resource carries: cluster, team, owner, cost center, and expiry when ephemeral."""
        tags = {
            conventions.TAG_CLUSTER: self.cluster,
            conventions.TAG_TEAM: self.team,
            conventions.TAG_OWNER: self.owner,
            conventions.TAG_COST_CENTER: self.cost_center,
        }
        if self.ephemeral and self.expires:
            tags[conventions.TAG_EXPIRES] = self.expires
        return tags


# --- the fleet: one stack, several clusters ----------------------------------------------------

#: Stack keys a cluster's entry in ``clusters`` may set for itself; each one left out takes the stack-wide key.
CLUSTER_SETTINGS: tuple[str, ...] = (
    "scheduler_instance_type", "worker_instance_types", "worker_min_size", "worker_max_size", "cluster_worker_cap",
    "worker_on_demand_base", "worker_on_demand_percent_above_base", "worker_drain_seconds", "root_volume_gb",
    "worker_threads", "worker_memory_limit", "adapt_interval_seconds", "adapt_cooldown_seconds", "adapt_max_step_down", "adapt_scale_down_targets",
    "adapt_launch_timeout_seconds", "idle_timeout", "no_client_timeout", "budget_monthly_usd",
    "budget_thresholds_percent", "budget_emails", "budget_hard_stop_percent", "user_max_workers",
    "user_compute_hours_per_day", "environment_publishers", "environment_roll_fraction", "client_version_policy",
)
#: Entries of these name users: taken from the stack-wide key, a cluster keeps those naming its people (and ``*``).
_PER_USER_SETTINGS: tuple[str, ...] = ("user_max_workers", "user_compute_hours_per_day")


def _optional_setting(name: str) -> tuple[Any, Any]:
    """A stack key as an optional key of a cluster's entry: the same type and constraints, no default."""
    field = StackConfig.model_fields[name]
    kind = Annotated.__class_getitem__((field.annotation, *field.metadata)) if field.metadata else field.annotation
    return typing.Optional[kind], Field(default=None, description=field.description)


ClusterEntry = create_model(
    "ClusterEntry",
    __config__=ConfigDict(extra="forbid", frozen=True, strict=True, alias_generator=to_camel, populate_by_name=True),
    __doc__="One cluster of the fleet: its people, its data and the settings it does not take from the stack.",
    members=(Annotated[list[UserName], AfterValidator(_distinct)], Field(
        default_factory=list, description="users (by name) issued a member certificate")),
    admins=(Annotated[list[UserName], AfterValidator(_distinct)], Field(
        default_factory=list, description="users (by name) issued an admin certificate; default nobody")),
    data=(typing.Optional[Annotated[list[DataEntry], AfterValidator(_distinct)]], Field(
        default=None, description="the cluster's own data entries; default the stack-wide data")),
    **{name: _optional_setting(name) for name in CLUSTER_SETTINGS},
)
StackConfig.model_rebuild()
#: A cluster entry's key (camelCase) -> field name.
CLUSTER_ENTRY_KEYS: dict[str, str] = {field.alias or name: name for name, field in ClusterEntry.model_fields.items()}


@dataclass(frozen=True)
class ClusterConfig:
    """One cluster of the fleet: who holds which certificate, what data its nodes reach, and its own settings.

    ``settings`` is a StackConfig of its own (``cluster`` its name, ``users`` its people), so every derived
    value (scaling, usage policy, DNS name, publishers) reads the same for a fleet member as for a lone cluster.
    """

    name: str
    #: People issued a member (client) certificate; admins are not among them.
    members: tuple[User, ...]
    #: People issued an admin certificate (a member who may also administer the cluster).
    admins: tuple[User, ...]
    data: tuple[DataEntry, ...]
    settings: StackConfig
    #: A user's private cluster (``privateClusters``), named after them.
    private: bool = False

    @property
    def people(self) -> tuple[User, ...]:
        """Everyone issued a certificate for the cluster, by name."""
        return tuple(sorted(self.members + self.admins, key=lambda user: user.name))

    def role_of(self, user: User) -> conventions.Role:
        """The certificate role a person of the cluster holds."""
        return conventions.ADMIN_ROLE if user in self.admins else conventions.MEMBER_ROLE


def _people(key: str, names: Sequence[str], users: Mapping[str, User]) -> tuple[User, ...]:
    unknown = sorted(set(names) - set(users))
    if unknown:
        raise ValueError(f"{key}: {', '.join(unknown)} not among users ({', '.join(sorted(users))})")
    return tuple(users[name] for name in sorted(names))


def _cluster_settings(config: StackConfig, name: str, people: Sequence[User], overrides: Mapping[str, Any],
                      key: str) -> StackConfig:
    """The stack's settings with the cluster's own on top, validated as a stack of one cluster (its people)."""
    names = {user.name for user in people}
    values: dict[str, Any] = {field: getattr(config, field) for field in StackConfig.model_fields}
    values.update(cluster=name, users=[f"{user.name}={user.principal_arn}" for user in people], admins=[], data=[],
                  clusters={}, private_clusters=False)
    for setting in _PER_USER_SETTINGS:  # stack-wide limits of other clusters' people do not apply here
        values[setting] = [entry for entry in values[setting] if entry.split("=", 1)[0] in names | {EVERYONE}]
    values.update(overrides)
    try:
        return StackConfig.model_validate(values)
    except ValidationError as exc:
        raise ValueError(f"{key}: " + "; ".join(_describe(error) for error in exc.errors())) from None


def _in_order(entries: Sequence[DataEntry]) -> tuple[DataEntry, ...]:
    """Data entries in one order, whatever the configuration's: the policies written from them are the same."""
    return tuple(sorted(entries, key=lambda entry: (entry.bucket or "", entry.prefix, entry.access)))


def resolve_fleet(config: StackConfig) -> tuple[ClusterConfig, ...]:
    """The stack's clusters, by name: those in ``clusters`` (or the stack's own, of every user) and private ones.

    Pure and independent of the order of users, clusters and their lists: each cluster's people come sorted.
    """
    users = {user.name: user for user in config.user_list}
    fleet: dict[str, ClusterConfig] = {}
    if not config.clusters:
        admins = _people("admins", config.admins, users)
        members = tuple(user for name, user in sorted(users.items()) if user not in admins)
        fleet[config.cluster] = ClusterConfig(config.cluster, members, admins, _in_order(config.data), config)
    for name, entry in sorted(config.clusters.items()):
        key = f"clusters.{name}"
        if not re.fullmatch(conventions.CLUSTER_NAME_PATTERN, name):
            raise ValueError(f"clusters: {name!r} is not a cluster name ({conventions.CLUSTER_NAME_PATTERN}: 3 to 40 "
                             "lowercase letters, digits and hyphens, starting with a letter)")
        admins = _people(f"{key}.admins", entry.admins, users)
        members = tuple(user for user in _people(f"{key}.members", entry.members, users) if user not in admins)
        if not admins and not members:
            raise ValueError(f"{key}: no members and no admins; name at least one user")
        overrides = {setting: getattr(entry, setting) for setting in CLUSTER_SETTINGS if getattr(entry, setting) is not None}
        settings = _cluster_settings(config, name, members + admins, overrides, key)
        data = _in_order(config.data if entry.data is None else entry.data)
        fleet[name] = ClusterConfig(name, members, admins, data, settings)
    if config.private_clusters:
        for name, user in sorted(users.items()):
            if name in fleet:
                other = f"clusters.{name}" if config.clusters else "the stack's own cluster (cluster)"
                raise ValueError(f"privateClusters: the private cluster of user {name} and {other} are both named "
                                 f"{name}; rename one of them")
            if not re.fullmatch(conventions.CLUSTER_NAME_PATTERN, name):
                raise ValueError(f"privateClusters: user {name!r} cannot name a private cluster "
                                 f"({conventions.CLUSTER_NAME_PATTERN}: 3 to 40 lowercase letters, digits and hyphens, "
                                 "starting with a letter); rename the user")
            settings = _cluster_settings(config, name, [user], {}, f"privateClusters ({name})")
            fleet[name] = ClusterConfig(name, (), (user,), _in_order(config.data), settings, private=True)
    return tuple(fleet[name] for name in sorted(fleet))


# --- reading and validating ---------------------------------------------------------------------

#: Config key (as in Pulumi.yaml) -> field name.
CONFIG_KEYS: dict[str, str] = {field.alias or name: name for name, field in StackConfig.model_fields.items()}


def _is_text(annotation: Any) -> bool:
    """Whether Pulumi hands this field over as plain text (strings) rather than JSON (numbers, booleans, lists)."""
    if typing.get_origin(annotation) is Annotated:
        return _is_text(typing.get_args(annotation)[0])
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return all(_is_text(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return all(isinstance(arg, str) for arg in typing.get_args(annotation))
    return annotation is str


def _expected(key: str) -> str:
    return StackConfig.model_fields[CONFIG_KEYS[key]].description or ""


def _decode(key: str, text: str) -> Any:
    """A Pulumi config value (always text) as the field's Python value; ValueError names what was expected."""
    field = StackConfig.model_fields[CONFIG_KEYS[key]]
    if _is_text(field.annotation):
        # Empty means "not set" only for keys that may be unset (amiId, vpcId, ...); elsewhere it is a bad value.
        return None if text == "" and not field.is_required() and field.default is None else text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        kind = {bool: "true or false", int: "a whole number", float: "a number"}.get(field.annotation, "a list")
        raise ValueError(f"{key}: expected {kind}, got {text!r}; accepted: {_expected(key)}") from None


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _known_keys(loc: tuple[Any, ...]) -> dict[str, str]:
    """The keys accepted where ``loc`` points: the stack's, a cluster entry's or a data entry's."""
    if len(loc) >= 2 and isinstance(loc[-2], int) and "data" in loc:
        return {field.alias or name: name for name, field in DataEntry.model_fields.items()}
    if len(loc) == 3 and loc[0] == "clusters":
        return CLUSTER_ENTRY_KEYS
    return CONFIG_KEYS


def _accepted(loc: tuple[Any, ...]) -> str:
    """What the key at ``loc`` accepts: a cluster entry's own setting, else the stack key's description."""
    if len(loc) >= 3 and loc[0] == "clusters" and loc[2] in CLUSTER_ENTRY_KEYS:
        return ClusterEntry.model_fields[CLUSTER_ENTRY_KEYS[loc[2]]].description or ""
    return _expected(str(loc[0])) if loc[0] in CONFIG_KEYS else ""


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:
        return message
    key = _location(loc)
    if kind == "extra_forbidden":
        known = _known_keys(loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{key}: unknown key ({hint}known keys: {', '.join(sorted(known))})"
    accepted = _accepted(loc)
    if kind == "missing":
        return f"{key}: required key is not set; accepted: {accepted}"
    if kind == "string_pattern_mismatch":
        message = "does not have the accepted form"
    return f"{key}: {message} (got {error.get('input')!r}); accepted: {accepted}"


def parse_stack_config(values: Mapping[str, str]) -> StackConfig:
    """Validate config as Pulumi hands it over (key -> text); one StackConfigError naming every bad key."""
    problems: list[str] = []
    raw: dict[str, Any] = {}
    for key, text in values.items():
        if key not in CONFIG_KEYS:
            raw[key] = text  # reported as an unknown key
            continue
        try:
            raw[key] = _decode(key, text)
        except ValueError as exc:
            problems.append(str(exc))
    try:
        config = StackConfig.model_validate(raw)
    except ValidationError as exc:
        undecodable = {problem.split(":", 1)[0] for problem in problems}
        problems += [_describe(error) for error in exc.errors() if _location(error["loc"][:1]) not in undecodable]
        config = None
    if problems:
        raise StackConfigError(*problems)
    assert config is not None
    return config


def project_config_values(project: str = PROJECT) -> dict[str, str]:
    """Every key the running stack sets in the project's namespace, as text.

    Pulumi's public Config API can only look keys up, so unknown (e.g. misspelt) keys are
    found through the runtime's config map: the engine's own, or PULUMI_CONFIG under mocks.
    """
    prefix = f"{project}:"
    # CONFIG is private, kept because Pulumi has no public API listing a stack's config keys (Config only gets one).
    names = set(pulumi.runtime.get_config_env()) | set(pulumi_runtime_config.CONFIG.get())
    config = pulumi.Config(project)
    values = {}
    for name in sorted(names):
        if name.startswith(prefix):
            key = name[len(prefix):]
            values[key] = config.get(key)
    return {key: value for key, value in values.items() if value is not None}


def read_stack_config(project: str = PROJECT) -> StackConfig:
    """The running stack's configuration, validated; raises StackConfigError before anything is declared."""
    return parse_stack_config(project_config_values(project))
