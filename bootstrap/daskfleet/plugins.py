"""What the scheduler enforces beyond distributed: role-bound certificates, audit, conformance.

distributed accepts any certificate from the cluster CA in any role and only warns on
version mismatch. ``Gatekeeper`` decides (pure: peer + request -> refusal or not); the
``SchedulerGuard`` adapter binds it to a running ``distributed.Scheduler`` by wrapping its
handlers before the scheduler starts listening, and ``AuditPlugin`` records who did what.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from time import time
from typing import Any

from distributed.comm.addressing import get_address_host
from distributed.core import error_message
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.versions import get_versions

from . import conventions

logger = logging.getLogger("daskfleet.scheduler")

#: Key of the worker's startup information that carries its environment fingerprint.
FINGERPRINT_KEY = "daskfleet-fingerprint"

#: Packages whose versions must agree between a client and the cluster.
CORE_PACKAGES: tuple[str, ...] = (
    "python", "dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz", "numpy", "pandas",
)
#: Compared only when both sides have them.
OPTIONAL_CORE_PACKAGES = frozenset({"numpy", "pandas"})

#: Scheduler operations a worker calls (distributed 2026.8: registration, heartbeats, its own
#: retirement, P2P shuffle coordination). A worker certificate may call nothing else.
WORKER_OPS = frozenset(
    {
        "register-worker", "register_nanny", "heartbeat_worker", "unregister", "add_keys", "retire_workers",
        "set_resources", "who_has", "shuffle_barrier", "shuffle_restrict_task", "shuffle_get",
        "shuffle_get_or_create",
    }
)
#: Of those, only workers may call these (a client may retire workers or ask who has what).
WORKER_ONLY_OPS = frozenset({"register-worker", "register_nanny", "heartbeat_worker", "unregister", "add_keys"})
#: Worker operations that name workers: the key that names them. A worker acts only on its own host.
WORKER_SELF_SCOPED = {"retire_workers": "workers", "set_resources": "worker", "unregister": "address",
                      "heartbeat_worker": "address"}
#: Nobody may call these on the scheduler: ``connection_stream`` (a worker-to-worker stream) would
#: feed any message, under any client or worker id, into the scheduler's stream handlers.
DENIED_OPS = frozenset({"connection_stream"})
#: Operations a worker sends on its registered stream (distributed's ``worker_handlers``); every
#: other stream operation is a client's. distributed merges both into one table, so a client
#: could otherwise report "task-finished" for a worker, and a worker submit graphs.
WORKER_STREAM_OPS = frozenset(
    {
        "task-finished", "task-erred", "release-worker-data", "add-keys", "long-running", "reschedule",
        "keep-alive", "log-event", "worker-status-change", "request-refresh-who-has", "steal-response",
    }
)
#: A worker's operations a client calls directly: direct gather and scatter, and actors.
CLIENT_WORKER_OPS = frozenset({"get_data", "update_data", "actor_execute", "actor_attribute", "ping", "versions"})
#: A worker's operations that run code or change it: only its scheduler may call them.
SCHEDULER_ONLY_WORKER_OPS = frozenset(
    {"run", "run_coroutine", "terminate", "upload_file", "plugin-add", "plugin-remove", "gather", "free_keys"}
)
#: Who may call anything else on a worker: its scheduler and its peer workers.
NODE_PEER_ROLES = frozenset({"scheduler", "worker"})
#: Ends a stream; allowed on both.
STREAM_CONTROL_OPS = frozenset({"close-stream"})
#: The client id distributed's ``fire_and_forget`` uses on behalf of every client.
FIRE_AND_FORGET_CLIENT = "fire-and-forget"
#: Roles that may connect to the scheduler at all (its own certificate never does).
PEER_ROLES = frozenset({"worker", "client"})


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a TLS connection, from its verified certificate."""

    cluster: str | None
    role: str | None
    identity: str
    address: str = ""

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
        return cls(cluster, role, identity, address)


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


@dataclass(frozen=True)
class WorkerGatekeeper:
    """Pure decisions for a worker's own server: who may call which of its operations."""

    cluster: str

    def check_operation(self, op: str, peer: Peer) -> Refusal | None:
        if op in CLIENT_WORKER_OPS:
            return role_refusal(self.cluster, peer, NODE_PEER_ROLES | {"client"})
        if op in SCHEDULER_ONLY_WORKER_OPS:
            return role_refusal(self.cluster, peer, "scheduler")
        return role_refusal(self.cluster, peer, NODE_PEER_ROLES)


