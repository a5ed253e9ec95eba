"""Calling the pack's policies with the argument objects the engine builds, minus the engine.

Properties are wrapped in pulumi_policy's unknown-checking proxy exactly as the analyzer
does, so a test can put the engine's preview sentinel (:data:`UNKNOWN`) where a value
would not be known yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from daskfleet_policies import POLICIES

#: How the engine sends a value it cannot know during preview.
UNKNOWN = UNKNOWN_STRING_VALUE


def policy_named(name: str):
    (policy,) = [policy for policy in POLICIES if policy.name == name]
    return policy


def urn_of(resource_type: str, name: str) -> str:
    return f"urn:pulumi:dev::daskfleet::{resource_type}::{name}"


def _options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def resource_violations(policy_name: str, resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """The messages one resource policy reports for one resource."""
    args = ResourceValidationArgs(
        resource_type, unknown_checking_proxy(dict(props)), urn_of(resource_type, "subject"), "subject", _options(),
        None,
    )
    messages: list[str] = []
    policy_named(policy_name).validate(args, lambda message, urn=None: messages.append(message))
    return messages


def stack_resource(resource_type: str, name: str, props: Mapping[str, Any]) -> PolicyResource:
    return PolicyResource(
        resource_type, unknown_checking_proxy(dict(props)), urn_of(resource_type, name), name, _options(), None,
        None, [], {},
    )


def depends(resource: PolicyResource, prop: str, *on: PolicyResource) -> PolicyResource:
    """Record, as the engine does, that ``resource``'s ``prop`` was computed from ``on``."""
    resource.property_dependencies[prop] = list(on)
    resource.dependencies.extend(on)
    return resource


def stack_violations(policy_name: str, resources: Sequence[PolicyResource]) -> list[tuple[str, str]]:
    """(URN, message) for each violation one stack policy reports."""
    reported: list[tuple[str, str]] = []
    policy_named(policy_name).validate(
        StackValidationArgs(list(resources)), lambda message, urn=None: reported.append((urn, message))
    )
    return reported
