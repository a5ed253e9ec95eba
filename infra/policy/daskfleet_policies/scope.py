"""A cluster's own policies reach S3 and the fleet key only within its scope, never another cluster's prefix.

In a fleet, every cluster keeps its data under ``clusters/<cluster>/`` of one shared bucket. The
policies that belong to a cluster, the inline policy of its node roles (``daskfleet-<cluster>-
scheduler`` / ``-worker``) and its managed policies (``daskfleet-<cluster>-member``, ``-env-publish``,
``-env-read``), must not name an object, a listing prefix or a key encryption context that can lie
under ``clusters/`` outside the cluster's own prefix, nor grant a KMS data action without an
encryption context scoping it (``kms:EncryptionContext:aws:s3:arn`` to those objects, or
``kms:EncryptionContext:SecretARN`` to the cluster's own secrets). Other buckets (declared data)
and the rest of the fleet bucket (the published environments, shared data prefixes) are not
judged here: no other cluster's data lives there.

The fleet bucket is any bucket the stack declares (by its known name) or whose name starts with
``daskfleet-``; a bucket pattern that could match one (``*``, ``daskfleet-*``) counts as it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

from . import tokens
from .properties import allow_statements, as_list, is_unknown
from .storage import StackResource

CLUSTER_PREFIX = "clusters/"
FLEET_BUCKET_PATTERN = "daskfleet-*"
_NODE_ROLE = re.compile(r"^daskfleet-(?P<cluster>[a-z0-9-]+)-(?:scheduler|worker)$")
_CLUSTER_POLICY = re.compile(r"^daskfleet-(?P<cluster>[a-z0-9-]+)-(?:member|env-publish|env-read)$")
_S3_ARN = re.compile(r"^arn:[a-z-]+:s3:::(?P<bucket>[^/]*)(?:/(?P<key>.*))?$")
_SECRET_ARN = re.compile(r"^arn:[a-z-]+:secretsmanager:[^:]*:[^:]*:secret:(?P<name>.*)$")
#: KMS actions that use a key on data (lower case).
KMS_DATA_ACTIONS = frozenset({
    "decrypt", "encrypt", "reencryptfrom", "reencryptto", "generatedatakey", "generatedatakeywithoutplaintext",
    "generatedatakeypair", "generatedatakeypairwithoutplaintext", "creategrant",
})
S3_CONTEXT = "kms:encryptioncontext:aws:s3:arn"
SECRET_CONTEXT = "kms:encryptioncontext:secretarn"


def _literal_prefix(pattern: str) -> tuple[str, bool]:
    """The pattern's text before its first wildcard, and whether it has one."""
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=-1)
    return (pattern, False) if cut < 0 else (pattern[:cut], True)


def key_in_scope(key_pattern: str, cluster: str) -> bool:
    """Whether every key ``key_pattern`` can match that lies under ``clusters/`` lies under ``clusters/<cluster>/``."""
    own = f"{CLUSTER_PREFIX}{cluster}/"
    literal, wild = _literal_prefix(key_pattern)
    if literal.startswith(own):
        return True
    if not wild:
        return not literal.startswith(CLUSTER_PREFIX)
    # A wildcard after a literal that is compatible with clusters/ can reach another cluster's prefix.
    return not (literal.startswith(CLUSTER_PREFIX) or CLUSTER_PREFIX.startswith(literal))


def _is_fleet_bucket(bucket_pattern: str, fleet_buckets: frozenset[str]) -> bool:
    candidates = set(fleet_buckets) | {FLEET_BUCKET_PATTERN.replace("*", "x")}
    if fnmatchcase(bucket_pattern, FLEET_BUCKET_PATTERN):
        return True
    return any(fnmatchcase(candidate, bucket_pattern) for candidate in candidates)


def _s3_resource_problem(resource: str, cluster: str, fleet_buckets: frozenset[str]) -> str | None:
    if resource.strip() == "*":
        return "'*' (every bucket, every cluster's prefix)"
    match = _S3_ARN.match(resource.strip())
    if match is None or not _is_fleet_bucket(match["bucket"], fleet_buckets):
        return None
    if match["key"] is None:
        return None  # the bucket itself: listing is judged by its s3:prefix condition
    if not key_in_scope(match["key"], cluster):
        return f"{resource!r}"
    return None


def _conditions(statement: Mapping[str, Any]) -> dict[str, list[str]]:
    """Condition key (lower case) -> its values, across the positive operators (negated ones do not scope)."""
    found: dict[str, list[str]] = {}
    for operator, keys in (statement.get("Condition") or {}).items():
        if not isinstance(keys, Mapping) or "Not" in operator:
            continue
        for key, values in keys.items():
            found.setdefault(key.lower(), []).extend(str(value) for value in as_list(values))
    return found


