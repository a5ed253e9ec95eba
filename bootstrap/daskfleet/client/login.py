"""A user's short-lived certificate: made on their machine, signed by the cluster's vendor, renewed by itself.

``daskfleet login CLUSTER`` (and ``daskfleet.connect`` when the certificate is missing or has less than a
third of its life left) makes a key pair here, 0600 in a 0700 directory (or in memory only), and sends the
vendor a CSR for it with the proof of who the user is: their AWS login on AWS, their OS identity for a local
cluster. The private key never leaves the machine. A connected client renews before expiry on its own
(``Renewal``): a CSR for the SAME key, the new certificate loaded into the client's SSLContext (so later
handshakes present it; distributed and tornado reuse that object for every connection of the client) and
handed to the scheduler on the client's own connection (conventions.RENEWED_OP).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import conventions
from ..errors import DaskfleetError
from ..node.sources import CA_FILE, CERT_FILE, KEY_FILE
from ..trust import pki
from ..trust.tls import TlsMaterial, reload_context
from ..trust.vendor import VendedCertificate, needs_renewal, seconds_until_renewal

logger = logging.getLogger("daskfleet.login")

#: Asks the cluster's vendor to sign a CSR (PEM) for at most ``ttl`` seconds (None: the cluster's validity).
Issuer = Callable[[str, "float | None"], VendedCertificate]
#: Where an AWS cluster's login is kept: ``$DASKFLEET_HOME/.credentials/<cluster>/`` (no cluster name starts with .).
CREDENTIALS_DIR = ".credentials"
#: Under a login's directory: the metrics certificate of ``daskfleet login --metrics`` (what Prometheus reads).
METRICS_SUBDIR = "metrics"
#: A renewal that failed is tried again this often (never later than the certificate's end).
RETRY_S = 30.0
POLL_S = 1.0


def credentials_dir(cluster: str) -> Path:
    return conventions.daskfleet_home() / CREDENTIALS_DIR / cluster


class CredentialStore:
    """A login's key, certificate and CA: in a private directory (0600 files in a 0700 directory), or in memory."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory
        self._memory: dict[str, str] = {}

    def _read(self, name: str) -> str | None:
        if self.directory is None:
            return self._memory.get(name)
        path = self.directory / name
        return path.read_text() if path.exists() else None

    def _write(self, name: str, text: str) -> None:
        if self.directory is None:
            self._memory[name] = text
        else:
            pki.write_private(self.directory / name, text)

    def key_pem(self) -> str:
        """This login's private key, made here the first time."""
        key = self._read(KEY_FILE)
        if key is None:
            key = pki.new_private_key_pem()
            self._write(KEY_FILE, key)
        return key

    def cert_pem(self) -> str | None:
        return self._read(CERT_FILE)

    def material(self) -> TlsMaterial | None:
        ca, cert, key = (self._read(name) for name in (CA_FILE, CERT_FILE, KEY_FILE))
        return TlsMaterial(ca, cert, key) if ca and cert and key else None

    def save(self, vended: VendedCertificate) -> TlsMaterial:
        self._write(CA_FILE, vended.ca_pem)
        self._write(CERT_FILE, vended.cert_pem)
        return TlsMaterial(vended.ca_pem, vended.cert_pem, self.key_pem())


def login(store: CredentialStore, issue: Issuer, ttl: float | None = None) -> TlsMaterial:
    """A new certificate for the store's key (made now if there is none)."""
    vended = issue(pki.make_csr(store.key_pem()), ttl)
    if pki.public_key_der(vended.cert_pem) != pki.public_key_der(store.key_pem()):
        raise DaskfleetError("the certificate vendor answered a certificate for another key")
    return store.save(vended)


def fresh_material(store: CredentialStore, issue: Issuer, ttl: float | None = None) -> TlsMaterial:
    """The store's certificate, or a new one when it has none or less than a third of its life left."""
    material = store.material()
    if material is None or needs_renewal(material.cert_pem, conventions.RENEW_CLIENT_AT_FRACTION):
        material = login(store, issue, ttl)
    return material


@dataclass
class Renewal:
    """Renews a connected client's certificate before it expires, on the client's own loop.

    ``renewals`` counts the certificates handed to the scheduler; ``error`` is the last renewal's failure
    (tried again every RETRY_S until the certificate ends).
    """

    client: Any
    store: CredentialStore
    issue: Issuer
    ttl: float | None = None
    renewals: int = 0
    error: str = ""
    _task: Any = None

    def start(self) -> Renewal:
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self.client.loop.asyncio_loop)
        return self

    def _running(self) -> bool:
        return self.client.status not in ("closing", "closed")

    async def _run(self) -> None:
        while self._running():
            cert = self.store.cert_pem()
            delay = seconds_until_renewal(cert, conventions.RENEW_CLIENT_AT_FRACTION) if cert else 0.0
            if self.error:
                delay = min(delay, RETRY_S)
            deadline = asyncio.get_running_loop().time() + delay
            while self._running() and (left := deadline - asyncio.get_running_loop().time()) > 0:
                await asyncio.sleep(min(left, POLL_S))  # a closed client ends this task within POLL_S
            if not self._running():
                return
            try:
                await self.renew()
            except (DaskfleetError, OSError) as exc:  # the vendor refused, or could not be reached: try again
                self.error = str(exc)
                logger.warning("daskfleet: could not renew the client certificate: %s", exc)

    async def renew(self) -> None:
        """One renewal: a certificate for the same key, loaded for new connections and handed to the scheduler."""
        material = await asyncio.to_thread(login, self.store, self.issue, self.ttl)
        reload_context(self.client.connection_args["ssl_context"], material)
        self.client.security.tls_client_cert = material.cert_pem
        answer = await getattr(self.client.scheduler, conventions.RENEWED_OP)(
            cert_pem=material.cert_pem, client=self.client.id,
        )
        if isinstance(answer, dict) and answer.get("status") == "refused":
            raise DaskfleetError(f"the scheduler refused the renewed certificate: {answer.get('reason')}")
        self.renewals += 1
        self.error = ""
        logger.info("daskfleet: renewed the client certificate until %s",
                    pki.identity_of(material.cert_pem).not_after.strftime("%Y-%m-%d %H:%M:%S UTC"))


def describe(material: TlsMaterial, now: dt.datetime | None = None) -> str:
    """One line for a person: who the certificate names, where, and until when."""
    identity = pki.identity_of(material.cert_pem)
    now = now or dt.datetime.now(dt.timezone.utc)
    left = identity.not_after - now
    return (f"{identity.common_name} ({identity.role}) of cluster {identity.cluster!r} until "
            f"{identity.not_after:%Y-%m-%d %H:%M:%S} UTC ({left.total_seconds() / 3600:.1f} h)")
