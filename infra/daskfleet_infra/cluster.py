"""One cluster of the fleet: every resource of its own, under one component, its own trust boundary.

A cluster owns its CA (the fleet's certificate vendor signs with it: every node's and person's certificate), its node roles and instance profiles, its groups and
launch templates, its DNS updater, node specs, log group, budget (and stop), published-environment
pointer policies and its member policy. It shares the fleet's network, security groups, bucket
and key (``SharedResources``). Its resources are named after it, as a lone cluster's always were
(``daskfleet-<cluster>-scheduler``, ``/daskfleet/<cluster>/...``), so every command that takes a
cluster name finds it.

The stack's own cluster (config ``cluster``) keeps the Pulumi names its resources had before
stacks held fleets, and each of its components carries an alias to its old place at the stack's
root: an existing stack plans with no replacement (tests/infra/test_fleet_upgrade.py shows it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from daskfleet import conventions
from daskfleet.environments.policy import RolloutPolicy

from . import access
from .budget import Budget, BudgetArgs
from .compute import Compute, ComputeArgs
from .config import ClusterConfig, StackConfig
from .environments import PublishedEnvironments, PublishedEnvironmentsArgs
from .identity import Identity, IdentityArgs
from .lookups import Account, Image
from .membership import Membership, MembershipArgs
from .observability import Observability, ObservabilityArgs
from .pki import Pki, PkiArgs
from .revocations import Revocation
from .scheduler_dns import SchedulerDns, SchedulerDnsArgs
from .specs import NodeSpecs, NodeSpecsArgs, scheduler_address
from .wake import Wake, WakeArgs, principal_label


@dataclass(frozen=True)
class SharedResources:
    """What every cluster of the fleet takes from the stack: account, image, network, bucket and key."""

    account: Account
    image: Image
    subnet_ids: Sequence[pulumi.Input[str]]
    #: node role -> its (shared) security group id.
    security_group_ids: Mapping[str, pulumi.Input[str]]
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    #: The fleet's certificate vendor: its function's name and its role (the only reader of CA keys).
    vendor_function: str
    vendor_role_arn: pulumi.Input[str]


@dataclass(frozen=True)
class ClusterArgs:
    config: ClusterConfig
    #: The stack's configuration: its own cluster's name, the region and what no cluster sets for itself.
    stack: StackConfig
    shared: SharedResources
    #: The private hosted zone the cluster's scheduler name lies in.
    zone_id: pulumi.Input[str]


def is_stack_cluster(cluster: ClusterConfig, stack: StackConfig) -> bool:
    """The stack's own cluster keeps the names and places its resources had before stacks held fleets."""
    return cluster.name == stack.cluster


