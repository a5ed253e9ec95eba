"""What the scheduler and workers enforce beyond distributed: pure decisions on peers and requests.

distributed accepts any certificate from the cluster CA in any role and only warns on
version mismatch. ``Gatekeeper`` decides for the scheduler (peer + request -> refusal or
not), ``WorkerGatekeeper`` for a worker's own server; ``daskfleet.trust.guards`` binds
them to running servers.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

from distributed.comm.addressing import get_address_host
from distributed.versions import get_versions

from .. import conventions
from .peers import Peer, Refusal, role_refusal

#: Key of the worker's startup information that carries its environment fingerprint.
FINGERPRINT_KEY = "daskfleet-fingerprint"

#: Packages whose versions must agree between a client and the cluster.
CORE_PACKAGES = conventions.CORE_PACKAGES
#: Compared only when both sides have them.
OPTIONAL_CORE_PACKAGES = conventions.OPTIONAL_CORE_PACKAGES

#: Scheduler operations a worker calls (distributed 2026.8: registration, heartbeats, its own
#: retirement, P2P shuffle coordination). A worker certificate may call nothing else.
WORKER_OPS = frozenset(
    {
        "register-worker", "register_nanny", "heartbeat_worker", "unregister", "add_keys", "retire_workers",
        "set_resources", "who_has", "shuffle_barrier", "shuffle_restrict_task", "shuffle_get",
        "shuffle_get_or_create",
    }
)
#: daskfleet's own scheduler operations for worker certificates: the report of a worker ended for exceeding its
#: memory limit, made with that worker's certificate by whoever ends it (``daskfleet.memory``).
DASKFLEET_WORKER_OPS = frozenset({conventions.MEMORY_KILL_OP})
#: Of those, only workers may call these: registration and heartbeats, and the P2P shuffle's coordination
#: (a worker's shuffle plugin calls it over its own connection; no client does).
WORKER_ONLY_OPS = frozenset(
    {"register-worker", "register_nanny", "heartbeat_worker", "unregister", "add_keys", "shuffle_barrier",
     "shuffle_restrict_task", "shuffle_get", "shuffle_get_or_create"}
) | DASKFLEET_WORKER_OPS
#: Worker operations that name workers: the key that names them. A worker acts only on its own host.
WORKER_SELF_SCOPED = {"retire_workers": "workers", "set_resources": "worker", "unregister": "address",
                      "heartbeat_worker": "address", conventions.MEMORY_KILL_OP: "worker"}
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
    {"run", "run_coroutine", "terminate", "upload_file", "plugin-add", "plugin-remove", "gather", "free_keys",
     conventions.ENV_SWITCH_OP}
)
#: Who may call anything else on a worker: its scheduler and its peer workers.
NODE_PEER_ROLES = frozenset({"scheduler", "worker"})
#: Ends a stream; allowed on both.
STREAM_CONTROL_OPS = frozenset({"close-stream"})
#: The client id distributed's ``fire_and_forget`` uses on behalf of every client.
FIRE_AND_FORGET_CLIENT = "fire-and-forget"
#: Roles that may connect to the scheduler at all (its own certificate never does; a ``metrics`` scraper's
#: neither, for now: it reads the dashboard's /metrics).
PEER_ROLES = frozenset({"worker", *conventions.USER_ROLES})
#: People's roles (members and admins): they register clients, submit graphs, and call a worker's data and
#: actor operations directly.
USER_ROLES = frozenset(conventions.USER_ROLES)
#: What a *task client* (a task's ``get_client()``/``worker_client()``: a client holding its worker's
#: certificate, registered from a registered worker's own host) may call besides WORKER_OPS: submit
#: (on its stream), scatter and gather, read where data is, and the coordination primitives (Lock and
#: Semaphore, MultiLock, Queue, Variable, Event, published datasets). Everything else is for users.
TASK_CLIENT_OPS = frozenset(
    {
        "identity", "versions", "gather", "scatter", "has_what", "ncores", "ncores_running", "nbytes",
        "semaphore_register", "semaphore_acquire", "semaphore_release", "semaphore_refresh_leases",
        "semaphore_value", "semaphore_close", "multi_lock_acquire", "multi_lock_release",
        "queue_create", "queue_get", "queue_put", "queue_qsize", "variable_set", "variable_get",
        "event_wait", "event_set", "event_clear", "event_is_set",
        "publish_put", "publish_get", "publish_list", "publish_delete",
    }
)


# --- members and admins -----------------------------------------------------------------------
#
# Every operation a user's certificate may reach on the scheduler (distributed 2026.8's handler table plus
# daskfleet's own), and who of the cluster's people may call it: members (``client`` certificates) or only
# admins (``admin`` certificates, who may call everything a member may). Each entry says why. This keeps
# members from disturbing each other by mistake (Bob restarting the cluster under Alice's work); it is no
# security boundary: distributed unpickles what members submit, so a member's pickled object runs inside
# the scheduler whatever is refused here (README, "Security model"). An operation in neither table (a
# later distributed's) is for admins until classified; tests/test_gatekeeper.py fails until it is.

#: Operations open to members, with what they do.
MEMBER_OPS: dict[str, str] = {
    "register-client": "connects a client (checked first by check_client: certificate and package versions)",
    **dict.fromkeys(("identity", "versions", "echo"), "describes the scheduler"),
    **dict.fromkeys(("gather", "scatter", "update_data"),
                    "moves a member's data in and out (update_data records a direct scatter)"),
    **dict.fromkeys(("who_has", "has_what", "nbytes", "ncores", "ncores_running", "processing"),
                    "reads where data and work are"),
    "retry": "retries erred tasks (client.retry)",
    **dict.fromkeys(("publish_put", "publish_get", "publish_list", "publish_delete"),
                    "publishes, reads or removes a dataset (one namespace for the cluster)"),
    **dict.fromkeys(
        ("semaphore_register", "semaphore_acquire", "semaphore_release", "semaphore_refresh_leases",
         "semaphore_value", "semaphore_close", "multi_lock_acquire", "multi_lock_release", "queue_create",
         "queue_get", "queue_put", "queue_qsize", "variable_set", "variable_get", "event_wait", "event_set",
         "event_clear", "event_is_set"),
        "coordinates work: Lock and Semaphore, MultiLock, Queue, Variable, Event",
    ),
    **dict.fromkeys(
        ("get_task_stream", "get_task_stream_index", "get_task_status", "get_task_prefix_states", "get_story",
         "events", "logs", "get_logs", "worker_logs", "call_stack", "profile", "performance_report",
         "get_cluster_state", "dump_state", "get_metadata", "get_runspec", "get_error_cause", "check_idle",
         "adaptive_target", "workers_to_close", "subscribe_worker_status"),
        "reads the cluster's state, logs and profiles (the dashboard shows every member the same)",
    ),
    **dict.fromkeys(("set_metadata", "log_event", "start_task_metadata", "stop_task_metadata",
                     "memory_sampler_start", "memory_sampler_stop"),
                    "records diagnostics of a member's own work"),
    "broadcast": "asks every worker one of MEMBER_WORKER_QUERIES (client.get_versions); other worker "
                 "operations (run, upload_file, ...) are for admins",
    "proxy": "asks one worker one of MEMBER_WORKER_QUERIES; other worker operations are for admins",
    "amm_handler": "asks whether the active memory manager runs; starting, stopping or running it is for admins",
    conventions.SCALING_STATE_HANDLER: "reads the scaler's state (daskfleet status)",
    conventions.ENV_ROLL_HANDLER: "reads the environment roll's progress (daskfleet env status)",
    conventions.USAGE_OP: "reads the usage records (daskfleet usage)",
    conventions.PROFILE_OP: "reads a task prefix's merged profile (daskfleet profile)",
    conventions.RENEWED_OP: "hands over the caller's renewed certificate (same key) for its own connection",
}
#: Operations only admins may call, with what they do to the other members.
ADMIN_OPS: dict[str, str] = {
    "restart": "restarts every worker, losing everyone's work in progress and results",
    "restart_workers": "restarts workers, losing the work and results on them",
    "retire_workers": "retires workers (and so changes the cluster's size), moving everyone's data; a worker "
                      "retiring itself needs no admin",
    "terminate": "stops the scheduler, and with it everyone's work",
    "run_function": "runs code on the scheduler (client.run_on_scheduler)",
    "feed": "runs code on the scheduler, repeatedly",
    "register_scheduler_plugin": "runs a plugin's code inside the scheduler",
    "register_worker_plugin": "runs a plugin's code on every worker (client.upload_file is one)",
    "register_nanny_plugin": "runs a plugin's code on every worker's nanny",
    **dict.fromkeys(("unregister_scheduler_plugin", "unregister_worker_plugin", "unregister_nanny_plugin"),
                    "removes a plugin others may rely on"),
    "rebalance": "moves everyone's data between workers",
    "replicate": "copies data onto many workers, taking memory from everyone's work",
    "set_restrictions": "pins anyone's tasks to chosen workers",
    "set_resources": "changes the resources a worker offers, and so where everyone's tasks run; a worker "
                     "setting its own needs no admin",
    "benchmark_hardware": "loads every worker's disk, memory and network, slowing everyone's work",
    "dump_cluster_state_to_url": "writes a file wherever the scheduler may write, with its credentials",
}
#: Worker operations a member may ``broadcast`` or ``proxy`` through the scheduler: they read and change
#: nothing. Every other one runs as the scheduler, which a worker obeys (run, upload_file, plugin-add...).
MEMBER_WORKER_QUERIES = frozenset(
    {"versions", "identity", "get_story", "call_stack", "profile", "profile_metadata", "get_logs",
     "get_monitor_info", "keys", "ping", "echo", "dump_state"}
)
#: ``amm_handler`` methods a member may call.
MEMBER_AMM_METHODS = frozenset({"running"})


def member_refusal(op: str, msg: Mapping[str, Any]) -> Refusal | None:
    """Why a member may not call ``op`` with ``msg`` (None: they may): see MEMBER_OPS and ADMIN_OPS."""
    if op in ("broadcast", "proxy"):
        inner = msg.get("msg")
        worker_op = inner.get("op") if isinstance(inner, Mapping) else None
        if worker_op not in MEMBER_WORKER_QUERIES:
            return _for_admins(f"{op!r} of worker operation {worker_op!r}",
                               "runs as the scheduler on workers, which do what it says")
        return None
    if op == "amm_handler" and msg.get("method") not in MEMBER_AMM_METHODS:
        return _for_admins(f"'amm_handler' method {msg.get('method')!r}", "changes memory management for everyone")
    if op in MEMBER_OPS:
        return None
    return _for_admins(repr(op), ADMIN_OPS.get(op, "is not classified for members (see MEMBER_OPS)"))


def _for_admins(what: str, does: str) -> Refusal:
    return Refusal(f"{what} is for the cluster's admins (it {does}); certificate role is "
                   f"{conventions.MEMBER_ROLE!r} (a member)")


@dataclass(frozen=True)
class SubmittingTask:
    """What the scheduler knows of the task a task client names as submitting a graph."""

    key: Any
    state: str | None
    host: str | None
    owner: str | None


@dataclass(frozen=True)
class WorkerGatekeeper:
    """Pure decisions for a worker's own server: who may call which of its operations."""

    cluster: str

    def check_operation(self, op: str, peer: Peer) -> Refusal | None:
        if op in CLIENT_WORKER_OPS:
            return role_refusal(self.cluster, peer, NODE_PEER_ROLES | USER_ROLES)
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
    #: Further environments accepted while the cluster rolls onto a newly published one.
    also_accepted: frozenset[str] = frozenset()
    #: What a client whose packages differ should run, added to its refusal.
    client_fix: str = ""

    def _role_refusal(self, peer: Peer, needed: frozenset[str] | str) -> Refusal | None:
        return role_refusal(self.cluster, peer, needed)

    def check_operation(
        self, op: str, peer: Peer, msg: Mapping[str, Any] | None = None, worker_hosts: Container[str] = (),
    ) -> Refusal | None:
        """Workers may call only WORKER_OPS, on themselves, and TASK_CLIENT_OPS from a registered worker's
        host (``worker_hosts``); admins anything but WORKER_ONLY_OPS; members what ``member_refusal`` lets through."""
        if op in DENIED_OPS:
            return Refusal(f"operation {op!r} is not served by the scheduler")
        refusal = self._role_refusal(peer, PEER_ROLES)
        if refusal is not None:
            return refusal
        if peer.role in USER_ROLES:
            if op in WORKER_ONLY_OPS:
                return self._role_refusal(peer, "worker")
            return None if peer.role == conventions.ADMIN_ROLE else member_refusal(op, msg or {})
        if op in TASK_CLIENT_OPS and op not in WORKER_OPS:
            return self._task_client_host_refusal(peer, worker_hosts)
        if op == conventions.RENEWED_OP:  # a node renews its own connection's certificate, as a user does
            return None
        if op not in WORKER_OPS and op not in DASKFLEET_WORKER_OPS:
            return Refusal(f"certificate role is 'worker'; admin or client required: {op!r} is reserved for users")
        return self._worker_scope_refusal(op, peer, msg or {})

    def _task_client_host_refusal(self, peer: Peer, worker_hosts: Container[str]) -> Refusal | None:
        host = host_of(peer.address) if peer.address else None
        if host is None or host not in worker_hosts:
            return Refusal(f"a worker certificate acts as a task client only from a registered worker's host, not {peer.address}")
        return None

    def graph_owner(self, peer: Peer, submitting: SubmittingTask | None) -> tuple[str | None, Refusal | None]:
        """(user charged, refusal) for a graph: a user's own, or a task client's, charged to its running task's owner.

        The owner comes from the scheduler's own record of the submitting task (which graph created it,
        and where it runs), never from what the worker says: the task must be processing on a worker on
        the task client's own host.
        """
        if peer.role in USER_ROLES:
            return peer.identity, None
        if submitting is None or submitting.key is None:
            return None, Refusal("a task client's graph must come from a running task, and names none")
        if submitting.state != "processing":
            return None, Refusal(f"task {submitting.key!r}, named as submitting this graph, is not running")
        if submitting.host is None or submitting.host != host_of(peer.address):
            return None, Refusal(
                f"task {submitting.key!r} runs on {submitting.host or 'no worker'}, not on the task client's host "
                f"{host_of(peer.address)}"
            )
        if not submitting.owner:
            return None, Refusal(f"task {submitting.key!r} has no recorded owner")
        return submitting.owner, None

    def _worker_scope_refusal(self, op: str, peer: Peer, msg: Mapping[str, Any]) -> Refusal | None:
        key = WORKER_SELF_SCOPED.get(op)
        if key is None or msg.get(key) is None:
            return None
        named = msg[key] if isinstance(msg[key], (list, tuple, set)) else [msg[key]]
        peer_host = get_address_host(peer.address) if peer.address else None
        others = sorted(str(address) for address in named if host_of(address) != peer_host)
        if others:
            return Refusal(f"a worker may {op} only itself, not {', '.join(others)}")
        return None

    def check_worker(self, peer: Peer, extra: Mapping[str, Any] | None, address: str | None = None) -> Refusal | None:
        """A worker registers with a worker certificate, the cluster's environment, and its own host's address."""
        refusal = self._role_refusal(peer, "worker")
        if refusal:
            return refusal
        if address and peer.address and host_of(address) != host_of(peer.address):
            return Refusal(f"registers address {address}, but connects from {peer.address}")
        reported = (extra or {}).get(FINGERPRINT_KEY)
        if reported != self.expected_fingerprint and reported not in self.also_accepted:
            during = (f" (or {', '.join(sorted(self.also_accepted))} while the cluster changes environment)"
                      if self.also_accepted else "")
            return Refusal(
                f"environment fingerprint {reported or '(none reported)'} differs from the cluster's "
                f"{self.expected_fingerprint}{during}"
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

    def check_client(
        self, peer: Peer, client_versions: Mapping[str, Any], worker_hosts: Container[str] = (),
    ) -> tuple[Refusal | None, str | None]:
        """(refusal, warning) for a registering client: a user's, or a task client from a registered worker's host."""
        if peer.role == "worker":
            refusal = self._role_refusal(peer, "worker") or self._task_client_host_refusal(peer, worker_hosts)
        else:
            refusal = self._role_refusal(peer, USER_ROLES)
        if refusal:
            return refusal, None
        differences = self.version_differences(client_versions)
        if not differences:
            return None, None
        text = "package versions differ from the cluster's: " + "; ".join(differences)
        if self.client_fix:
            text += f". {self.client_fix}"
        if self.client_version_policy == "warn":
            return None, text
        return Refusal(text), None


def host_of(address: Any) -> str | None:
    try:
        return get_address_host(str(address))
    except ValueError:
        return None


def scheduler_versions() -> dict[str, str | None]:
    """This process's core package versions, as distributed reports them."""
    return dict(get_versions()["packages"])
