"""A local cluster's certificate vendor: the same ``daskfleet.trust.vendor`` code, in process, with the CA of the
cluster's state directory.

Nothing proves an IAM identity here: the local user's own OS identity stands in for the proof (only the user
who owns the state directory can read its CA key anyway). The cluster's admin is the user who started it
(its admin certificate's CN); the deny-list is ``<state>/deny-list.json``.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..node.sources import CERT_FILE
from ..trust import pki
from ..trust.denylist import DenyList
from ..trust.vendor import (
    LOCAL_PRINCIPAL_PREFIX, USER_REQUEST, CertificateRequest, VendedCertificate, Vendor, VendorPolicy,
)
from .state import client_dir, command_flags, load_ca

#: In a local cluster's state directory: its deny-list (the same document as the SSM parameter's on AWS).
DENY_LIST_FILE = "deny-list.json"
#: In a local node's directory: which local vendor signs its certificate ({state_dir, cluster, valid_seconds}).
NODE_VENDOR_FILE = "vendor.json"
#: The principal a local node's process stands for (a node role has no OS user of its own): ``local:node:<role>``.
NODE_PRINCIPAL_PREFIX = f"{LOCAL_PRINCIPAL_PREFIX}node:"


def local_principal(user: str) -> str:
    return f"{LOCAL_PRINCIPAL_PREFIX}{user}"


def read_deny_list(state_dir: Path) -> DenyList:
    path = state_dir / DENY_LIST_FILE
    return DenyList.from_json(path.read_text()) if path.exists() else DenyList()


def local_policy(state_dir: Path, cluster: str) -> VendorPolicy:
    """The local cluster's people: its admin, the user who started it (who may also get a ``metrics`` certificate)."""
    cert = client_dir(state_dir) / CERT_FILE
    if not cert.exists():
        raise DaskfleetError(f"local cluster {cluster!r} has no admin yet: start it with "
                             f"`daskfleet local up{command_flags(state_dir, cluster)}`", ExitCode.CONFIG)
    admin = pki.identity_of(cert.read_text()).common_name
    return VendorPolicy(
        cluster=cluster, users={admin: local_principal(admin)}, admins=frozenset({admin}),
        node_roles={role: f"{NODE_PRINCIPAL_PREFIX}{role}" for role in conventions.NODE_ROLES},
        scheduler_dns_names=("localhost", "127.0.0.1"), metrics_principals=(local_principal(admin),),
    )


def local_vendor(state_dir: Path, cluster: str) -> Vendor:
    def ca_of(name: str) -> pki.IssuedCert:
        ca = load_ca(state_dir)
        if ca is None:
            raise DaskfleetError(f"no CA of local cluster {name!r} in {state_dir}", ExitCode.CONFIG)
        return ca

    def no_sts(*_: object) -> tuple[int, str]:
        raise DaskfleetError("a local cluster's vendor asks no STS", ExitCode.CONFIG)

    policy = local_policy(state_dir, cluster)
    return Vendor(
        sts_endpoint="", send=no_sts, policy_of=lambda name: policy if name == cluster else None, ca_of=ca_of,
        deny_list_of=lambda _: read_deny_list(state_dir),
    )


def local_issuer(state_dir: Path, cluster: str, role: str = USER_REQUEST):
    """An Issuer (daskfleet.client.login) signing for this process's OS user (``role`` ``metrics``: a scraper's)."""
    vendor = local_vendor(state_dir, cluster)
    principal = local_principal(getpass.getuser())

    def issue(csr_pem: str, ttl: float | None) -> VendedCertificate:
        return vendor.issue_to(principal, CertificateRequest(cluster=cluster, csr_pem=csr_pem, role=role,
                                                             valid_seconds=ttl))

    return issue


def write_node_vendor(node_dir: Path, state_dir: Path, cluster: str, valid_seconds: float | None = None) -> None:
    """Tell a local node that the local vendor signs its certificate (for ``valid_seconds``; None: 24 h)."""
    doc = {"state_dir": str(state_dir), "cluster": cluster, "valid_seconds": valid_seconds}
    pki.write_private(node_dir / NODE_VENDOR_FILE, json.dumps(doc))


def local_node_issuer(node_dir: Path, role: str):
    """A NodeIssuer (daskfleet.node.renewal) for the node directory ``node_dir``, or None when it names no vendor
    (its ``tls/`` files are then all it has)."""
    path = Path(node_dir) / NODE_VENDOR_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        state_dir, cluster, seconds = Path(doc["state_dir"]), str(doc["cluster"]), doc.get("valid_seconds")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DaskfleetError(f"{path}: unreadable ({type(exc).__name__}: {exc})", ExitCode.CERT_UNREADABLE) from None
    vendor = local_vendor(state_dir, cluster)
    principal = f"{NODE_PRINCIPAL_PREFIX}{role}"

    def issue(csr_pem: str) -> VendedCertificate:
        return vendor.issue_to(principal, CertificateRequest(cluster=cluster, csr_pem=csr_pem, role=role,
                                                             valid_seconds=seconds))

    return issue
