"""A fleet of secured Dask clusters on AWS: one network, bucket and key, and each cluster its own trust boundary.

Without ``clusters`` the fleet is one cluster, the stack's own. Every configuration key is
documented in Pulumi.example.yaml.
"""

import pulumi
import pulumi_aws as aws
from daskfleet import conventions

from daskfleet_infra import access
from daskfleet_infra.cluster import Cluster, ClusterArgs, SharedResources, is_stack_cluster
from daskfleet_infra.config import read_stack_config
from daskfleet_infra.data_access import shared_data_prefixes
from daskfleet_infra.limits import check_policy_sizes
from daskfleet_infra.lookups import look_up_account, look_up_image, look_up_image_lock, look_up_network
from daskfleet_infra.network import Network, NetworkArgs
from daskfleet_infra.security_groups import SecurityGroups, SecurityGroupsArgs
from daskfleet_infra.storage import Storage, StorageArgs
from daskfleet_infra.vendor import CertificateVendor, CertificateVendorArgs

# 1. Validate the configuration and look up the account, network and image: nothing real is declared before.
config = read_stack_config()
fleet = config.fleet
provider = aws.Provider(
    "aws", region=config.region, default_tags=aws.ProviderDefaultTagsArgs(tags=config.cost_allocation_tags())
)
invoke = pulumi.InvokeOptions(provider=provider)
account = look_up_account(config, invoke)
check_policy_sizes(config, account)
network_facts = look_up_network(config, account, invoke)
image = look_up_image(config, invoke)
image_lock = look_up_image_lock(config, image)
own = next((cluster for cluster in fleet if is_stack_cluster(cluster, config)), None)
people = sorted({user for cluster in fleet for user in cluster.people}, key=lambda user: user.name)
with_aws = pulumi.ResourceOptions(providers=[provider])

# 2. The fleet's shared resources, then each cluster.
network = Network("network", NetworkArgs(
    cluster=config.cluster, account=account, facts=network_facts, vpc_id=config.vpc_id,
    subnet_ids=tuple(config.subnet_ids), nat_gateway=config.nat_gateway,
    zone_name=config.cluster_zone_name if own else None,
    fleet_zone_name=config.dns_zone if len(fleet) > (1 if own else 0) else None,
), with_aws)
security_groups = SecurityGroups("security-groups", SecurityGroupsArgs(
    cluster=config.cluster, vpc_id=network.vpc_id, vpc_cidr=network.vpc_cidr,
    s3_prefix_list_id=network.s3_prefix_list_id, client_cidrs=tuple(config.client_cidrs),
    client_security_group_ids=tuple(config.client_security_group_ids), internet_egress=config.nat_gateway,
), with_aws)
storage = Storage("storage", StorageArgs(
    cluster=config.cluster, account=account, ephemeral=config.ephemeral,
    scratch_expiration_days=config.scratch_expiration_days, user_principal_arns=[user.principal_arn for user in people],
    publisher_arns=sorted({arn for cluster in fleet for arn in cluster.settings.publisher_arns}),
    clusters=[cluster.name for cluster in fleet],
    shared_prefixes=shared_data_prefixes([entry for cluster in fleet for entry in cluster.data]),
    image_lock=image_lock,
), with_aws)
vendor = CertificateVendor("cert-vendor", CertificateVendorArgs(
    fleet=config.cluster, account=account, clusters=[cluster.name for cluster in fleet], key_arn=storage.key_arn,
    log_retention_days=config.log_retention_days,
), with_aws)
shared = SharedResources(
    account=account, image=image, subnet_ids=network.private_subnet_ids,
    security_group_ids={"scheduler": security_groups.scheduler_id, "worker": security_groups.worker_id},
    bucket_name=storage.bucket_name, bucket_arn=storage.bucket_arn, key_arn=storage.key_arn,
    vendor_function=vendor.function_name, vendor_role_arn=vendor.role_arn,
)
clusters = {
    cluster.name: Cluster(ClusterArgs(
        config=cluster, stack=config, shared=shared,
        zone_id=network.zone_id if is_stack_cluster(cluster, config) else network.fleet_zone_id,
    ), with_aws)
    for cluster in fleet
}

# 3. Export what people need to reach each cluster; nothing here is secret.
pulumi.export("cluster", config.cluster)
pulumi.export("region", config.region)
pulumi.export("bucketName", storage.bucket_name)
pulumi.export("certificateVendor", vendor.function_name)
pulumi.export("clusters", {name: cluster.outputs for name, cluster in clusters.items()})
pulumi.export("forwardedSchedulerAddress", f"tls://localhost:{conventions.SCHEDULER_PORT}")
pulumi.export("forwardedDashboardUrl", access.dashboard_url("localhost"))
if own is not None:  # what a stack from before fleets exported for its one cluster
    legacy = clusters[own.name]
    for key in ("schedulerAddress", "dashboardUrl", "logGroupName", "clientSecretArns", "schedulerPortForwardCommand",
                "dashboardPortForwardCommand", "environmentPublishPolicyArn"):
        pulumi.export(key, legacy.outputs[key])
    for key, value in legacy.legacy_outputs.items():
        pulumi.export(key, value)
