"""IAM: no grant of data or secret actions on every resource, no broad AWS-managed policies.

A cluster's roles read its own bucket, secrets, parameters and key, each named by ARN. A
statement that allows such an action on ``*`` (or on every bucket, secret, parameter or key
of the account) reaches other teams' data, so it fails however it is conditioned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from . import tokens
from .properties import as_list, as_mapping, is_unknown

#: Services whose every action reads or changes data, except the listed metadata-only ones.
DATA_SERVICES = frozenset({"s3", "secretsmanager", "dynamodb"})
METADATA_ONLY_ACTIONS = frozenset(
    {
        "s3:listallmybuckets",
        "s3:getbucketlocation",
        "secretsmanager:listsecrets",
        "secretsmanager:getrandompassword",
        "dynamodb:listtables",
        "dynamodb:describelimits",
        "dynamodb:describeendpoints",
    }
)
#: Services with a few data or secret actions among harmless ones (lower-case action names).
SENSITIVE_ACTIONS: Mapping[str, frozenset[str]] = {
    "ssm": frozenset(
        {"getparameter", "getparameters", "getparametersbypath", "getparameterhistory", "putparameter"}
    ),
    "kms": frozenset(
        {
            "decrypt",
            "encrypt",
            "reencryptfrom",
            "reencryptto",
            "generatedatakey",
            "generatedatakeywithoutplaintext",
            "generatedatakeypair",
            "generatedatakeypairwithoutplaintext",
            "creategrant",
        }
    ),
    "iam": frozenset({"passrole"}),
}

#: The resource part of an ARN naming every resource of its type: ``secret:*``, ``key/*``, ``parameter/*``...
_EVERYTHING = re.compile(r"(?:[A-Za-z0-9_-]+[/:])?\*")

#: AWS-managed policies that grant data, secrets or administration account-wide.
BROAD_MANAGED_POLICY_NAMES = frozenset(
    {
        "AdministratorAccess",
        "PowerUserAccess",
        "ReadOnlyAccess",
        "SecretsManagerReadWrite",
        "AmazonS3ReadOnlyAccess",
        "AmazonSSMReadOnlyAccess",
        "AmazonDynamoDBReadOnlyAccess",
        "AmazonEC2RoleforSSM",
        # Grants ssm:GetParameter(s) on "*": every parameter of the account. Session Manager needs
        # only ssm:UpdateInstanceInformation and the ssmmessages channel actions.
        "AmazonSSMManagedInstanceCore",
    }
)
_AWS_MANAGED_POLICY = re.compile(r"^arn:aws[a-z-]*:iam::aws:policy/(?:.+/)?(?P<name>[^/]+)$")


def is_wildcard_resource(resource: str) -> bool:
    """True for ``*`` and for an ARN that covers every resource of its type."""
    resource = resource.strip()
    if resource == "*":
        return True
    parts = resource.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return False
    service, name = parts[2], parts[5]
    if service == "s3":  # bucket/key, no type prefix: ``*`` and ``*/*`` span every bucket
        return name.startswith("*")
    return _EVERYTHING.fullmatch(name) is not None


def is_service_wildcard(action: str) -> bool:
    """True for ``*`` and ``service:*``: every action of a service."""
    return action.strip() == "*" or action.strip().endswith(":*")


def is_sensitive_action(action: str) -> bool:
    """True when ``action`` (which may hold wildcards) can match a data or secret action."""
    pattern = action.strip().lower()
    if pattern == "*":
        return True
    service_pattern, _, name_pattern = pattern.partition(":")
    for service in DATA_SERVICES:
        if fnmatchcase(service, service_pattern):
            if _has_wildcard(name_pattern) or f"{service}:{name_pattern}" not in METADATA_ONLY_ACTIONS:
                return True
    return any(
        fnmatchcase(service, service_pattern) and any(fnmatchcase(name, name_pattern) for name in names)
        for service, names in SENSITIVE_ACTIONS.items()
    )


def _has_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def document_problems(document: Any) -> list[str]:
    """Messages for each Allow statement granting data/secret actions, or whole services, on everything."""
    if is_unknown(document) or document is None:
        return []
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError as error:
            return [f"policy is not valid JSON ({error}), so it cannot be verified"]
    if not isinstance(document, Mapping):
        return []
    problems = []
    for index, statement in enumerate(as_list(document.get("Statement"))):
        if isinstance(statement, Mapping) and statement.get("Effect") == "Allow":
            problems += _statement_problems(_statement_label(index, statement), statement)
    return problems


def _statement_label(index: int, statement: Mapping[str, Any]) -> str:
    sid = statement.get("Sid")
    return f"Statement[{index}]" + (f" ({sid})" if isinstance(sid, str) and sid else "")


def _statement_problems(label: str, statement: Mapping[str, Any]) -> list[str]:
    if "NotResource" in statement:
        everything = "every resource but those under NotResource"
    else:
        wildcards = [r for r in as_list(statement.get("Resource")) if isinstance(r, str) and is_wildcard_resource(r)]
        if not wildcards:
            return []
        everything = ", ".join(repr(r) for r in wildcards)
    if "NotAction" in statement:
        return [f"{label} allows every action but those under NotAction on {everything}: name the actions"]
    offending = [
        action
        for action in as_list(statement.get("Action"))
        if isinstance(action, str) and (is_sensitive_action(action) or is_service_wildcard(action))
    ]
    if not offending:
        return []
    return [
        f"{label} allows {', '.join(offending)} on {everything}: scope data and secret actions "
        "to the cluster's own bucket, secrets, parameters and key by ARN"
    ]


def identity_policy_wildcards(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Problems in the policy documents a resource declares (policies, role inline policies)."""
    if resource_type in tokens.IAM_POLICY_DOCUMENT_TYPES:
        return document_problems(props.get("policy"))
    if resource_type == tokens.IAM_ROLE:
        problems = []
        for index, inline in enumerate(as_list(props.get("inlinePolicies"))):
            inline = as_mapping(inline)
            name = inline.get("name")
            label = f"inlinePolicies[{index}]" + (f" ({name})" if isinstance(name, str) else "")
            problems += [f"{label}: {problem}" for problem in document_problems(inline.get("policy"))]
        return problems
    return []


def broad_managed_policies(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Attachments of AWS-managed policies that grant data, secrets or administration everywhere."""
    if resource_type in tokens.IAM_POLICY_ATTACHMENT_TYPES:
        arns = [props.get("policyArn")]
    elif resource_type == tokens.IAM_ROLE:
        arns = as_list(props.get("managedPolicyArns"))
    elif resource_type == tokens.IAM_ROLE_POLICY_ATTACHMENTS_EXCLUSIVE:
        arns = as_list(props.get("policyArns"))
    else:
        return []
    problems = []
    for arn in arns:
        match = _AWS_MANAGED_POLICY.match(arn) if isinstance(arn, str) else None
        if match and (match["name"] in BROAD_MANAGED_POLICY_NAMES or match["name"].endswith("FullAccess")):
            problems.append(
                f"attaches the AWS-managed policy {match['name']}, which reaches every account resource "
                "of its services: write a policy scoped to the cluster's resources"
            )
    return problems