@dataclass(frozen=True)
class Gatekeeper:
    """Pure decisions: may this peer register or call this operation?"""

    cluster: str
    expected_fingerprint: str
    versions: Mapping[str, str | None]
    client_version_policy: str = "refuse"

    def _role_refusal(self, peer: Peer, needed: frozenset[str] | str) -> Refusal | None:
        return role_refusal(self.cluster, peer, needed)

    def check_operation(self, op: str, peer: Peer, msg: Mapping[str, Any] | None = None) -> Refusal | None:
        """Workers may call only WORKER_OPS, on themselves; clients anything but WORKER_ONLY_OPS."""
        if op in DENIED_OPS:
            return Refusal(f"operation {op!r} is not served by the scheduler")
        refusal = self._role_refusal(peer, PEER_ROLES)
        if refusal is not None:
            return refusal
        if peer.role == "client":
            return self._role_refusal(peer, "worker") if op in WORKER_ONLY_OPS else None
        if op not in WORKER_OPS:
            return self._role_refusal(peer, "client")
        return self._worker_scope_refusal(op, peer, msg or {})

    def _worker_scope_refusal(self, op: str, peer: Peer, msg: Mapping[str, Any]) -> Refusal | None:
        key = WORKER_SELF_SCOPED.get(op)
        if key is None or msg.get(key) is None:
            return None
        named = msg[key] if isinstance(msg[key], (list, tuple, set)) else [msg[key]]
        peer_host = get_address_host(peer.address) if peer.address else None
        others = sorted(str(address) for address in named if _host_of(address) != peer_host)
        if others:
            return Refusal(f"a worker may {op} only itself, not {', '.join(others)}")
        return None

    def check_worker(self, peer: Peer, extra: Mapping[str, Any] | None, address: str | None = None) -> Refusal | None:
        """A worker registers with a worker certificate, the cluster's environment, and its own host's address."""
        refusal = self._role_refusal(peer, "worker")
        if refusal:
            return refusal
        if address and peer.address and _host_of(address) != _host_of(peer.address):
            return Refusal(f"registers address {address}, but connects from {peer.address}")
        reported = (extra or {}).get(FINGERPRINT_KEY)
        if reported != self.expected_fingerprint:
            return Refusal(
                f"environment fingerprint {reported or '(none reported)'} differs from the cluster's "
                f"{self.expected_fingerprint}"
            )
        return None

    def version_differences(self, client_versions: Mapping[str, Any]) -> list[str]:
        theirs = (client_versions or {}).get("packages", {})
        differences = []
        for name in CORE_PACKAGES:
            ours, yours = self.versions.get(name), theirs.get(name)
            if name in OPTIONAL_CORE_PACKAGES and (ours is None or yours is None):
                continue
            if ours != yours:
                differences.append(f"{name} {yours or 'missing'} (yours) != {ours or 'missing'} (cluster)")
        return differences

    def check_stream_message(self, kind: str, own_id: str, msg: Any) -> Refusal | None:
        """May a registered ``kind`` ("client"/"worker") stream carry ``msg``, acting as ``own_id``?"""
        if msg == "OK":
            return None
        if not isinstance(msg, dict):
            return Refusal(f"malformed stream message of type {type(msg).__name__}")
        op = msg.get("op")
        if op in STREAM_CONTROL_OPS:
            return None
        if (op in WORKER_STREAM_OPS) != (kind == "worker"):
            return Refusal(f"stream operation {op!r} is not a {kind}'s")
        named = msg.get(kind, own_id)
        if named != own_id and not (kind == "client" and named == FIRE_AND_FORGET_CLIENT):
            return Refusal(f"stream operation {op!r} names {kind} {named!r}, not its own")
        return None

    def check_client(self, peer: Peer, client_versions: Mapping[str, Any]) -> tuple[Refusal | None, str | None]:
        """(refusal, warning) for a registering client."""
        refusal = self._role_refusal(peer, "client")
        if refusal:
            return refusal, None
        differences = self.version_differences(client_versions)
        if not differences:
            return None, None
        text = "package versions differ from the cluster's: " + "; ".join(differences)
        if self.client_version_policy == "warn":
            return None, text
        return Refusal(text), None


class AuditLog:
    """Append-only JSON lines: one per security-relevant event. Never contains key material."""

    def __init__(self, path: str | Path | None, forward: Callable[[str], None] | None = None):
        self.path = Path(path) if path else None
        self.forward = forward
        self._lock = threading.Lock()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, event: str, **fields: Any) -> None:
        entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), "event": event, **fields}
        line = json.dumps(entry, sort_keys=True, default=str)
        logger.info("audit %s", line)
        if self.forward:
            self.forward(line)
        if self.path:
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")


def _host_of(address: Any) -> str | None:
    try:
        return get_address_host(str(address))
    except ValueError:
        return None


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


class AuditPlugin(SchedulerPlugin):
    """Records client disconnects and graph submissions with the client's certificate identity."""

    name = "daskfleet-audit"

    def __init__(self, audit: AuditLog, identities: dict[str, Peer]):
        self.audit = audit
        self.identities = identities

    def remove_client(self, scheduler: Any, client: str) -> None:
        peer = self.identities.pop(client, None)
        if peer is not None:
            self.audit.record("client-disconnect", identity=peer.identity, client=client, peer=peer.address)

    def update_graph(self, scheduler: Any, *, client: str, tasks: list, **kwargs: Any) -> None:
        peer = self.identities.get(client)
        self.audit.record(
            "graph-submitted",
            identity=peer.identity if peer else None,
            client=client,
            tasks=len(tasks),
        )


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


def scheduler_versions() -> dict[str, str | None]:
    """This process's core package versions, as distributed reports them."""
    return dict(get_versions()["packages"])
