"""A node's short-lived certificate: got from the cluster's vendor at boot and renewed without a restart.

A node whose source names a vendor (``NodeSource.certificate_issuer``) makes its key pair itself, sends the
vendor a CSR for it (with the proof of its instance role on AWS) and gets a certificate for
conventions.NODE_CERT_VALIDITY_HOURS. At RENEW_NODE_AT_FRACTION of its life it asks again for the SAME key and:

- rewrites its certificate file (what every later ``Security`` context reads);
- loads the new certificate into the live SSLContexts (``live_contexts``): the one its connection pool and
  rpc use for new connections, its listeners' (what it presents to peers that connect) and the HTTPS
  dashboard's. distributed builds each once (``Security.get_connection_args``/``get_listen_args``) and
  tornado wraps every accepted socket with the same object, so ``load_cert_chain`` on them is enough;
- a worker hands the new certificate to its scheduler on its own connection (conventions.RENEWED_OP), so
  the scheduler's expiry sweep keeps its open streams.

A node that cannot renew before its certificate ends stops with ExitCode.CONFIG and one line saying why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..trust import pki
from ..trust.tls import TlsMaterial, reload_context
from ..trust.vendor import VendedCertificate, seconds_until_renewal

logger = logging.getLogger("daskfleet.agent")

#: Asks the cluster's vendor to sign a CSR (PEM) for this node's role.
NodeIssuer = Callable[[str], VendedCertificate]
#: A renewal that failed is tried again this often, and never later than a tenth of the time left.
RETRY_S = 30.0
#: The least wait between attempts (a certificate of a few seconds, in tests).
MIN_WAIT_S = 0.05


def vend_material(issue: NodeIssuer, key_pem: str | None = None) -> TlsMaterial:
    """A certificate from the vendor for ``key_pem`` (a new key when None): the node's TLS material."""
    key_pem = key_pem or pki.new_private_key_pem()
    vended = issue(pki.make_csr(key_pem))
    if pki.public_key_der(vended.cert_pem) != pki.public_key_der(key_pem):
        raise DaskfleetError("the certificate vendor answered a certificate for another key", ExitCode.CONFIG)
    return TlsMaterial(vended.ca_pem, vended.cert_pem, key_pem)


def live_contexts(server: Any) -> list[ssl.SSLContext]:
    """The SSLContexts a running Scheduler or Worker presents its certificate with: its connections' (pool, rpc,
    the worker's stream to its scheduler), each TLS listener's, and its HTTPS server's."""
    found = [getattr(server, "connection_args", {}).get("ssl_context")]
    found += [getattr(listener, "server_args", {}).get("ssl_options") for listener in getattr(server, "listeners", ())]
    http_server = getattr(server, "http_server", None)
    found.append(getattr(http_server, "ssl_options", None))
    unique: dict[int, ssl.SSLContext] = {id(ctx): ctx for ctx in found if isinstance(ctx, ssl.SSLContext)}
    return list(unique.values())


def _not_after(cert_pem: str) -> dt.datetime:
    return pki.identity_of(cert_pem).not_after


@dataclass
class NodeRenewal:
    """Renews a running node's certificate on its loop; ``failure`` says why it gave up (the node then stops)."""

    issue: NodeIssuer
    material: TlsMaterial
    #: Where the node's certificate file is (rewritten at each renewal).
    cert_file: Any
    contexts: Callable[[], list[ssl.SSLContext]]
    #: Hands the new certificate to the scheduler (a worker); None for a scheduler.
    hand_over: Callable[[str], Awaitable[None]] | None = None
    #: Called once when the node has no valid certificate left (it then stops).
    on_failure: Callable[[str], None] = lambda _reason: None
    renewals: int = 0
    error: str = ""
    failure: str = ""
    _task: asyncio.Task | None = field(default=None, repr=False)

    def start(self) -> NodeRenewal:
        self._task = asyncio.ensure_future(self._run())
        return self

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _wait(self, now: dt.datetime) -> float:
        """Seconds until the next attempt: at the renewal time, or after a failure RETRY_S (bounded by the end)."""
        wait = seconds_until_renewal(self.material.cert_pem, conventions.RENEW_NODE_AT_FRACTION, now)
        if self.error:
            left = (_not_after(self.material.cert_pem) - now).total_seconds()
            wait = min(RETRY_S, max(left / 10, MIN_WAIT_S))
        return max(wait, MIN_WAIT_S) if self.error or wait > 0 else 0.0

    async def _run(self) -> None:
        while True:
            now = dt.datetime.now(dt.timezone.utc)
            if now >= _not_after(self.material.cert_pem):
                self._give_up(now)
                return
            await asyncio.sleep(self._wait(now))
            if dt.datetime.now(dt.timezone.utc) >= _not_after(self.material.cert_pem):
                continue
            try:
                await self.renew()
            except (DaskfleetError, OSError) as exc:  # the vendor refused or could not be reached: try again
                self.error = str(exc)
                logger.warning("daskfleet: could not renew the node certificate (it ends %s UTC): %s",
                               f"{_not_after(self.material.cert_pem):%Y-%m-%d %H:%M:%S}", exc)

    def _give_up(self, now: dt.datetime) -> None:
        self.failure = (f"the node certificate expired at {_not_after(self.material.cert_pem):%Y-%m-%d %H:%M:%S} UTC "
                        f"and could not be renewed ({self.error or 'no renewal was answered in time'})")
        logger.error("daskfleet: %s: stopping", self.failure)
        self.on_failure(self.failure)

    async def renew(self) -> None:
        """One renewal: a certificate for the same key, written, loaded for new connections and the listeners,
        and handed to the scheduler."""
        material = await asyncio.to_thread(vend_material, self.issue, self.material.key_pem)
        pki.write_private(self.cert_file, material.cert_pem)
        for context in self.contexts():
            reload_context(context, material)
        self.material = material
        if self.hand_over is not None:
            await self.hand_over(material.cert_pem)
        self.renewals += 1
        self.error = ""
        logger.info("daskfleet: renewed the node certificate until %s UTC", f"{_not_after(material.cert_pem):%Y-%m-%d %H:%M:%S}")


def scheduler_hand_over(worker: Any) -> Callable[[str], Awaitable[None]]:
    """A worker's hand-over: RENEWED_OP on its scheduler; a refusal is an error (retried until the end)."""

    async def hand_over(cert_pem: str) -> None:
        answer = await getattr(worker.scheduler, conventions.RENEWED_OP)(cert_pem=cert_pem)
        if isinstance(answer, dict) and answer.get("status") == "refused":
            raise DaskfleetError(f"the scheduler refused the renewed certificate: {answer.get('reason')}", ExitCode.CONFIG)

    return hand_over
