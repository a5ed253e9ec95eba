"""The daskfleet policies as CrossGuard policy objects, every one mandatory."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from . import compute, iam, network, scaling, scope, storage
from .properties import plain
from .storage import StackResource

PACK_NAME = "daskfleet-aws"

ResourceCheck = Callable[[str, Mapping[str, Any]], list[str]]
StackCheck = Callable[[Iterable[StackResource]], list[tuple[str, str]]]


def resource_policy(name: str, description: str, check: ResourceCheck) -> ResourceValidationPolicy:
    """A mandatory resource policy reporting each message ``check(type, props)`` returns."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(args.resource_type, plain(args.props)):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=EnforcementLevel.MANDATORY
    )


def stack_policy(name: str, description: str, check: StackCheck) -> StackValidationPolicy:
    """A mandatory stack policy reporting each (URN, message) ``check(resources)`` returns."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for urn, message in check(StackResource.from_policy_resource(r) for r in args.resources):
            report_violation(message, urn)

    return StackValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=EnforcementLevel.MANDATORY
    )


POLICIES: list[Policy] = [
    stack_policy(
        "s3-bucket-encrypted-with-kms",
        "Every S3 bucket has a server-side encryption configuration using SSE-KMS with a customer-managed key.",
        storage.unencrypted_buckets,
    ),
    stack_policy(
        "s3-bucket-public-access-blocked",
        "Every S3 bucket has a public-access block with all four blocks on.",
        storage.public_buckets,
    ),
    resource_policy(
        "no-world-open-ingress",
        "No security-group ingress from 0.0.0.0/0 or ::/0.",
        network.world_open_ingress,
    ),
    resource_policy(
        "no-ssh-ingress",
        "No security-group ingress reaches TCP port 22.",
        network.ssh_ingress,
    ),
    resource_policy(
        "imdsv2-required",
        "Launch templates and instances require IMDSv2 tokens with a hop limit of 1.",
        compute.imds_v2,
    ),
    resource_policy(
        "ebs-encrypted",
        "EBS volumes, and the block devices of launch templates and instances, are encrypted.",
        compute.ebs_encryption,
    ),
    resource_policy(
        "no-public-ip",
        "Launch templates and instances do not associate public IP addresses.",
        compute.public_ip,
    ),
    resource_policy(
        "no-ssh-key-pair",
        "Launch templates and instances carry no EC2 key pair.",
        compute.ssh_key_pair,
    ),
    resource_policy(
        "no-secrets-in-user-data",
        "EC2 user data carries no private key or AWS credential.",
        compute.user_data_secrets,
    ),
    resource_policy(
        "iam-no-wildcard-data-access",
        "No IAM statement allows data or secret actions, or every action of a service, on every resource.",
        iam.identity_policy_wildcards,
    ),
    resource_policy(
        "iam-no-broad-managed-policies",
        "No role or principal gets an AWS-managed policy granting data, secrets or administration account-wide.",
        iam.broad_managed_policies,
    ),
    resource_policy(
        "autoscaling-changes-name-their-group",
        "No IAM statement allows changing auto scaling groups (capacity, instances, configuration) but on named groups.",
        scaling.unnamed_group_changes,
    ),
    stack_policy(
        "worker-group-changed-only-by-its-scheduler",
        "Only a cluster's scheduler role may change its worker group; its scheduler group only has its capacity set.",
        scaling.foreign_group_changes,
    ),
    stack_policy(
        "cluster-data-access-in-scope",
        "A cluster's node roles and its own policies reach S3 objects, listings and the fleet key only within its "
        "prefix clusters/<cluster>/ of the fleet bucket (besides shared prefixes and other buckets), never another's.",
        scope.out_of_scope_grants,
    ),
    resource_policy(
        "secrets-encrypted-with-customer-key",
        "Secrets Manager secrets are encrypted with a customer-managed KMS key.",
        storage.secret_encryption,
    ),
    resource_policy(
        "no-person-private-key-in-the-stack",
        "No certificate request for a person's role (client, admin): people's keys are made on their machines and "
        "signed by the certificate vendor.",
        storage.person_keys,
    ),
    resource_policy(
        "no-node-private-key-in-the-stack",
        "No certificate request for a node's role (scheduler, worker): nodes make their keys at boot and the "
        "certificate vendor signs them for 24 hours.",
        storage.node_keys,
    ),
]
