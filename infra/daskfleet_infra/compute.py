"""The cluster's instances: a self-healing scheduler group of one and a spot-friendly worker group.

Launch templates require IMDSv2 (hop limit 1, tags readable), encrypt the root volume, give
no public address and no key pair, and carry user data that only names cluster and role
(daskfleet.aws.userdata). Worker instances are protected from scale-in: only the cluster's own
scaler picks which worker leaves, and a TERMINATING lifecycle hook gives it time to drain. Both
groups may go to 0: the scheduler sizes its workers (min 0), and sets its own group to 0 when
the cluster is idle; a user's ``daskfleet.connect`` sets it back to 1. Pulumi leaves both desired
capacities to them after creation.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from daskfleet import conventions
from daskfleet.aws.userdata import render_user_data

from .lookups import Image

#: Resources whose tags instances' launch templates set.
TAGGED_AT_LAUNCH: tuple[str, ...] = ("instance", "volume", "network-interface")
SPOT_ALLOCATION_STRATEGY = "price-capacity-optimized"


@dataclass(frozen=True)
class ComputeArgs:
    cluster: str
    image: Image
    subnet_ids: Sequence[pulumi.Input[str]]
    #: node role -> its security group id / instance profile ARN.
    security_group_ids: Mapping[str, pulumi.Input[str]]
    instance_profile_arns: Mapping[str, pulumi.Input[str]]
    #: Cost-allocation tags, repeated on instances and volumes (ASG instances get no provider default tags).
    cost_tags: Mapping[str, str]
    scheduler_instance_type: str
    worker_instance_types: Sequence[str]
    worker_max_size: int
    worker_on_demand_base: int
    worker_on_demand_percent_above_base: int
    worker_drain_seconds: int
    root_volume_gb: int
    #: What must exist before a node boots: its role's policies, its secret, its spec.
    boot_after: Sequence[pulumi.Resource] = ()
    #: Tags of the launch templates themselves beyond the provider's defaults (None: the defaults say it all).
    tags: Mapping[str, str] | None = None
    #: Start with the scheduler running (a lone cluster, as before fleets); else asleep until a member connects.
    start_awake: bool = True


def node_tags(args: ComputeArgs, role: conventions.Role) -> dict[str, str]:
    """Tags of a node's instance and volumes; the agent checks cluster and role through instance metadata."""
    return {
        **args.cost_tags,
        conventions.TAG_CLUSTER: args.cluster,
        conventions.TAG_ROLE: role,
        "Name": conventions.resource_name(args.cluster, role),
    }


def encoded_user_data(cluster: str, role: conventions.Role) -> str:
    return base64.b64encode(render_user_data(cluster, role).encode()).decode()


class Compute(pulumi.ComponentResource):
    """Launch templates, the scheduler and worker auto scaling groups, and the workers' drain hook."""

    group_names: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ComputeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Compute", name, None, opts)
        self._prefix, self._args = name, args
        child = pulumi.ResourceOptions(parent=self)
        # The scheduler's scaler and users' wake own the desired capacities; a later `pulumi up` must not reset them.
        scaled = pulumi.ResourceOptions(parent=self, depends_on=list(args.boot_after), ignore_changes=["desiredCapacity"])
        templates = {role: self._launch_template(role) for role in conventions.NODE_ROLES}

        scheduler = aws.autoscaling.Group(
            f"{name}-scheduler",
            name=conventions.node_group_name(args.cluster, "scheduler"),
            # 0 while idle (the scheduler stopped itself), 1 while in use; never more, so a user's wake is bounded.
            # A fleet's new clusters start asleep: hundreds of schedulers need not boot at once to go idle again.
            min_size=0,
            max_size=1,
            desired_capacity=1 if args.start_awake else 0,
            vpc_zone_identifiers=list(args.subnet_ids),
            launch_template=aws.autoscaling.GroupLaunchTemplateArgs(
                id=templates["scheduler"].id, version=templates["scheduler"].latest_version.apply(str),
            ),
            # A new template (image, user data) replaces the one scheduler; clients reconnect by name.
            instance_refresh=aws.autoscaling.GroupInstanceRefreshArgs(
                strategy="Rolling",
                preferences=aws.autoscaling.GroupInstanceRefreshPreferencesArgs(min_healthy_percentage=0),
            ),
            force_delete=True,
            tags=self._group_tags("scheduler"),
            opts=scaled,
        )
        workers = aws.autoscaling.Group(
            f"{name}-worker",
            name=conventions.node_group_name(args.cluster, "worker"),
            min_size=0,
            max_size=args.worker_max_size,
            vpc_zone_identifiers=list(args.subnet_ids),
            mixed_instances_policy=aws.autoscaling.GroupMixedInstancesPolicyArgs(
                instances_distribution=aws.autoscaling.GroupMixedInstancesPolicyInstancesDistributionArgs(
                    on_demand_base_capacity=args.worker_on_demand_base,
                    on_demand_percentage_above_base_capacity=args.worker_on_demand_percent_above_base,
                    spot_allocation_strategy=SPOT_ALLOCATION_STRATEGY,
                ),
                launch_template=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateArgs(
                    launch_template_specification=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgs(
                        launch_template_id=templates["worker"].id, version=templates["worker"].latest_version.apply(str),
                    ),
                    overrides=[
                        aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateOverrideArgs(instance_type=instance_type)
                        for instance_type in args.worker_instance_types
                    ],
                ),
            ),
            capacity_rebalance=True,
            protect_from_scale_in=True,
            # Destroying the stack must not wait on protected workers.
            force_delete=True,
            tags=self._group_tags("worker"),
            opts=scaled,
        )
        aws.autoscaling.LifecycleHook(
            f"{name}-worker-drain",
            name=conventions.DRAIN_HOOK_NAME,
            autoscaling_group_name=workers.name,
            lifecycle_transition="autoscaling:EC2_INSTANCE_TERMINATING",
            heartbeat_timeout=args.worker_drain_seconds,
            default_result="CONTINUE",
            opts=child,
        )
        self.group_names = {"scheduler": scheduler.name, "worker": workers.name}
        self.register_outputs({"group_names": self.group_names})

    def _launch_template(self, role: conventions.Role) -> aws.ec2.LaunchTemplate:
        args = self._args
        return aws.ec2.LaunchTemplate(
            f"{self._prefix}-{role}",
            description=f"daskfleet {args.cluster} {role} nodes",
            image_id=args.image.ami_id,
            instance_type=args.scheduler_instance_type if role == "scheduler" else None,
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=args.instance_profile_arns[role]),
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
                instance_metadata_tags="enabled",
            ),
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name=args.image.root_device_name,
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=args.root_volume_gb, volume_type="gp3", encrypted="true", delete_on_termination="true",
                ),
            )],
            network_interfaces=[aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                device_index=0,
                associate_public_ip_address="false",
                delete_on_termination="true",
                security_groups=[args.security_group_ids[role]],
            )],
            user_data=encoded_user_data(args.cluster, role),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=node_tags(args, role))
                for kind in TAGGED_AT_LAUNCH
            ],
            update_default_version=True,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _group_tags(self, role: conventions.Role) -> list[aws.autoscaling.GroupTagArgs]:
        return [
            aws.autoscaling.GroupTagArgs(key=key, value=value, propagate_at_launch=True)
            for key, value in sorted(node_tags(self._args, role).items())
        ]
