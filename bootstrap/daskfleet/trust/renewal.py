"""The scheduler's side of a live renewal: a peer hands over the certificate it renewed (same key pair) on its
own connection (conventions.RENEWED_OP), and the scheduler guard decides whether the connection may outlive its
first certificate (``SchedulerGuard.renewed``)."""

from __future__ import annotations

import logging
from typing import Any

from .. import conventions

logger = logging.getLogger("daskfleet.scheduler")


def install(guard: Any) -> None:
    """Serve RENEWED_OP behind the guard's checks (after ``guard.install``)."""

    async def renewed(comm: Any, cert_pem: str = "", client: str | None = None) -> dict[str, Any]:
        refusal = guard.renewed(comm, cert_pem)  # audits the renewal or its refusal
        if refusal is not None:
            logger.warning("daskfleet refused a renewed certificate from %s (client %s): %s",
                           getattr(comm, "peer_address", ""), client, refusal.reason)
            return {"status": "refused", "reason": refusal.reason}
        return {"status": "OK"}

    guard.add_handler(conventions.RENEWED_OP, renewed)
