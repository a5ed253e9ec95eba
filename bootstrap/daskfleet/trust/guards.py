"""Bind the gatekeepers to running servers: wrap every handler before the server listens.

``SchedulerGuard`` checks registrations, operations, registered streams and graph submissions
on the scheduler and audits each refusal; it keeps every open connection (``live``), refuses and
closes a user the cluster's deny-list names, and closes a peer whose certificate expired.
``WorkerGuard`` checks who calls a worker's operations.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
from collections.abc import Callable, Container, Mapping
from time import time
from typing import Any

from distributed.core import error_message

from .. import conventions
from .attribution import GraphOrigin, TaskOwners
from .audit import AuditLog, AuditPlugin
from .denylist import DenyEntry, DenyList
from .gatekeeper import FINGERPRINT_KEY, Gatekeeper, SubmittingTask, WorkerGatekeeper, host_of
from .liveness import LiveKind, LivePeer, renewal_check
from .peers import Peer, Refusal

logger = logging.getLogger("daskfleet.scheduler")


def _peer_of(comm: Any) -> Peer:
    cached = getattr(comm, "_daskfleet_peer", None)
    if cached is None:
        cached = Peer.from_peercert(comm.extra_info.get("peercert"), comm.peer_address)
        comm._daskfleet_peer = cached
    return cached


def _presented_der(comm: Any) -> bytes | None:
    """The DER certificate the peer presented at the handshake (None without TLS or once closed)."""
    sock = getattr(getattr(comm, "stream", None), "socket", None)
    getpeercert = getattr(sock, "getpeercert", None)
    return getpeercert(binary_form=True) if getpeercert is not None else None


def _subscribed(scheduler: Any, topic: str, client: str) -> bool:
    """Whether ``client`` subscribed to ``topic`` (distributed keeps subscriptions in its event broker, with no
    public accessor); a client that did not would answer an event on it with an error in its log."""
    topics = scheduler._broker._topics
    return topic in topics and client in topics[topic].subscribers


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _expects_comm(handler: Callable) -> bool:
    params = inspect.signature(handler).parameters
    return bool(params) and next(iter(params)) == "comm"


def _guarded(
    op: str,
    handler: Callable,
    decide: Callable[[str, Peer, Mapping[str, Any]], Refusal | None],
    refuse: Callable[[Peer, Refusal], str],
    track: Callable[[Any, Peer], None] | None = None,
) -> Callable:
    """``handler`` behind a check of the caller's certificate; a refusal answers the caller with PermissionError."""
    takes_comm = _expects_comm(handler)

    async def guarded(comm: Any, **msg: Any) -> Any:
        peer = _peer_of(comm)
        if track is not None:
            track(comm, peer)
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

    def __init__(self, gatekeeper: Gatekeeper, audit: AuditLog, ca_pem: str | None = None):
        self.gatekeeper = gatekeeper
        self.audit = audit
        #: The cluster CA, which renewed certificates must chain to (``renewed``); None: no renewal accepted.
        self.ca_pem = ca_pem
        #: Every open connection to the scheduler: registered clients and task clients by client id, workers by
        #: their address, any other connection by its peer address.
        self.live: dict[str, LivePeer] = {}
        #: The users the cluster's deny-list names (``apply_deny_list``, fed by ``daskfleet.trust.revocation``).
        self.deny = DenyList()
        self._deny_loaded = False
        #: The users each task client submitted graphs for: revoking one closes the task clients working for them.
        self.task_client_users: dict[str, set[str]] = {}
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

    def _track(self, comm: Any, peer: Peer) -> None:
        """Keep a connection in ``live`` from its first operation (closed ones are dropped as the registry is
        walked: ``_forget_closed``). distributed keeps a client's pooled connections open between calls."""
        if getattr(comm, "_daskfleet_live", False):
            return
        comm._daskfleet_live = True
        self.live.setdefault(f"{comm.peer_address} {id(comm)}",
                             LivePeer(comm, peer, "connection", peer.not_after, _presented_der(comm)))

    def _forget_closed(self) -> None:
        for name in [name for name, entry in self.live.items() if entry.comm.closed()]:
            del self.live[name]
            self.task_client_users.pop(name, None)

    def _register_live(self, name: str, comm: Any, kind: LiveKind) -> None:
        """The connection ``comm`` becomes the registered client or worker ``name``."""
        peer = _peer_of(comm)
        for old in [old for old, found in self.live.items() if found.comm is comm]:
            del self.live[old]
        comm._daskfleet_live = True
        self.live[name] = LivePeer(comm, peer, kind, peer.not_after, _presented_der(comm))

    # --- revocation and expiry -------------------------------------------------------------------

    def denial(self, peer: Peer) -> Refusal | None:
        """A refusal when ``peer`` is a user the deny-list names."""
        if peer.role not in conventions.USER_ROLES:
            return None
        entry = self.deny.denies(peer.identity)
        return self._revoked(entry) if entry is not None else None

    def _revoked(self, entry: DenyEntry) -> Refusal:
        return Refusal(f"the access of {entry.user} to cluster {self.gatekeeper.cluster!r} was {entry.describe()}")

    async def apply_deny_list(self, deny: DenyList) -> list[str]:
        """Take ``deny`` as the cluster's deny-list: audit each change, close the connections of every denied user.

        Returns the names of the connections closed.
        """
        if not self._deny_loaded:  # at start: one line for what was revoked before, not one per user
            self._deny_loaded = True
            logger.info("daskfleet: the deny-list names %d user(s)", len(deny.entries))
            self.audit.record("deny-list-loaded", users=deny.users())
        else:
            for user in sorted(set(deny.entries) - set(self.deny.entries)):
                entry = deny.entries[user]
                logger.warning("daskfleet: %s", self._revoked(entry).reason)
                self.audit.record("revocation-seen", identity=user, by=entry.by, reason=entry.reason,
                                  revoked_at=entry.revoked_at)
            for user in sorted(set(self.deny.entries) - set(deny.entries)):
                self.audit.record("revocation-lifted", identity=user)
        self.deny = deny
        self._forget_closed()
        closing = []
        for name, entry in list(self.live.items()):
            denied = self.denial(entry.peer) if entry.kind != "task-client" else next(
                (self._revoked(found) for user in sorted(self.task_client_users.get(name, ()))
                 if (found := deny.denies(user)) is not None), None)
            if denied is not None:
                closing.append(self._close_live(name, entry, denied.reason, "revoked-connection-closed"))
        return [name for name in await asyncio.gather(*closing) if name]

    async def sweep_expired(self, now: dt.datetime | None = None) -> list[str]:
        """Close every connection whose certificate expired (and was not renewed); the names of those closed."""
        now = now or _now()
        self._forget_closed()
        closing = []
        for name, entry in list(self.live.items()):
            if entry.expired(now):
                reason = (f"the certificate of {entry.peer.identity or '(no identity)'} ({entry.peer.role}) expired at "
                          f"{entry.valid_until:%Y-%m-%d %H:%M:%S} UTC and was not renewed")
                closing.append(self._close_live(name, entry, reason, "expired-peer-closed"))
        return [name for name in await asyncio.gather(*closing) if name]

    async def _close_live(self, name: str, entry: LivePeer, reason: str, event: str) -> str | None:
        """Close one live connection; a registered client first hears why, with each of its unfinished tasks erred
        (and, when it subscribed to ``CLIENT_CLOSED_TOPIC``, the reason to raise on any later use)."""
        if self.live.get(name) is not entry:
            return None  # closed meanwhile
        del self.live[name]
        self.task_client_users.pop(name, None)
        if entry.comm.closed():
            return None
        peer = entry.peer
        logger.warning("daskfleet closes %s %s (%s): %s", entry.kind, name, peer.identity, reason)
        self.audit.record(event, identity=peer.identity, role=peer.role, kind=entry.kind, connection=name,
                          peer=peer.address, reason=reason)
        # A task client is its worker's one client, shared by every task there: it is cut (distributed reconnects it
        # with the worker's certificate, cancelling its futures), and the deny-list refuses any graph for the
        # revoked user it sends later. Closing its stream for good would leave the worker's other users without one.
        bcomm = self.scheduler.client_comms.get(name) if entry.kind == "client" else None
        if bcomm is None:
            entry.comm.abort()
            return name
        message = f"daskfleet closed this client: {reason}"
        error = error_message(PermissionError(message))
        state = self.scheduler.clients.get(name)
        for ts in list(state.wants_what) if state is not None else ():
            if ts.state not in ("memory", "erred", "forgotten"):
                bcomm.send({"op": "task-erred", "key": ts.key, "exception": error["exception"], "traceback": error["traceback"]})
        bcomm.send({"op": "event", "topic": "print", "event": (time(), {"args": (f"daskfleet: error: {message}",), "file": 2})})
        if _subscribed(self.scheduler, conventions.CLIENT_CLOSED_TOPIC, name):  # daskfleet.connect's clients
            bcomm.send({"op": "event", "topic": conventions.CLIENT_CLOSED_TOPIC, "event": (time(), message)})
        bcomm.send({"op": "stream-closed"})
        try:
            await asyncio.wait_for(bcomm.close(), 5.0)
        except (OSError, TimeoutError):
            entry.comm.abort()
        return name

    def renewed(self, comm: Any, cert_pem: str) -> Refusal | None:
        """Accept ``cert_pem`` as the renewed certificate of the peer on ``comm``: every live connection of that
        peer's key then stays open until the new certificate's notAfter. A refusal names what is wrong."""
        peer = _peer_of(comm)
        if self.ca_pem is None:
            return Refusal("this scheduler accepts no renewed certificates (it knows no CA)")
        if (denied := self.denial(peer)) is not None:
            return denied
        presented = _presented_der(comm)
        own = LivePeer(comm, peer, "connection", peer.not_after, presented)
        refusal, not_after = renewal_check(self.ca_pem, self.gatekeeper.cluster, peer, own.public_key(), cert_pem, _now())
        if refusal is not None:
            self.audit.record("renewal-refused", identity=peer.identity, role=peer.role, peer=peer.address,
                              reason=refusal.reason)
            return refusal
        key = own.public_key()
        extended = []
        for name, entry in self.live.items():
            if entry.comm is comm or (entry.peer.identity == peer.identity and entry.peer.role == peer.role
                                      and entry.public_key() == key):
                entry.valid_until = not_after
                extended.append(name)
        self.audit.record("certificate-renewed", identity=peer.identity, role=peer.role, peer=peer.address,
                          valid_until=not_after.isoformat(), connections=len(extended))
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
            return self.denial(peer) or self.gatekeeper.check_operation(op, peer, msg, self._worker_hosts)

        def refuse(peer: Peer, refusal: Refusal) -> str:
            return self._refuse("operation", peer, refusal, op=op)

        def track(comm: Any, peer: Peer) -> None:
            self._track(comm, peer)

        return _guarded(op, handler, decide, refuse, track)

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
            self._register_live(str(msg.get("address")), comm, "worker")
            self._restrict_stream(comm, peer, "worker", msg.get("address"))
            return await handler(comm, **msg)

        return register_worker

    def _guard_client_registration(self, handler: Callable) -> Callable:
        async def register_client(comm: Any, client: str, versions: dict, **msg: Any) -> Any:
            peer = _peer_of(comm)
            refusal = self.denial(peer)
            warning = None
            if refusal is None:
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
            self._register_live(client, comm, "task-client" if peer.role == "worker" else "client")
            self._restrict_stream(comm, peer, "client", client)
            return await handler(comm, client=client, versions=versions, **msg)

        return register_client

    def _guard_graphs(self, handler: Callable) -> Callable:
        """Admit a graph only with a known origin and every admission check passed; a refusal errs its keys."""

        async def update_graph(client: str, **msg: Any) -> Any:
            peer = self.identities.get(client) or Peer(None, None, "", "")
            owner, refusal = self.gatekeeper.graph_owner(peer, self._submitting_task(msg.get("submitting_task")))
            if refusal is None and (entry := self.deny.denies(owner)) is not None:
                refusal = self._revoked(entry)
            if refusal is None and owner and peer.role == "worker":
                self.task_client_users.setdefault(client, set()).add(owner)
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
