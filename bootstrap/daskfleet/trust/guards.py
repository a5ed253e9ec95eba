"""Bind the gatekeepers to running servers: wrap every handler before the server listens.

``SchedulerGuard`` checks registrations, operations, registered streams and graph submissions
on the scheduler and audits each refusal; ``WorkerGuard`` checks who calls a worker's operations.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Container, Mapping
from time import time
from typing import Any

from distributed.core import error_message

from .attribution import GraphOrigin, TaskOwners
from .audit import AuditLog, AuditPlugin
from .gatekeeper import FINGERPRINT_KEY, Gatekeeper, SubmittingTask, WorkerGatekeeper, host_of
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


#: Decides whether an otherwise admitted graph may run (limits, budget): a refusal, or None.
AdmissionCheck = Callable[[GraphOrigin, Mapping[str, Any]], Refusal | None]


class SchedulerGuard:
    """Binds a Gatekeeper and an AuditLog to a scheduler: call ``install`` before it starts.

    ``identities`` maps every registered client id to its certificate's Peer (role ``worker`` for a
    task client); ``owners`` records which user each task belongs to; ``admission_checks`` may refuse
    a graph after its origin is known (``daskfleet.usage`` adds its limits and budget stop there).
    """

    def __init__(self, gatekeeper: Gatekeeper, audit: AuditLog):
        self.gatekeeper = gatekeeper
        self.audit = audit
        self.identities: dict[str, Peer] = {}
        self.origins: dict[str, GraphOrigin] = {}
        self.owners = TaskOwners()
        self.admission_checks: list[AdmissionCheck] = []
        self.scheduler: Any = None
        self._worker_hosts: Container[str] = ()

    def install(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        # The hosts of the registered workers (a task client must come from one): distributed keeps them,
        # keyed as ``host_of`` names them, and drops a host with its last worker.
        self._worker_hosts = scheduler.host_info
        self._audit_handshakes(scheduler)
        for op, handler in list(scheduler.handlers.items()):
            if op == "register-worker":
                scheduler.handlers[op] = self._guard_worker_registration(handler)
            elif op == "register-client":
                scheduler.handlers[op] = self._guard_client_registration(handler)
            else:
                scheduler.handlers[op] = self._guard_operation(op, handler)
        scheduler.stream_handlers["update-graph"] = self._guard_graphs(scheduler.stream_handlers["update-graph"])
        scheduler.add_plugin(AuditPlugin(self.audit, self.identities, self.origins, self.owners), name=AuditPlugin.name)

    def _audit_handshakes(self, scheduler: Any) -> None:
        """Audit each TLS handshake a listener of the scheduler refuses (a certificate from another CA, none...).

        distributed only logs these (``TLSListener._prepare_stream``); each listener's is replaced as it is
        created, before the event loop can hand it a connection.
        """
        listen = scheduler.listen

        async def listen_audited(*args: Any, **kwargs: Any) -> Any:
            result = await listen(*args, **kwargs)
            listener = scheduler.listeners[-1]
            if hasattr(listener, "_prepare_stream"):
                listener._prepare_stream = self._audited_handshake
            return result

        scheduler.listen = listen_audited

    async def _audited_handshake(self, stream: Any, address: str) -> Any:
        """distributed's ``TLSListener._prepare_stream``, auditing a refusal: the stream, or None."""
        try:
            await stream.wait_for_handshake()
        except OSError as exc:
            reason = str(getattr(exc, "real_error", None) or exc)
            logger.warning("daskfleet refused a TLS connection from %s: %s", address, reason)
            self.audit.record("tls-refused", peer=address, reason=reason)
            return None
        return stream

    def renewed(self, comm: Any, cert_pem: str) -> Refusal | None:
        """A connection's peer renewed its certificate (conventions.RENEWED_OP): refuse one that names another
        cluster, role or user than the connection's. (Minimal: the revocation half keeps each connection's
        validity and extends it here.)"""
        peer = _peer_of(comm)
        from .pki import identity_of  # noqa: PLC0415

        try:
            identity = identity_of(cert_pem)
        except ValueError:
            return Refusal("the renewed certificate is not a PEM certificate")
        if (identity.cluster, identity.role, identity.common_name) != (peer.cluster, peer.role, peer.identity):
            return Refusal(f"the renewed certificate names {identity.common_name!r} ({identity.role} of "
                           f"{identity.cluster!r}), not this connection's {peer.identity!r}")
        return None

    def add_handler(self, op: str, handler: Callable) -> None:
        """Serve a further scheduler operation behind the same checks (added after ``install``, it would be open)."""
        self.scheduler.handlers[op] = self._guard_operation(op, handler)

    def _refuse(self, kind: str, peer: Peer, refusal: Refusal, **fields: Any) -> str:
        message = f"daskfleet refused {kind} {peer.identity or '(no identity)'} from {peer.address}: {refusal.reason}"
        logger.warning(message)
        self.audit.record(f"{kind}-refused", identity=peer.identity, role=peer.role, peer=peer.address, reason=refusal.reason, **fields)
        return message

    def _guard_operation(self, op: str, handler: Callable) -> Callable:
        def decide(op: str, peer: Peer, msg: Mapping[str, Any]) -> Refusal | None:
            return self.gatekeeper.check_operation(op, peer, msg, self._worker_hosts)

        def refuse(peer: Peer, refusal: Refusal) -> str:
            return self._refuse("operation", peer, refusal, op=op)

        return _guarded(op, handler, decide, refuse)

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
            refusal, warning = self.gatekeeper.check_client(peer, versions, self._worker_hosts)
            if refusal is not None:
                message = self._refuse("client", peer, refusal, client=client)
                await comm.write([{"op": "stream-start", "error": message}])
                await comm.close()
                return None
            if warning:
                logger.warning("client %s (%s): %s", client, peer.identity, warning)
                self.audit.record("client-version-warning", identity=peer.identity, client=client, detail=warning)
            self.identities[client] = peer
            event = "task-client-connect" if peer.role == "worker" else "client-connect"
            self.audit.record(event, identity=peer.identity, role=peer.role, client=client, peer=peer.address)
            self._restrict_stream(comm, peer, "client", client)
            return await handler(comm, client=client, versions=versions, **msg)

        return register_client

    def _guard_graphs(self, handler: Callable) -> Callable:
        """Admit a graph only with a known origin and every admission check passed; a refusal errs its keys."""

        async def update_graph(client: str, **msg: Any) -> Any:
            peer = self.identities.get(client) or Peer(None, None, "", "")
            owner, refusal = self.gatekeeper.graph_owner(peer, self._submitting_task(msg.get("submitting_task")))
            origin = GraphOrigin(owner or "", client, peer.identity, msg.get("submitting_task"))
            for check in self.admission_checks if refusal is None else ():
                refusal = check(origin, msg)
                if refusal is not None:
                    break
            if refusal is not None:
                self._refuse_graph(origin, peer, refusal, msg.get("keys") or ())
                return None
            self.origins[client] = origin
            try:
                return await handler(client=client, **msg)
            finally:
                self.origins.pop(client, None)

        return update_graph

    def _submitting_task(self, key: Any) -> SubmittingTask | None:
        if key is None:
            return None
        ts = self.scheduler.tasks.get(key)
        if ts is None:
            return SubmittingTask(key, None, None, None)
        worker = ts.processing_on
        return SubmittingTask(key, ts.state, host_of(worker.address) if worker else None, self.owners.owner_of(ts))

    def _refuse_graph(self, origin: GraphOrigin, peer: Peer, refusal: Refusal, keys: Any) -> None:
        """Audit, and err the graph's keys for its client alone (others may want the same keys)."""
        who = origin.owner or peer.identity or "(no identity)"
        message = f"daskfleet refused the graph of {who}: {refusal.reason}"
        logger.warning(message)
        fields = origin.audit_fields() if origin.owner else {"identity": peer.identity, "client": origin.client}
        self.audit.record("graph-refused", role=peer.role, reason=refusal.reason, tasks=len(keys), **fields)
        comm = self.scheduler.client_comms.get(origin.client)
        if comm is None:
            return
        error = error_message(PermissionError(message))
        for key in keys:
            comm.send({"op": "task-erred", "key": key, "exception": error["exception"], "traceback": error["traceback"]})

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
