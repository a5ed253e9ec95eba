"""What each node is told: its NodeSpec, written to SSM Parameter Store where the agent's AWS source reads it.

Specs are built as daskfleet.node.spec.NodeSpec objects and stored with dump_spec, so the
program and the agent share one schema. listen_host and contact_host are left for the
AWS source to fill with the instance's private address.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from daskfleet import conventions
from daskfleet.node.spec import NodeSpec, dump_spec
from daskfleet.environments.policy import RolloutPolicy
from daskfleet.scaling.policy import ScalingSpec
from daskfleet.usage.policy import UsagePolicy


@dataclass(frozen=True)
class NodeSpecsArgs:
    cluster: str
    environment_fingerprint: str
    scheduler_dns_name: str
    client_version_policy: conventions.ClientVersionPolicy
    usage: UsagePolicy
    #: Adaptive workers and idle shutdown, decided by the scheduler.
    scaling: ScalingSpec
    #: The fleet's bucket: published environments' packages come from it, the cluster's data lives in it.
    bucket_name: pulumi.Input[str]
    #: How the scheduler rolls the workers onto a published environment.
    rollout: RolloutPolicy
    #: The fleet's key (ARN), which encrypts the bucket's objects.
    key_arn: pulumi.Input[str] | None = None
    tags: Mapping[str, str] | None = None
    #: Each worker's threads and memory limit (distributed's form); None: derived from the instance by the agent.
    worker_threads: int | None = None
    worker_memory_limit: str | None = None
    #: The fleet's certificate vendor function (conventions.vendor_function_name): users' logins find it here.
    vendor_function: str | None = None


def scheduler_address(scheduler_dns_name: str) -> str:
    return f"tls://{scheduler_dns_name}:{conventions.SCHEDULER_PORT}"


def scheduler_spec(
    cluster: str, fingerprint: str, client_version_policy: conventions.ClientVersionPolicy, usage: UsagePolicy,
    scaling: ScalingSpec, bucket: str, rollout: RolloutPolicy, kms_key: str | None = None,
    vendor_function: str | None = None,
) -> NodeSpec:
    """The scheduler listens on its private address (SchedulerDns points its name there), sizes the workers and
    keeps the cluster's usage ledger against the stack's prices, per-user limits and budget."""
    return NodeSpec(
        cluster=cluster,
        role="scheduler",
        scheduler_port=conventions.SCHEDULER_PORT,
        dashboard_port=conventions.DASHBOARD_PORT,
        expected_fingerprint=fingerprint,
        client_version_policy=client_version_policy,
        usage=usage,
        scaling=scaling,
        bucket=bucket,
        **({"kms_key": kms_key} if kms_key else {}),
        rollout=rollout,
        vendor_function=vendor_function,
    )


def worker_spec(
    cluster: str, fingerprint: str, dns_name: str, bucket: str, kms_key: str | None = None, nthreads: int | None = None,
    memory_limit: str | None = None, vendor_function: str | None = None,
) -> NodeSpec:
    """Workers find the scheduler by its stable DNS name, and published environments' packages in the bucket.

    Their threads and memory limit are the stack's when it sets them; unset, the agent sizes the worker to its
    instance (daskfleet.node.sizing).
    """
    sizes = {key: value for key, value in (("nthreads", nthreads), ("memory_limit", memory_limit)) if value is not None}
    return NodeSpec(
        cluster=cluster,
        role="worker",
        scheduler_address=scheduler_address(dns_name),
        worker_port=conventions.WORKER_PORT,
        expected_fingerprint=fingerprint,
        bucket=bucket,
        **sizes,
        **({"kms_key": kms_key} if kms_key else {}),
        vendor_function=vendor_function,
    )


class NodeSpecs(pulumi.ComponentResource):
    """One SSM String parameter per node role, named by conventions.spec_parameter_name."""

    parameter_names: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: NodeSpecsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:NodeSpecs", name, None, opts)
        shared = pulumi.Output.all(args.bucket_name, args.key_arn)
        values = {
            "scheduler": shared.apply(lambda names: dump_spec(scheduler_spec(
                args.cluster, args.environment_fingerprint, args.client_version_policy, args.usage, args.scaling,
                names[0], args.rollout, names[1], vendor_function=args.vendor_function))),
            "worker": shared.apply(lambda names: dump_spec(worker_spec(
                args.cluster, args.environment_fingerprint, args.scheduler_dns_name, names[0], names[1],
                args.worker_threads, args.worker_memory_limit, args.vendor_function))),
        }
        self.parameter_names = {}
        for role, value in values.items():
            parameter = aws.ssm.Parameter(
                f"{name}-{role}",
                name=conventions.spec_parameter_name(args.cluster, role),
                description=f"daskfleet {args.cluster}: the {role} node spec",
                type="String",
                tier="Standard",
                value=value,
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.parameter_names[role] = parameter.name
        self.register_outputs({"parameter_names": self.parameter_names})
