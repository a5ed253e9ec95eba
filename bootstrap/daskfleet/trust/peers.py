"""Who is on the other end of a TLS connection, and the role check every guard starts from."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import conventions


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a TLS connection, from its verified certificate."""

    cluster: str | None
    role: str | None
    identity: str
    address: str = ""
    #: When the certificate the peer presented expires (its notAfter), None when unknown.
    not_after: dt.datetime | None = None

    @classmethod
    def from_peercert(cls, peercert: Mapping[str, Any] | None, address: str = "") -> Peer:
        """Build from ``ssl.SSLSocket.getpeercert()`` output (already verified against the CA)."""
        cluster = role = None
        identity = ""
        for kind, value in (peercert or {}).get("subjectAltName", ()):
            if kind == "URI" and (parsed := conventions.parse_role_uri(value)):
                cluster, role = parsed
                break
        for rdn in (peercert or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    identity = value
        return cls(cluster, role, identity, address, parse_not_after((peercert or {}).get("notAfter")))


def parse_not_after(text: str | None) -> dt.datetime | None:
    """``getpeercert()``'s ``notAfter`` (``'Dec  2 17:00:00 2026 GMT'``) as an aware UTC datetime, None when absent."""
    if not text:
        return None
    return dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(text), dt.timezone.utc)


@dataclass(frozen=True)
class Refusal:
    reason: str


def role_refusal(cluster: str, peer: Peer, needed: frozenset[str] | str) -> Refusal | None:
    """Refuse a peer whose certificate is not for ``cluster`` in one of the ``needed`` roles."""
    allowed = {needed} if isinstance(needed, str) else set(needed)
    if peer.role is None:
        return Refusal("certificate carries no daskfleet role URI")
    if peer.cluster != cluster:
        return Refusal(f"certificate is for cluster {peer.cluster!r}, not {cluster!r}")
    if peer.role not in allowed:
        wanted = " or ".join(sorted(allowed))
        return Refusal(f"certificate role is {peer.role!r}; {wanted} required")
    return None
