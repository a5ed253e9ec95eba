"""How long each live connection to the scheduler may last, and the check of a renewed certificate (pure).

TLS checks a certificate only at the handshake, and a distributed connection lasts the whole session: the
scheduler's guard keeps every connection's ``LivePeer`` (its certificate's expiry, its public key) and closes
it once ``valid_until`` passes, unless the peer renewed its certificate on the connection (``renewal_check``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from .. import conventions
from .peers import Peer, Refusal

#: What a live connection is: a registered client's stream, a task client's, a worker's, a dashboard (HTTP or
#: websocket) connection, or any other connection (a client's pooled RPC connection, a one-off call).
LiveKind = Literal["client", "task-client", "worker", "dashboard", "connection"]


@dataclass
class LivePeer:
    """One open connection to the scheduler: its comm, who holds it, and until when it may stay open."""

    comm: Any
    peer: Peer
    kind: LiveKind
    #: The certificate's notAfter, extended by each accepted renewal on this peer's key.
    valid_until: dt.datetime | None
    #: The DER of the certificate presented at the handshake (its public key binds renewals to this session).
    cert_der: bytes | None = None

    def public_key(self) -> bytes | None:
        return public_key_der(x509.load_der_x509_certificate(self.cert_der)) if self.cert_der else None

    def expired(self, now: dt.datetime) -> bool:
        return self.valid_until is not None and now >= self.valid_until


def public_key_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def renewal_check(
    ca_pem: str, cluster: str, peer: Peer, presented_key: bytes | None, cert_pem: str, now: dt.datetime,
) -> tuple[Refusal | None, dt.datetime | None]:
    """(refusal, None), or (None, the renewed certificate's notAfter) when ``cert_pem`` may extend ``peer``'s session.

    It must chain to the cluster CA, be valid now, name the same cluster, role and user (CN) as the
    connection's certificate, and carry the same public key (the live TLS session belongs to its holder).
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
    except ValueError as exc:
        return Refusal(f"renewed certificate is not a PEM certificate ({exc})"), None
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return Refusal(f"renewed certificate was not issued by the CA of cluster {cluster!r}"), None
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        return Refusal(f"renewed certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} "
                       f"to {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)"), None
    found = _identity(cert)
    wanted = (cluster, peer.role, peer.identity)
    if found != wanted:
        return Refusal(f"renewed certificate names {_describe(found)}, the connection's {_describe(wanted)}"), None
    if presented_key is None or public_key_der(cert) != presented_key:
        return Refusal("renewed certificate is for another key than the one this connection presented"), None
    return None, cert.not_valid_after_utc


def _identity(cert: x509.Certificate) -> tuple[str | None, str | None, str]:
    cluster = role = None
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
            if parsed := conventions.parse_role_uri(uri):
                cluster, role = parsed
                break
    except x509.ExtensionNotFound:
        pass
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return cluster, role, str(cns[0].value) if cns else ""


def _describe(identity: tuple[str | None, str | None, str]) -> str:
    cluster, role, user = identity
    return f"{user or '(no CN)'} as {role or '(no role)'} of {cluster!r}"
