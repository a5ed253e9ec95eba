"""Small readers for what the program declared: IAM statements, tags, resource classes."""

from __future__ import annotations

import importlib
import keyword
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from infra.program import ProgramRecord, ResourceRecord

PROVIDER_TYPE = "pulumi:providers:aws"


def _pattern(glob: str) -> re.Pattern[str]:
    """IAM wildcards: * any run of characters, ? exactly one."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob) + r"\Z", re.I)


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def statements(policy: str | dict[str, Any]) -> list[dict[str, Any]]:
    document = json.loads(policy) if isinstance(policy, str) else policy
    return list(document["Statement"])


def allowing(policy: str | dict[str, Any], action: str, resource: str) -> list[dict[str, Any]]:
    """The Allow statements granting ``action`` on ``resource`` (conditions not evaluated)."""
    return [
        statement
        for statement in statements(policy)
        if statement["Effect"] == "Allow"
        and any(_pattern(a).match(action) for a in _listed(statement["Action"]))
        and any(_pattern(r).match(resource) for r in _listed(statement["Resource"]))
    ]


def allows(policy: str | dict[str, Any], action: str, resource: str) -> bool:
    return bool(allowing(policy, action, resource))


def provider(record: ProgramRecord) -> ResourceRecord:
    return record.one(PROVIDER_TYPE)


def provider_default_tags(record: ProgramRecord) -> dict[str, str]:
    default_tags = provider(record).inputs["defaultTags"]
    return json.loads(default_tags)["tags"] if isinstance(default_tags, str) else default_tags["tags"]


@lru_cache(maxsize=None)
def resource_class(type_token: str) -> type:
    """The pulumi-aws (or pulumi-tls) Python class declaring ``type_token``, e.g. aws:s3/bucket:Bucket."""
    package, module_path, class_name = type_token.split(":")
    module = module_path.split("/")[0]
    if keyword.iskeyword(module):  # the SDK's Python name for a keyword: aws:lambda/... lives in pulumi_aws.lambda_
        module += "_"
    root = importlib.import_module(f"pulumi_{package}")
    owner = root if module == "index" else importlib.import_module(f"pulumi_{package}.{module}")
    return getattr(owner, class_name)


def is_taggable(type_token: str) -> bool:
    """Whether the resource takes tags (so provider default tags reach it)."""
    owner = importlib.import_module(resource_class(type_token).__module__)
    args = getattr(owner, resource_class(type_token).__name__ + "Args")
    return hasattr(args, "tags")


def aws_resources(record: ProgramRecord) -> list[ResourceRecord]:
    return [r for r in record.resources if r.custom and r.type.startswith("aws:")]


def all_strings(value: Any) -> Iterable[str]:
    """Every string inside a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from all_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from all_strings(item)
