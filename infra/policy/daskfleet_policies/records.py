"""Running the whole pack over plain resource records, such as a mocked program recorded.

``check_resources`` builds the same ``ResourceValidationArgs`` / ``StackValidationArgs`` the
engine would and calls every policy's own ``validate``, so a test of the program's
resources exercises exactly what ``pulumi preview --policy-pack`` runs.

A record is a mapping (or an object with these attributes, e.g. pulumi's
``MockResourceArgs``):

``type`` (or ``typ``)
    the type token, e.g. ``aws:s3/bucket:Bucket``
``name``
    the resource name
``props`` (or ``inputs``)
    its input properties. The engine and Pulumi's mocks both use the wire names (camelCase:
    ``cidrIpv4``, ``metadataOptions.httpTokens``); Python argument names (snake_case:
    ``cidr_ipv4``) are converted, at every depth, so either style works.
``outputs``, optional
    its output properties (a mock's ``new_resource`` state). Like the engine, resource
    policies judge the inputs and stack policies the outputs; without outputs, stack
    policies see the inputs too.
``id``, optional
    the id the resource got (a mock's ``new_resource`` return). It is exposed as the ``id``
    property, as in the engine's stack view, and is what an encryption configuration's
    ``bucket`` usually equals under mocks. Without it a bucket is found only by its
    ``bucket`` property.
``urn``, optional
    defaults to ``urn:pulumi:stack::project::<type>::<name>``.
``property_dependencies``, optional
    property name -> URNs (or names) of the resources its value came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    Policy,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import unknown_checking_proxy

from .pack import POLICIES

_SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")


@dataclass(frozen=True)
class Violation:
    """One policy violation: which policy, which resource, what is wrong."""

    policy: str
    urn: str
    message: str

    def __str__(self) -> str:
        return f"[{self.policy}] {self.urn}: {self.message}"


def camel_case_keys(value: Any) -> Any:
    """``value`` with every snake_case mapping key in camelCase (the engine's names)."""
    if isinstance(value, Mapping):
        return {_camel(key): camel_case_keys(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [camel_case_keys(item) for item in value]
    return value


def _camel(key: Any) -> Any:
    if not isinstance(key, str) or not _SNAKE.fullmatch(key):
        return key
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


def check_resources(records: Iterable[Any], policies: Sequence[Policy] = POLICIES) -> list[Violation]:
    """Every violation ``policies`` find among ``records`` (see the module docstring for their shape)."""
    records = list(records)
    declared = _policy_resources(records, "props", "inputs")
    deployed = _policy_resources(records, "outputs", "props", "inputs")
    violations: list[Violation] = []
    for policy in policies:
        if isinstance(policy, ResourceValidationPolicy):
            for resource in declared:
                args = ResourceValidationArgs(
                    resource.resource_type, resource.props, resource.urn, resource.name, resource.opts, None
                )
                policy.validate(args, _collector(violations, policy, resource.urn))
        elif isinstance(policy, StackValidationPolicy):
            policy.validate(StackValidationArgs(deployed), _collector(violations, policy, ""))
    return violations


def _collector(violations: list[Violation], policy: Policy, default_urn: str):
    def report_violation(message: str, urn: str | None = None) -> None:
        violations.append(Violation(policy.name, urn or default_urn, message))

    return report_violation


def _field(record: Any, *names: str) -> Any:
    for name in names:
        value = record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
        if value is not None:
            return value
    return None


def _policy_resources(records: list[Any], *props_fields: str) -> list[PolicyResource]:
    """Records as the engine's PolicyResources, their properties from the first of ``props_fields`` present."""
    resources = []
    dependencies: list[Mapping[str, Sequence[str]]] = []
    for record in records:
        resource_type, name = _field(record, "type", "typ"), _field(record, "name")
        if not resource_type or not name:
            raise ValueError(f"a resource record needs a type and a name, got {record!r}")
        props = camel_case_keys(dict(_field(record, *props_fields) or {}))
        resource_id = _field(record, "id", "resource_id")
        if resource_id:
            props.setdefault("id", resource_id)
        urn = _field(record, "urn") or f"urn:pulumi:stack::project::{resource_type}::{name}"
        options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
        resources.append(
            PolicyResource(resource_type, unknown_checking_proxy(props), urn, name, options, None, None, [], {})
        )
        dependencies.append(camel_case_keys(dict(_field(record, "property_dependencies") or {})))
    by_reference = {resource.urn: resource for resource in resources}
    by_reference.update({resource.name: resource for resource in resources if resource.name not in by_reference})
    for resource, wanted in zip(resources, dependencies, strict=True):
        resource.property_dependencies = {
            key: [by_reference[ref] for ref in refs if ref in by_reference] for key, refs in wanted.items()
        }
    return resources
