"""``daskfleet revoke`` / ``unrevoke``: write a cluster's deny-list, in SSM (AWS) or its local state directory.

Every scheduler of the cluster reads it at least once a minute (``daskfleet.trust.revocation``) and closes the
user's connections; the certificate vendor refuses the user a certificate at once.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass
from pathlib import Path

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..trust import pki
from ..trust.denylist import DenyList, check_user


@dataclass(frozen=True)
class DenyListChange:
    """What a revoke or lift did: the list now, where it is kept, and its new version (None: nothing changed)."""

    deny: DenyList
    where: str
    version: int | None


def local_deny_list_path(state_dir: Path) -> Path:
    return Path(state_dir) / conventions.DENY_LIST_FILE


def read_local(state_dir: Path) -> DenyList:
    path = local_deny_list_path(state_dir)
    try:
        return DenyList.from_json(path.read_text(), str(path))
    except FileNotFoundError:
        return DenyList()


def change_local(state_dir: Path, user: str, *, lift: bool, reason: str = "", by: str | None = None,
                 at: float | None = None) -> DenyListChange:
    """Revoke (or lift the revocation of) ``user`` on the local cluster kept in ``state_dir``."""
    from ..local.state import locked  # noqa: PLC0415

    check_user(user)
    path = local_deny_list_path(state_dir)
    with locked(state_dir):
        current = read_local(state_dir)
        updated = _edit(current, user, lift=lift, reason=reason, by=by or getpass.getuser(), at=at)
        if updated == current:
            return DenyListChange(current, str(path), None)
        pki.write_private(path, updated.to_json())  # atomic: the scheduler polls it
    return DenyListChange(updated, str(path), 1)


def change_aws(cluster: str, user: str, *, lift: bool, reason: str = "", region: str | None = None,
               profile: str | None = None, session=None) -> DenyListChange:
    """Revoke (or lift) ``user`` on AWS cluster ``cluster``, with the operator's own AWS login."""
    from ..aws.calls import BOTO_CONFIG, call_aws  # noqa: PLC0415
    from ..aws.denylist import update_deny_list  # noqa: PLC0415
    from ..aws.user import YOUR_IDENTITY, user_session  # noqa: PLC0415

    check_user(user)
    session = session or user_session(region, profile)
    arn = call_aws(session.client("sts", config=BOTO_CONFIG), "GetCallerIdentity", "", YOUR_IDENTITY,
                   missing=ExitCode.CONFIG)["Arn"]
    ssm = session.client("ssm", config=BOTO_CONFIG)
    deny, version = update_deny_list(
        ssm, cluster, YOUR_IDENTITY, lambda current: _edit(current, user, lift=lift, reason=reason, by=arn, at=None))
    return DenyListChange(deny, f"SSM parameter {conventions.deny_list_parameter_name(cluster)}", version)


def _edit(current: DenyList, user: str, *, lift: bool, reason: str, by: str, at: float | None) -> DenyList:
    if lift:
        return current.without(user)
    return current.with_entry(user, by=by, reason=reason, at=time.time() if at is None else at)


def check_cluster(cluster: str) -> str:
    import re  # noqa: PLC0415

    if not re.fullmatch(conventions.CLUSTER_NAME_PATTERN, cluster):
        raise DaskfleetError(f"CLUSTER: {cluster!r} does not match {conventions.CLUSTER_NAME_PATTERN}", ExitCode.CONFIG)
    return cluster
