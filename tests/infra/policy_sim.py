"""A small IAM policy evaluator for one account: identity policies and a resource's policy, as AWS combines them.

Test machinery (``infra.policy_sim``), for asking of the program's declared policies who may do what:
an explicit Deny in any applicable policy wins; otherwise an Allow in the principal's identity
policies or in the resource's policy allows (same account). A key policy statement naming the
account's root delegates to IAM: it allows nothing by itself. Supported: Action/NotAction,
Resource/NotResource, Principal ("*", AWS ARNs, the root), wildcards ``*`` and ``?``, policy
variables ``${...}`` from the request context, and the condition operators listed in
``OPERATORS`` (``...IfExists`` too). Anything else raises, so an unsupported policy can never
quietly allow or deny.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

_VARIABLE = re.compile(r"\$\{([^}]+)\}")


@lru_cache(maxsize=4096)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text), re.DOTALL)


def wildcard_match(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    return _pattern(pattern).fullmatch(value) is not None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass(frozen=True)
class Request:
    """One API call: who (ARN of the IAM user or role), what, on what, and the request's context keys."""

    principal: str
    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)

    def value(self, key: str) -> str | None:
        if key == "aws:PrincipalArn":
            return self.principal
        return self.context.get(key)


def _substitute(text: str, request: Request) -> str:
    def value(match: re.Match[str]) -> str:
        found = request.value(match[1])
        if found is None:
            raise ValueError(f"policy variable ${{{match[1]}}} has no value in {request}")
        return found

    return _VARIABLE.sub(value, text)


def _strings(values: Any) -> list[str]:
    return [str(value).lower() if isinstance(value, bool) else str(value) for value in _as_list(values)]


def _string_like(expected: str, actual: str) -> bool:
    return wildcard_match(expected, actual)


OPERATORS = {
    "StringEquals": (lambda e, a: e == a, False),
    "StringNotEquals": (lambda e, a: e == a, True),
    "StringLike": (_string_like, False),
    "StringNotLike": (_string_like, True),
    "ArnEquals": (lambda e, a: e == a, False),
    "ArnNotEquals": (lambda e, a: e == a, True),
    "ArnLike": (_string_like, False),
    "ArnNotLike": (_string_like, True),
    "Bool": (lambda e, a: e.lower() == a.lower(), False),
}


def _condition_holds(operator: str, key: str, expected: Any, request: Request) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if base not in OPERATORS:
        raise NotImplementedError(f"condition operator {operator} is not modelled")
    compare, negated = OPERATORS[base]
    actual = request.value(key)
    if actual is None:
        return if_exists or negated
    matches = any(compare(_substitute(value, request), actual) for value in _strings(expected))
    return not matches if negated else matches


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], request: Request) -> bool:
    return all(_condition_holds(operator, key, expected, request)
               for operator, keys in conditions.items() for key, expected in keys.items())


def _action_matches(statement: Mapping[str, Any], action: str) -> bool:
    if "NotAction" in statement:
        return not any(wildcard_match(p, action, case_sensitive=False) for p in _as_list(statement["NotAction"]))
    return any(wildcard_match(p, action, case_sensitive=False) for p in _as_list(statement.get("Action")))


def _resource_matches(statement: Mapping[str, Any], request: Request) -> bool:
    if "NotResource" in statement:
        return not any(wildcard_match(_substitute(p, request), request.resource) for p in _as_list(statement["NotResource"]))
    return any(wildcard_match(_substitute(p, request), request.resource) for p in _as_list(statement.get("Resource")))


def _account_root(principal: str) -> str:
    account = principal.split(":")[4]
    return f"arn:{principal.split(':')[1]}:iam::{account}:root"


def _principal_matches(statement: Mapping[str, Any], request: Request, *, delegating: bool) -> bool:
    principal = statement.get("Principal")
    if principal == "*" or principal == {"AWS": "*"}:
        return True
    if not isinstance(principal, Mapping):
        raise NotImplementedError(f"principal {principal!r} is not modelled")
    names = _as_list(principal.get("AWS"))
    if request.principal in names:
        return True
    # The account's root in a key policy delegates to IAM: it allows nothing by itself, and denies as the account.
    return not delegating and _account_root(request.principal) in names


@dataclass(frozen=True)
class Decision:
    allowed: bool
    why: str


def evaluate(request: Request, identity: Iterable[Mapping[str, Any]], resource: Mapping[str, Any] | None = None) -> Decision:
    """Whether ``request`` is allowed, given the principal's identity policies and the resource's policy."""
    allowed_by = ""
    for kind, document in [*(("identity", d) for d in identity), *([("resource", resource)] if resource else [])]:
        if isinstance(document, str):
            document = json.loads(document)
        for statement in _as_list(document.get("Statement")):
            if not _action_matches(statement, request.action):
                continue
            if kind == "resource" and not _principal_matches(statement, request, delegating=statement["Effect"] == "Allow"):
                continue
            # Conditions first: a variable in Resource need only resolve for requests the statement applies to.
            if not _conditions_hold(statement.get("Condition", {}), request) or not _resource_matches(statement, request):
                continue
            label = f"{kind} {statement.get('Sid', '(no Sid)')}"
            if statement["Effect"] == "Deny":
                return Decision(False, f"denied by {label}")
            allowed_by = allowed_by or f"allowed by {label}"
    return Decision(bool(allowed_by), allowed_by or "no statement allows it")


def allowed(request: Request, identity: Sequence[Mapping[str, Any]], resource: Mapping[str, Any] | None = None) -> bool:
    return evaluate(request, identity, resource).allowed