def _grants(statement: Mapping[str, Any], service: str, names: frozenset[str] | None = None) -> list[str]:
    if "NotAction" in statement:
        return ["every action but those under NotAction"]
    granted = []
    for action in as_list(statement.get("Action")):
        if not isinstance(action, str):
            continue
        pattern = action.strip().lower()
        service_pattern, _, name_pattern = pattern.partition(":") if pattern != "*" else ("*", "", "*")
        if not fnmatchcase(service, service_pattern):
            continue
        if names is None or any(fnmatchcase(name, name_pattern or "*") for name in names):
            granted.append(action)
    return granted


def _statement_problems(label: str, statement: Mapping[str, Any], cluster: str,
                        fleet_buckets: frozenset[str]) -> list[str]:
    problems = []
    resources = [r for r in as_list(statement.get("Resource")) if isinstance(r, str)]
    conditions = _conditions(statement)
    s3 = _grants(statement, "s3")
    if s3:
        if "NotResource" in statement:
            problems.append(f"{label} allows {', '.join(s3)} on every resource but those under NotResource")
        outside = [problem for r in resources if (problem := _s3_resource_problem(r, cluster, fleet_buckets))]
        if outside:
            problems.append(f"{label} allows {', '.join(s3)} on {', '.join(outside)}, outside "
                            f"{CLUSTER_PREFIX}{cluster}/")
        listed = [r for r in resources if (m := _S3_ARN.match(r.strip())) and m["key"] is None
                  and _is_fleet_bucket(m["bucket"], fleet_buckets)]
        if listed and _grants(statement, "s3", frozenset({"listbucket", "listbucketversions"})):
            prefixes = conditions.get("s3:prefix")
            if not prefixes:
                problems.append(f"{label} lists the fleet bucket without an s3:prefix condition: every cluster's "
                                "keys would show")
            elif not all(key_in_scope(prefix, cluster) for prefix in prefixes):
                problems.append(f"{label} lists the fleet bucket under {prefixes!r}, outside {CLUSTER_PREFIX}{cluster}/")
    kms = _grants(statement, "kms", KMS_DATA_ACTIONS)
    if kms:
        problems += _key_problems(label, kms, conditions, cluster, fleet_buckets)
    return problems


def _key_problems(label: str, granted: list[str], conditions: Mapping[str, list[str]], cluster: str,
                  fleet_buckets: frozenset[str]) -> list[str]:
    objects, secrets = conditions.get(S3_CONTEXT), conditions.get(SECRET_CONTEXT)
    if not objects and not secrets:
        return [f"{label} allows {', '.join(granted)} without an encryption context naming the cluster's objects "
                "(kms:EncryptionContext:aws:s3:arn) or secrets (kms:EncryptionContext:SecretARN)"]
    outside = [value for value in objects or [] if _s3_resource_problem(value, cluster, fleet_buckets)]
    outside += [value for value in secrets or []
                if not ((m := _SECRET_ARN.match(value)) and m["name"].startswith(f"daskfleet/{cluster}/"))]
    if outside:
        return [f"{label} allows {', '.join(granted)} in encryption contexts {outside!r}, outside the cluster's scope"]
    return []


def _owner(resource: StackResource) -> str | None:
    """The cluster a policy belongs to: its node role's, or its managed policy's name."""
    if resource.resource_type == tokens.IAM_ROLE_POLICY:
        role = resource.props.get("role")
        match = _NODE_ROLE.match(role) if isinstance(role, str) else None
    elif resource.resource_type == tokens.IAM_POLICY:
        name = resource.props.get("name")
        match = _CLUSTER_POLICY.match(name) if isinstance(name, str) else None
    else:
        return None
    return match["cluster"] if match else None


def _fleet_buckets(resources: Iterable[StackResource]) -> frozenset[str]:
    names = set()
    for resource in resources:
        if resource.resource_type in tokens.BUCKET_TYPES:
            name = resource.props.get("bucket")
            if isinstance(name, str) and not is_unknown(name):
                names.add(name)
    return frozenset(names)


def out_of_scope_grants(resources: Iterable[StackResource]) -> list[tuple[str, str]]:
    """(URN, message) for each grant of a cluster's policy on S3 or the key outside the cluster's scope."""
    resources = list(resources)
    fleet_buckets = _fleet_buckets(resources)
    reported = []
    for resource in resources:
        cluster = _owner(resource)
        if cluster is None:
            continue
        for label, statement in allow_statements(resource.props.get("policy")):
            for problem in _statement_problems(label, statement, cluster, fleet_buckets):
                reported.append((resource.urn, f"cluster {cluster}: {problem}"))
    return reported
