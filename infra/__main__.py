"""One team's secured Dask cluster on AWS. Every configuration key is documented in Pulumi.example.yaml."""

import pulumi
import pulumi_aws as aws
from daskfleet import conventions
from daskfleet.environments.policy import RolloutPolicy

from daskfleet_infra import access
from daskfleet_infra.budget import Budget, BudgetArgs
from daskfleet_infra.compute import Compute, ComputeArgs
from daskfleet_infra.config import read_stack_config
from daskfleet_infra.identity import Identity, IdentityArgs
from daskfleet_infra.environments import PublishedEnvironments, PublishedEnvironmentsArgs
from daskfleet_infra.lookups import look_up_account, look_up_image, look_up_image_lock, look_up_network
from daskfleet_infra.network import Network, NetworkArgs
from daskfleet_infra.observability import Observability, ObservabilityArgs
from daskfleet_infra.pki import Pki, PkiArgs
from daskfleet_infra.scheduler_dns import SchedulerDns, SchedulerDnsArgs
from daskfleet_infra.security_groups import SecurityGroups, SecurityGroupsArgs
from daskfleet_infra.specs import NodeSpecs, NodeSpecsArgs, scheduler_address
from daskfleet_infra.storage import Storage, StorageArgs
from daskfleet_infra.wake import Wake, WakeArgs, principal_label

# 1. Validate the configuration and look up the account, network and image: nothing real is declared before.
config = read_stack_config()
provider = aws.Provider(
    "aws", region=config.region, default_tags=aws.ProviderDefaultTagsArgs(tags=config.cost_allocation_tags())
)
invoke = pulumi.InvokeOptions(provider=provider)
account = look_up_account(config, invoke)
network_facts = look_up_network(config, account, invoke)
image = look_up_image(config, invoke)
image_lock = look_up_image_lock(config, image)
users = config.user_list
dns_name = config.scheduler_dns_name
with_aws = pulumi.ResourceOptions(providers=[provider])

# 2. Build the components.
network = Network("network", NetworkArgs(
    cluster=config.cluster, account=account, facts=network_facts, vpc_id=config.vpc_id,
    subnet_ids=tuple(config.subnet_ids), nat_gateway=config.nat_gateway, zone_name=config.cluster_zone_name,
), with_aws)
security_groups = SecurityGroups("security-groups", SecurityGroupsArgs(
    cluster=config.cluster, vpc_id=network.vpc_id, vpc_cidr=network.vpc_cidr,
    s3_prefix_list_id=network.s3_prefix_list_id, client_cidrs=tuple(config.client_cidrs),
    client_security_group_ids=tuple(config.client_security_group_ids), internet_egress=config.nat_gateway,
), with_aws)
storage = Storage("storage", StorageArgs(
    cluster=config.cluster, account=account, ephemeral=config.ephemeral,
    scratch_expiration_days=config.scratch_expiration_days, user_principal_arns=[user.principal_arn for user in users],
    publisher_arns=config.publisher_arns,
), with_aws)
observability = Observability("observability", ObservabilityArgs(
    cluster=config.cluster, log_retention_days=config.log_retention_days,
), with_aws)
identity = Identity("identity", IdentityArgs(
    cluster=config.cluster, account=account, bucket_arn=storage.bucket_arn,
    extra_read_buckets=config.extra_read_buckets, key_arn=storage.key_arn,
    log_group_arn=observability.log_group_arn,
), with_aws)
Budget("budget", BudgetArgs(
    cluster=config.cluster, account=account, monthly_usd=config.budget_monthly_usd,
    thresholds_percent=config.budget_thresholds_percent, emails=config.budget_emails,
    hard_stop_percent=config.budget_hard_stop_percent, scheduler_role_name=identity.role_names["scheduler"],
), with_aws)
pki = Pki("pki", PkiArgs(
    cluster=config.cluster, users=users, node_role_arns=identity.role_arns,
    administrator_arns=[account.deployer_arn, *config.operator_principal_arns], key_arn=storage.key_arn,
    scheduler_dns_name=dns_name, ephemeral=config.ephemeral,
), with_aws)
specs = NodeSpecs("node-specs", NodeSpecsArgs(
    cluster=config.cluster, environment_fingerprint=config.environment_fingerprint,
    scheduler_dns_name=dns_name, client_version_policy=config.client_version_policy, usage=config.usage_policy(),
    scaling=config.scaling(), bucket_name=storage.bucket_name,
    rollout=RolloutPolicy(max_fraction=config.environment_roll_fraction),
    worker_threads=config.worker_threads or None, worker_memory_limit=config.worker_memory_limit,
), with_aws)
environments = PublishedEnvironments("environments", PublishedEnvironmentsArgs(
    cluster=config.cluster, account=account, publishers=[(f"publisher-{principal_label(arn)}", arn) for arn in config.publisher_arns],
    readers=[(user.name, user.principal_arn) for user in users],
    bucket_name=storage.bucket_name, key_arn=storage.key_arn, image_lock=image_lock,
), with_aws)
scheduler_dns = SchedulerDns("scheduler-dns", SchedulerDnsArgs(
    cluster=config.cluster, account=account, zone_id=network.zone_id, scheduler_dns_name=dns_name,
    log_retention_days=config.log_retention_days,
), with_aws)
Compute("compute", ComputeArgs(
    cluster=config.cluster, image=image, subnet_ids=network.private_subnet_ids,
    security_group_ids={"scheduler": security_groups.scheduler_id, "worker": security_groups.worker_id},
    instance_profile_arns=identity.instance_profile_arns, cost_tags=config.cost_allocation_tags(),
    scheduler_instance_type=config.scheduler_instance_type, worker_instance_types=config.worker_instance_types,
    worker_max_size=config.worker_max_size, worker_on_demand_base=config.worker_on_demand_base,
    worker_on_demand_percent_above_base=config.worker_on_demand_percent_above_base,
    worker_drain_seconds=config.worker_drain_seconds, root_volume_gb=config.root_volume_gb,
    # The DNS updater must be listening before the scheduler's first launch event.
    boot_after=[identity, pki, specs, scheduler_dns],
), with_aws)

wake = Wake("wake", WakeArgs(cluster=config.cluster, account=account, users=users), with_aws)

# 3. Export what people need to connect; nothing here is secret.
pulumi.export("cluster", config.cluster)
pulumi.export("region", config.region)
pulumi.export("schedulerAddress", scheduler_address(dns_name))
pulumi.export("dashboardUrl", access.dashboard_url(dns_name))
pulumi.export("bucketName", storage.bucket_name)
pulumi.export("logGroupName", observability.log_group_name)
pulumi.export("clientSecretArns", pki.client_secret_arns)
pulumi.export("wakePolicyArn", wake.policy_arn)
pulumi.export("schedulerPortForwardCommand", access.port_forward_command(
    config.cluster, config.region, dns_name, conventions.SCHEDULER_PORT))
pulumi.export("dashboardPortForwardCommand", access.port_forward_command(
    config.cluster, config.region, dns_name, conventions.DASHBOARD_PORT))
pulumi.export("forwardedSchedulerAddress", f"tls://localhost:{conventions.SCHEDULER_PORT}")
pulumi.export("forwardedDashboardUrl", access.dashboard_url("localhost"))
pulumi.export("environmentPublishPolicyArn", environments.publish_policy_arn)
pulumi.export("environmentReadPolicyArn", environments.read_policy_arn)
