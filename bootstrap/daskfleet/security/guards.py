"""Bind the gatekeepers to running servers: wrap every handler before the server listens.

``SchedulerGuard`` checks registrations, operations and registered streams on the
scheduler and audits each refusal; ``WorkerGuard`` checks who calls a worker's operations.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from time import time
from typing import Any

from distributed.core import error_message

from .audit import AuditLog, AuditPlugin
from .gatekeeper import FINGERPRINT_KEY, Gatekeeper, WorkerGatekeeper
from .peers import Peer, Refusal

logger = logging.getLogger("daskfleet.scheduler")


def _peer_of(comm: Any) -> Peer:
    cached = getattr(comm, "_daskfleet_peer", None)
    if cached is None:
        cached = Peer.from_peercert(comm.extra_info.get("peercert"), comm.peer_address)
        comm._daskfleet_peer = cached
    return cached


def _expects_comm(handler: Callable) -> bool:
    params = inspect.signature(handler).parameters
    return bool(params) and next(iter(params)) == "comm"


def _guarded(
    op: str,
    handler: Callable,
    decide: Callable[[str, Peer, Mapping[str, Any]], Refusal | None],
    refuse: Callable[[Peer, Refusal], str],
) -> Callable:
    """``handler`` behind a check of the caller's certificate; a refusal answers the caller with PermissionError."""
    takes_comm = _expects_comm(handler)

    async def guarded(comm: Any, **msg: Any) -> Any:
        peer = _peer_of(comm)
        refusal = decide(op, peer, msg)
        if refusal is not None:
            return error_message(PermissionError(refuse(peer, refusal)), status="uncaught-error")
        result = handler(comm, **msg) if takes_comm else handler(**msg)
        return await result if inspect.isawaitable(result) else result

    guarded.__name__ = getattr(handler, "__name__", op)
    return guarded


class SchedulerGuard:
    """Binds a Gatekeeper and an AuditLog to a scheduler: call ``install`` before it starts."""

    def __init__(self, gatekeeper: Gatekeeper, audit: AuditLog):
        self.gatekeeper = gatekeeper
        self.audit = audit
        self.identities: dict[str, Peer] = {}

    def install(self, scheduler: Any) -> None:
        for op, handler in list(scheduler.handlers.items()):
            if op == "register-worker":
                scheduler.handlers[op] = self._guard_worker_registration(handler)
            elif op == "register-client":
                scheduler.handlers[op] = self._guard_client_registration(handler)
            else:
                scheduler.handlers[op] = self._guard_operation(op, handler)
        scheduler.add_plugin(AuditPlugin(self.audit, self.identities), name=AuditPlugin.name)

    def _refuse(self, kind: str, peer: Peer, refusal: Refusal, **fields: Any) -> str:
        message = f"daskfleet refused {kind} {peer.identity or '(no identity)'} from {peer.address}: {refusal.reason}"
        logger.warning(message)
        self.audit.record(f"{kind}-refused", identity=peer.identity, role=peer.role, peer=peer.address, reason=refusal.reason, **fields)
        return message

    def _guard_operation(self, op: str, handler: Callable) -> Callable:
        def refuse(peer: Peer, refusal: Refusal) -> str:
            return self._refuse("operation", peer, refusal, op=op)

        return _guarded(op, handler, self.gatekeeper.check_operation, refuse)

    def _guard_worker_registration(self, handler: Callable) -> Callable:
        async def register_worker(comm: Any, **msg: Any) -> Any:
            peer = _peer_of(comm)
            refusal = self.gatekeeper.check_worker(peer, msg.get("extra"), msg.get("address"))
            if refusal is not None:
                message = self._refuse(
                    "worker", peer, refusal, worker=msg.get("address"), fingerprint=(msg.get("extra") or {}).get(FINGERPRINT_KEY)
                )
                await comm.write({"status": "error", "message": message, "time": time()})
                await comm.close()
                return None
            self.audit.record("worker-join", identity=peer.identity, worker=msg.get("address"), peer=peer.address)
            self._restrict_stream(comm, peer, "worker", msg.get("address"))
            return await handler(comm, **msg)

        return register_worker

    def _guard_client_registration(self, handler: Callable) -> Callable:
        async def register_client(comm: Any, client: str, versions: dict, **msg: Any) -> Any:
            peer = _peer_of(comm)
            refusal, warning = self.gatekeeper.check_client(peer, versions)
            if refusal is not None:
                message = self._refuse("client", peer, refusal, client=client)
                await comm.write([{"op": "stream-start", "error": message}])
                await comm.close()
                return None
            if warning:
                logger.warning("client %s (%s): %s", client, peer.identity, warning)
                self.audit.record("client-version-warning", identity=peer.identity, client=client, detail=warning)
            self.identities[client] = peer
            self.audit.record("client-connect", identity=peer.identity, client=client, peer=peer.address)
            self._restrict_stream(comm, peer, "client", client)
            return await handler(comm, client=client, versions=versions, **msg)

        return register_client

    def _restrict_stream(self, comm: Any, peer: Peer, kind: str, own_id: Any) -> None:
        """Drop, log and audit any message on this registered stream that is not its role's own."""
        read = comm.read
        gatekeeper = self.gatekeeper

        async def read_own(*args: Any, **kwargs: Any) -> Any:
            msgs = await read(*args, **kwargs)
            batch = msgs if isinstance(msgs, (list, tuple)) else (msgs,)
            kept = []
            for msg in batch:
                refusal = gatekeeper.check_stream_message(kind, own_id, msg)
                if refusal is None:
                    kept.append(msg)
                else:
                    self._refuse(f"{kind}-stream", peer, refusal, op=msg.get("op") if isinstance(msg, dict) else None)
            return kept

        comm.read = read_own


class WorkerGuard:
    """Binds a WorkerGatekeeper to a worker's handlers: call ``install`` before it starts.

    distributed lets any certificate from the CA call any worker operation, so a client could
    run code on a worker directly (``run``), outside the scheduler's audit.
    """

    def __init__(self, gatekeeper: WorkerGatekeeper):
        self.gatekeeper = gatekeeper

    def install(self, worker: Any) -> None:
        for op, handler in list(worker.handlers.items()):
            worker.handlers[op] = self._guard(op, handler)

    def _guard(self, op: str, handler: Callable) -> Callable:
        def decide(op: str, peer: Peer, msg: Mapping[str, Any]) -> Refusal | None:
            return self.gatekeeper.check_operation(op, peer)

        def refuse(peer: Peer, refusal: Refusal) -> str:
            message = f"daskfleet worker refused {op!r} from {peer.identity or '(no identity)'} at {peer.address}: {refusal.reason}"
            logger.warning(message)
            return message

        return _guarded(op, handler, decide, refuse)
