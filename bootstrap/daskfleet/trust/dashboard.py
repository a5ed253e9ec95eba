"""The dashboard port for the cluster's people only: a verified client certificate for every route.

distributed serves its dashboard (Bokeh apps and their websockets, ``/metrics``, ``/info/*``, ``/proxy``,
``/eventstream``...) over HTTPS with the node certificate but asks for none. ``install`` makes the scheduler's
HTTP server require a certificate of the cluster CA at the handshake (so a request without one never reaches a
route) and checks each request's certificate: members and admins see everything, a ``metrics`` certificate
(Prometheus) reads ``/metrics`` only, nodes nothing; a revoked user nothing. Each connection is kept in the
guard's ``live`` registry, so revocation and the expiry sweep close open pages and websockets too.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from tornado import web

from .. import conventions
from .guards import SchedulerGuard
from .liveness import LivePeer
from .peers import Peer, Refusal, role_refusal

logger = logging.getLogger("daskfleet.scheduler")

#: What a ``metrics`` certificate may read.
METRICS_PATHS = frozenset({"/metrics", "/metrics/"})


def dashboard_refusal(cluster: str, peer: Peer, path: str) -> Refusal | None:
    """Whether ``peer`` may read ``path`` on the dashboard (pure)."""
    if peer.role == conventions.METRICS_ROLE:
        refusal = role_refusal(cluster, peer, conventions.METRICS_ROLE)
        if refusal is None and path not in METRICS_PATHS:
            return Refusal(f"a {conventions.METRICS_ROLE} certificate reads /metrics only, not {path}")
        return refusal
    return role_refusal(cluster, peer, frozenset(conventions.USER_ROLES))


class _StreamConnection:
    """An HTTP connection as the guard's registry closes it."""

    def __init__(self, stream: Any):
        self.stream = stream

    def abort(self) -> None:
        self.stream.close()

    def closed(self) -> bool:
        return self.stream.closed()


def install(scheduler: Any, guard: SchedulerGuard) -> None:
    """Require and check client certificates on ``scheduler``'s dashboard; call right after the scheduler is made
    (distributed starts its HTTP server in the constructor; no connection is accepted before the loop runs)."""
    server = getattr(scheduler, "http_server", None)
    context = getattr(server, "ssl_options", None)
    if not isinstance(context, ssl.SSLContext):
        return  # no TLS dashboard (tests without one): nothing served over plain HTTP is ours to guard
    context.verify_mode = ssl.CERT_REQUIRED  # the cluster CA is loaded already (distributed.scheduler.dashboard.tls.ca-file)
    application = scheduler.http_application
    find_handler = application.find_handler
    cluster = guard.gatekeeper.cluster

    def find_checked_handler(request: Any, **kwargs: Any) -> Any:
        stream = getattr(request.connection, "stream", None)
        sock = getattr(stream, "socket", None)
        address = f"{request.remote_ip}"
        peer = Peer.from_peercert(sock.getpeercert() if sock is not None else None, address)
        refusal = guard.denial(peer) or dashboard_refusal(cluster, peer, request.path)
        if refusal is not None:
            logger.warning("daskfleet refused dashboard %s to %s at %s: %s", request.path, peer.identity or "(no identity)",
                           address, refusal.reason)
            guard.audit.record("dashboard-refused", identity=peer.identity, role=peer.role, peer=address,
                               path=request.path, reason=refusal.reason)
            return application.get_handler_delegate(request, web.ErrorHandler, {"status_code": 403})
        _keep_live(guard, stream, peer)
        return find_handler(request, **kwargs)

    application.find_handler = find_checked_handler


def _keep_live(guard: SchedulerGuard, stream: Any, peer: Peer) -> None:
    """Record the connection (once) so that revocation and the expiry sweep close it; forget closed ones."""
    for name in [name for name, entry in guard.live.items() if isinstance(entry.comm, _StreamConnection) and entry.comm.closed()]:
        del guard.live[name]
    name = f"dashboard {peer.address}:{id(stream)}"
    if stream is not None and name not in guard.live:
        sock = stream.socket
        guard.live[name] = LivePeer(_StreamConnection(stream), peer, "dashboard", peer.not_after,
                                    sock.getpeercert(binary_form=True) if sock is not None else None)
