"""TLS material as it travels (PEM text), and a client's TLS settings for one cluster."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from .peers import Peer
from .pki import identity_of, write_private

if TYPE_CHECKING:  # distributed is imported where a Security is built: commands that only name TLS files stay light
    from distributed import Client, Security


@dataclass(frozen=True)
class TlsMaterial:
    """PEM text of the cluster CA, this node's certificate and its private key."""

    ca_pem: str
    cert_pem: str
    key_pem: str = field(repr=False)

    @classmethod
    def from_secret_json(cls, text: str, origin: str) -> TlsMaterial:
        """Parse the JSON document stored in a TLS secret (keys: conventions.TLS_SECRET_KEYS)."""
        try:
            doc = json.loads(text)
            return cls(ca_pem=doc["ca"], cert_pem=doc["cert"], key_pem=doc["key"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DaskfleetError(
                f"{origin}: not a TLS secret document with keys ca, cert, key ({type(exc).__name__})",
                ExitCode.CERT_UNREADABLE,
            ) from None

    def to_secret_json(self) -> str:
        return json.dumps({"ca": self.ca_pem, "cert": self.cert_pem, "key": self.key_pem})


def client_security(material: TlsMaterial, cluster: str) -> Security:
    """A ``distributed.Security`` presenting ``material``, which must be a user's (member's or admin's)
    certificate of ``cluster``."""
    identity = identity_of(material.cert_pem)
    if identity.cluster != cluster or identity.role not in conventions.USER_ROLES:
        found = f"a {identity.role} certificate for cluster {identity.cluster!r}" if identity.role else "no daskfleet role"
        raise DaskfleetError(f"your certificate for {cluster!r} is {found}, not a client certificate", ExitCode.CONFIG)
    from distributed import Security  # noqa: PLC0415

    # distributed accepts PEM text in place of paths, so nothing touches the disk.
    return Security(
        tls_ca_file=material.ca_pem,
        tls_client_cert=material.cert_pem,
        tls_client_key=material.key_pem,
        require_encryption=True,
    )


def verify_scheduler_identity(client: Client, cluster: str) -> None:
    """Refuse a server whose certificate is not this cluster's scheduler (distributed skips hostname checks)."""
    comm = client.scheduler_comm.comm if client.scheduler_comm else None
    peer = Peer.from_peercert(comm.extra_info.get("peercert") if comm else None)
    if (peer.cluster, peer.role) != (cluster, "scheduler"):
        client.close()
        raise DaskfleetError(
            f"the server at {client.scheduler.address} presented a {peer.role or 'role-less'} certificate "
            f"for cluster {peer.cluster!r}, not the scheduler of {cluster!r}",
            ExitCode.CONFIG,
        )


def reload_context(context: Any, material: TlsMaterial) -> None:
    """Make ``context`` (an ssl.SSLContext) present ``material`` from its next handshake on.

    ``load_cert_chain`` reads files only: they live for the call in a private temporary directory, as
    distributed's own ``Security`` does with PEM text.
    """
    with tempfile.TemporaryDirectory(prefix="daskfleet-tls-") as directory:
        cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        write_private(cert, material.cert_pem)
        write_private(key, material.key_pem)
        context.load_cert_chain(str(cert), str(key))