class Cluster(pulumi.ComponentResource):
    """Everything of one cluster; ``outputs`` is what users need to reach it (nothing secret)."""

    outputs: dict[str, Any]

    def __init__(self, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        cluster, stack, shared = args.config, args.stack, args.shared
        super().__init__("daskfleet:aws:Cluster", cluster.name, None, opts)
        self._own = is_stack_cluster(cluster, stack)
        prefix = "" if self._own else f"{cluster.name}-"
        # The provider's default tags name the stack's cluster; another cluster's resources name their own.
        tags = None if self._own else {conventions.TAG_CLUSTER: cluster.name}
        settings, account, name = cluster.settings, shared.account, cluster.name
        dns_name = settings.scheduler_dns_name
        people = cluster.people

        observability = Observability(f"{prefix}observability", ObservabilityArgs(
            cluster=name, log_retention_days=stack.log_retention_days, tags=tags,
        ), self._part("observability"))
        identity = Identity(f"{prefix}identity", IdentityArgs(
            cluster=name, account=account, bucket_arn=shared.bucket_arn, extra_read_buckets=stack.extra_read_buckets,
            key_arn=shared.key_arn, log_group_arn=observability.log_group_arn, data=cluster.data, tags=tags,
            vendor_function=shared.vendor_function,
        ), self._part("identity"))
        Budget(f"{prefix}budget", BudgetArgs(
            cluster=name, account=account, monthly_usd=settings.budget_monthly_usd,
            thresholds_percent=settings.budget_thresholds_percent, emails=settings.budget_emails,
            hard_stop_percent=settings.budget_hard_stop_percent, scheduler_role_name=identity.role_names["scheduler"],
            tags=tags,
        ), self._part("budget"))
        pki = Pki(f"{prefix}pki", PkiArgs(
            cluster=name, users=people, node_role_arns=identity.role_arns,
            administrator_arns=[account.deployer_arn, *stack.operator_principal_arns], key_arn=shared.key_arn,
            scheduler_dns_name=dns_name, ephemeral=stack.ephemeral,
            admins=frozenset(user.name for user in cluster.admins), tags=tags, vendor_role_arn=shared.vendor_role_arn,
            client_cert_hours=stack.client_certificate_hours, metrics_principals=stack.metrics_scrapers,
        ), self._part("pki"))
        specs = NodeSpecs(f"{prefix}node-specs", NodeSpecsArgs(
            cluster=name, environment_fingerprint=stack.environment_fingerprint,
            scheduler_dns_name=dns_name, client_version_policy=settings.client_version_policy,
            usage=settings.usage_policy(), scaling=settings.scaling(), bucket_name=shared.bucket_name,
            rollout=RolloutPolicy(max_fraction=settings.environment_roll_fraction), key_arn=shared.key_arn, tags=tags,
            worker_threads=settings.worker_threads or None, worker_memory_limit=settings.worker_memory_limit,
            vendor_function=shared.vendor_function or None,
        ), self._part("node-specs"))
        environments = PublishedEnvironments(f"{prefix}environments", PublishedEnvironmentsArgs(
            cluster=name, account=account,
            publishers=[(f"publisher-{principal_label(arn)}", arn) for arn in settings.publisher_arns],
            readers=[(user.name, user.principal_arn) for user in people],
            bucket_arn=shared.bucket_arn, key_arn=shared.key_arn, read_policy=self._own, tags=tags,
        ), self._part("environments"))
        scheduler_dns = SchedulerDns(f"{prefix}scheduler-dns", SchedulerDnsArgs(
            cluster=name, account=account, zone_id=args.zone_id, scheduler_dns_name=dns_name,
            log_retention_days=stack.log_retention_days, tags=tags,
        ), self._part("scheduler-dns"))
        Compute(f"{prefix}compute", ComputeArgs(
            cluster=name, image=shared.image, subnet_ids=shared.subnet_ids,
            security_group_ids=shared.security_group_ids, instance_profile_arns=identity.instance_profile_arns,
            cost_tags=stack.cost_allocation_tags(), scheduler_instance_type=settings.scheduler_instance_type,
            worker_instance_types=settings.worker_instance_types, worker_max_size=settings.worker_max_size,
            worker_on_demand_base=settings.worker_on_demand_base,
            worker_on_demand_percent_above_base=settings.worker_on_demand_percent_above_base,
            worker_drain_seconds=settings.worker_drain_seconds, root_volume_gb=settings.root_volume_gb,
            # The DNS updater must be listening before the scheduler's first launch event.
            boot_after=[identity, pki, specs, scheduler_dns], tags=tags, start_awake=self._own,
        ), self._part("compute"))
        membership = Membership(f"{prefix}member", MembershipArgs(
            cluster=name, account=account, people=people, bucket_arn=shared.bucket_arn, key_arn=shared.key_arn,
            log_group_arn=observability.log_group_arn, data=cluster.data, tags=tags,
            vendor_function=shared.vendor_function or None, metrics_scrapers=stack.metrics_scrapers,
        ), pulumi.ResourceOptions(parent=self))
        # A user who leaves members/admins is denied at once (the vendor and the schedulers read the deny-list).
        Revocation(f"{prefix}revocation", cluster=name, region=stack.region, users=[user.name for user in people],
                   opts=pulumi.ResourceOptions(parent=self))
        wake = None
        if self._own:  # permission sets may name the wake policy the stack had before fleets
            wake = Wake("wake", WakeArgs(cluster=name, account=account, users=people), self._part("wake"))

        region = stack.region
        self.outputs = {
            "schedulerAddress": scheduler_address(dns_name),
            "dashboardUrl": access.dashboard_url(dns_name),
            "dataUrl": pulumi.Output.concat("s3://", shared.bucket_name, "/", conventions.cluster_data_prefix(name)),
            "logGroupName": observability.log_group_name,
            "members": [user.name for user in cluster.members],
            "admins": [user.name for user in cluster.admins],
            "private": cluster.private,
            "clientSecretArns": pki.client_secret_arns,
            "memberPolicyArn": membership.policy_arn,
            "environmentPublishPolicyArn": environments.publish_policy_arn,
            "schedulerPortForwardCommand": access.port_forward_command(name, region, dns_name, conventions.SCHEDULER_PORT),
            "dashboardPortForwardCommand": access.port_forward_command(name, region, dns_name, conventions.DASHBOARD_PORT),
        }
        #: Outputs a stack from before fleets exported for its one cluster.
        self.legacy_outputs = {
            "environmentReadPolicyArn": environments.read_policy_arn,
            "wakePolicyArn": wake.policy_arn if wake is not None else None,
        }
        self.register_outputs({"outputs": self.outputs})

    def _part(self, old_name: str) -> pulumi.ResourceOptions:
        """A component of this cluster; the stack's own cluster's components keep their place at the root as an alias."""
        aliases = [pulumi.Alias(name=old_name, parent=pulumi.ROOT_STACK_RESOURCE)] if self._own else None
        return pulumi.ResourceOptions(parent=self, aliases=aliases)
