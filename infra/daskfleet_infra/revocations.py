"""Removing a user from a cluster's ``members``/``admins`` writes their entry in its deny-list (issue 16 §4).

The deny-list is one SSM parameter per cluster (``conventions.deny_list_parameter_name``) that ``daskfleet
revoke`` also writes. A plain ``aws.ssm.Parameter`` would put back, at every ``pulumi up``, what operators wrote
since; so the program declares a small dynamic resource holding the cluster's user names. Pulumi hands its
provider the previous names and the new ones: ``update`` reads the parameter, denies each user who left
(``by`` "pulumi stack <stack>", reason "removed from the stack"), lifts only the entries this stack wrote for
users who are back, and writes a new version; operators' entries are never touched. It runs where ``pulumi up``
runs, with the deployer's AWS credentials (which already write the cluster's parameters).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pulumi
import pulumi.dynamic

from daskfleet import conventions
from daskfleet.trust.denylist import DenyList

STACK_REMOVAL_REASON = "removed from the stack"


def stack_author(stack: str) -> str:
    """The ``by`` of the entries a stack writes for users it removed."""
    return f"pulumi stack {stack}"


def removal_edit(deny: DenyList, previous: Iterable[str], current: Iterable[str], by: str, at: float) -> DenyList:
    """``deny`` with the users who left (``previous`` - ``current``) denied, and this stack's own entries for users
    who are in ``current`` again lifted; nothing else changes."""
    now = set(current)
    for user in sorted(set(previous) - now):
        deny = deny.with_entry(user, by=by, reason=STACK_REMOVAL_REASON, at=at)
    for user in sorted(now):
        entry = deny.denies(user)
        if entry is not None and entry.by == by and entry.reason == STACK_REMOVAL_REASON:
            deny = deny.without(user)
    return deny


class StackUsersProvider(pulumi.dynamic.ResourceProvider):
    """Keeps the cluster's deny-list in step with the users the stack declares (see the module docstring)."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        self._write(props, previous=())
        return pulumi.dynamic.CreateResult(id_=conventions.deny_list_parameter_name(props["cluster"]), outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        changed = [key for key in ("users", "cluster", "region", "stack") if olds.get(key) != news.get(key)]
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=["cluster"] if "cluster" in changed else [])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        self._write(news, previous=olds.get("users") or ())
        return pulumi.dynamic.UpdateResult(outs=news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """The cluster is gone: nothing is left to deny (its parameter would be an orphan)."""
        ssm = self._ssm(props)
        try:
            ssm.delete_parameter(Name=conventions.deny_list_parameter_name(props["cluster"]))
        except ssm.exceptions.ParameterNotFound:
            pass

    @staticmethod
    def _ssm(props: dict[str, Any]) -> Any:
        import boto3  # noqa: PLC0415  (in the dynamic provider's own process)

        return boto3.session.Session(region_name=props["region"]).client("ssm")

    def _write(self, props: dict[str, Any], previous: Iterable[str]) -> None:
        from daskfleet.aws.calls import Caller  # noqa: PLC0415
        from daskfleet.aws.denylist import update_deny_list  # noqa: PLC0415
        from daskfleet.errors import ExitCode  # noqa: PLC0415

        by, at = stack_author(props["stack"]), time.time()
        caller = Caller(who="the deployer's AWS identity", login_hint="the credentials `pulumi up` runs with",
                        credentials_exit=ExitCode.CONFIG)
        update_deny_list(self._ssm(props), props["cluster"], caller,
                         lambda deny: removal_edit(deny, previous, props["users"], by, at))


class StackUsers(pulumi.dynamic.Resource):
    """The users a cluster's stack declares; a user who leaves them is denied (``StackUsersProvider``)."""

    def __init__(self, name: str, *, cluster: str, region: str, stack: str, users: Iterable[str],
                 opts: pulumi.ResourceOptions | None = None):
        props = {"cluster": cluster, "region": region, "stack": stack, "users": sorted(users)}
        super().__init__(StackUsersProvider(), name, props, opts)


class Revocation(pulumi.ComponentResource):
    """A cluster's part in revocation that the stack declares: its users, kept in step with its deny-list."""

    def __init__(self, name: str, *, cluster: str, region: str, users: Iterable[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("daskfleet:aws:Revocation", name, None, opts)
        prefix = name.removesuffix("revocation")
        StackUsers(f"{prefix}stack-users", cluster=cluster, region=region, stack=pulumi.get_stack(), users=users,
                   opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({})
