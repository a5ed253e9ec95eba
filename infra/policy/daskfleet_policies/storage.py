"""Where data and secrets rest: S3 buckets encrypted with KMS and closed to the public, secrets under a customer key.

A v7 bucket is guarded by separate resources (encryption configuration, public-access
block) that name it in their ``bucket`` property, so these are stack policies pairing each
bucket with its guards. A guard belongs to a bucket when either

* the engine recorded that the guard's ``bucket`` input was computed from that bucket
  (``property_dependencies["bucket"]`` holds the bucket's URN). This is what works during
  preview, when a new bucket's id is still unknown and the guard's ``bucket`` reads as
  unknown; or
* the guard's ``bucket`` value equals the bucket's ``bucket`` (name), ``id`` or ``arn``,
  as after deployment, or when a program passes the name as a plain string.

Names, URNs and parents are not used: a guard named after its bucket proves nothing.
"""

from __future__ import annotations

import re

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import tokens
from .properties import as_list, as_mapping, is_set, is_true, is_unknown, plain

KMS_ALGORITHMS = frozenset({"aws:kms", "aws:kms:dsse"})
PUBLIC_ACCESS_BLOCKS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


@dataclass(frozen=True)
class StackResource:
    """What a stack policy needs of one resource, with properties read through :func:`plain`."""

    urn: str
    resource_type: str
    name: str
    props: Mapping[str, Any]
    #: property name -> URNs of the resources its value was computed from
    property_dependencies: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_policy_resource(cls, resource: Any) -> StackResource:
        """From a ``pulumi_policy.PolicyResource`` as ``StackValidationArgs.resources`` holds them."""
        dependencies = {
            key: frozenset(dependency.urn for dependency in value)
            for key, value in (resource.property_dependencies or {}).items()
        }
        return cls(resource.urn, resource.resource_type, resource.name, plain(resource.props), dependencies)


def encryption_problems(props: Mapping[str, Any]) -> list[str]:
    """Why an encryption configuration is not SSE-KMS under a customer-managed key; empty when it is."""
    rules = props.get("rules")
    if is_unknown(rules):
        return []
    problems = []
    for rule in as_list(rules):
        default = as_mapping(rule).get("applyServerSideEncryptionByDefault")
        if is_unknown(rule) or is_unknown(default):
            return []
        algorithm = as_mapping(default).get("sseAlgorithm")
        key = as_mapping(default).get("kmsMasterKeyId")
        if is_unknown(algorithm) or (algorithm in KMS_ALGORITHMS and is_set(key)):
            return []
        if algorithm not in KMS_ALGORITHMS:
            problems.append(f"sseAlgorithm is {algorithm!r}, not aws:kms")
        else:
            problems.append("kmsMasterKeyId is not set, so the account's aws/s3 key is used, not the cluster key")
    return problems or ["it declares no encryption rule"]


def public_access_problems(props: Mapping[str, Any]) -> list[str]:
    """Which of the four public-access blocks are not on; empty when all are."""
    off = [name for name in PUBLIC_ACCESS_BLOCKS if not (is_unknown(props.get(name)) or is_true(props.get(name)))]
    return [f"{', '.join(off)} not true"] if off else []


def unencrypted_buckets(resources: Iterable[StackResource]) -> list[tuple[str, str]]:
    """(bucket URN, message) for each bucket without an SSE-KMS encryption configuration."""
    return _buckets_lacking(
        list(resources),
        tokens.BUCKET_ENCRYPTION_TYPES,
        encryption_problems,
        "BucketServerSideEncryptionConfiguration using aws:kms with the cluster's customer-managed key",
    )


def public_buckets(resources: Iterable[StackResource]) -> list[tuple[str, str]]:
    """(bucket URN, message) for each bucket without a public-access block that blocks all four ways."""
    return _buckets_lacking(
        list(resources),
        {tokens.BUCKET_PUBLIC_ACCESS_BLOCK},
        public_access_problems,
        "BucketPublicAccessBlock with blockPublicAcls, blockPublicPolicy, ignorePublicAcls and "
        "restrictPublicBuckets all true",
    )


def _buckets_lacking(
    resources: list[StackResource],
    guard_types: Iterable[str],
    problems_of: Callable[[Mapping[str, Any]], list[str]],
    wanted: str,
) -> list[tuple[str, str]]:
    guard_types = frozenset(guard_types)
    guards = [resource for resource in resources if resource.resource_type in guard_types]
    violations = []
    for bucket in (resource for resource in resources if resource.resource_type in tokens.BUCKET_TYPES):
        own = [guard for guard in guards if guards_bucket(guard, bucket)]
        findings = [(guard, problems_of(guard.props)) for guard in own]
        if any(not problems for _, problems in findings):
            continue
        if findings:
            details = "; ".join(f"{guard.name}: {', '.join(problems)}" for guard, problems in findings)
            violations.append((bucket.urn, f"bucket {bucket.name} has no {wanted}: {details}"))
        else:
            violations.append(
                (bucket.urn, f"bucket {bucket.name} has no {wanted} (one whose bucket property is this bucket)")
            )
    return violations


def guards_bucket(guard: StackResource, bucket: StackResource) -> bool:
    """Whether ``guard``'s ``bucket`` property refers to ``bucket`` (see the module docstring)."""
    if bucket.urn in guard.property_dependencies.get("bucket", ()):
        return True
    reference = guard.props.get("bucket")
    identities = {bucket.props.get(key) for key in ("bucket", "id", "arn")}
    return isinstance(reference, str) and reference != "" and reference in identities


def secret_encryption(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """A Secrets Manager secret is encrypted with a customer-managed key, not the account default."""
    if resource_type == tokens.SECRETSMANAGER_SECRET and not is_set(props.get("kmsKeyId")):
        return ["kmsKeyId is not set, so the account's aws/secretsmanager key is used: encrypt with the cluster key"]
    return []


#: People's roles, as certificates name them (spiffe://<cluster>/role/<role>).
_PERSON_ROLE_URI = re.compile(r"^spiffe://[a-z0-9-]+/role/(client|admin)$")
#: Nodes' roles, likewise.
_NODE_ROLE_URI = re.compile(r"^spiffe://[a-z0-9-]+/role/(scheduler|worker)$")


def _requests_for(props: Mapping[str, Any], role_uri: re.Pattern[str]) -> list[str]:
    return [uri for uri in props.get("uris") or [] if isinstance(uri, str) and role_uri.match(uri)]


def person_keys(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """No person's key pair is made by the stack: the certificate vendor signs keys people make on their machines."""
    if resource_type != "tls:index/certRequest:CertRequest":
        return []
    found = _requests_for(props, _PERSON_ROLE_URI)
    if found:
        return [f"a certificate request for {found[0]}: a person's private key would be made by the stack and kept in "
                "its state; the certificate vendor signs keys people make themselves (`daskfleet login`)"]
    return []


def node_keys(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """No node's key pair is made by the stack: a node makes its own at boot and the vendor signs it for 24 hours."""
    if resource_type != "tls:index/certRequest:CertRequest":
        return []
    found = _requests_for(props, _NODE_ROLE_URI)
    if found:
        return [f"a certificate request for {found[0]}: a node's private key would be made by the stack and kept in "
                "its state (and its certificate would outlive a day); nodes make their keys at boot and the "
                "certificate vendor signs them for 24 hours"]
    return []
