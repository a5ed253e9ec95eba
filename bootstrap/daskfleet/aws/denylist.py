"""A cluster's deny-list in SSM Parameter Store (``conventions.deny_list_parameter_name``): read by its scheduler
through the instance role, written by ``daskfleet revoke`` with an operator's own login; versions are the history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import conventions
from ..errors import ExitCode
from ..trust.denylist import DenyList
from .calls import Caller, call_aws

#: ``ParameterNotFound``: no user was ever revoked.
_NOT_STORED = frozenset({"ParameterNotFound"})


def read_deny_list_text(ssm: Any, cluster: str, caller: Caller) -> str | None:
    """The stored document of ``cluster``, or None when none is."""
    name = conventions.deny_list_parameter_name(cluster)
    response = call_aws(ssm, "GetParameter", f"SSM parameter {name}", caller, missing=ExitCode.SOURCE_UNAVAILABLE,
                        fine=_NOT_STORED, Name=name)
    return response["Parameter"]["Value"] if response else None


def read_deny_list(ssm: Any, cluster: str, caller: Caller) -> DenyList:
    name = conventions.deny_list_parameter_name(cluster)
    return DenyList.from_json(read_deny_list_text(ssm, cluster, caller), f"SSM parameter {name}")


def update_deny_list(ssm: Any, cluster: str, caller: Caller, edit: Callable[[DenyList], DenyList]) -> tuple[DenyList, int | None]:
    """Apply ``edit`` to the stored list and store the result as a new version: (the list, its version; None when
    the edit changed nothing and nothing was written)."""
    name = conventions.deny_list_parameter_name(cluster)
    current = read_deny_list(ssm, cluster, caller)
    updated = edit(current)
    if updated == current:
        return current, None
    response = call_aws(
        ssm, "PutParameter", f"SSM parameter {name}", caller, missing=ExitCode.CONFIG,
        Name=name, Value=updated.to_json(), Type="String", Overwrite=True,
        Description=f"daskfleet {cluster}: revoked users (its versions are the history)",
    )
    return updated, int(response["Version"])
