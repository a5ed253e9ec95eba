"""The node agent: fetch spec and TLS material, check them, and run a TLS-only scheduler or worker.

The same code path runs on an instance (``--source aws:<cluster>``, supervised by systemd)
and for the local cluster (``--source dir:<node directory>``, supervised by the launcher). Every
run ends with one line on stderr and its documented exit code (errors.ExitCode): a failure class,
or a requested exit (restart, retirement, drain, lost scheduler) its supervisor acts on
(``daskfleet.node.supervision``).
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import monotonic, sleep, time

import dask
from distributed import Scheduler, Security, Worker
from distributed.comm import connect

from .. import conventions, usage
from ..environments.published import PublishedEnvironment
from ..environments.records import current_fingerprint
from ..environments.rollout import ENV_ERROR_KEY, SWITCH_OP
from ..environments.rollout import install as install_rollout
from ..errors import DaskfleetError, ExitCode
from ..memory.policy import TerminatePolicy, cgroup_memory_limit, prefer_for_oom_kill, worker_memory_limit
from ..memory.scheduler import install as install_memory
from ..memory.watch import WORKER_RECORD_FILE, WatchedWorker, start_watcher, stop_watcher
from ..scaling.runner import WorkerBackend
from ..scaling.runner import install as install_scaling
from ..trust import pki
from ..trust.audit import AuditLog
from ..trust.gatekeeper import FINGERPRINT_KEY, Gatekeeper, WorkerGatekeeper, scheduler_versions
from ..trust.guards import SchedulerGuard, WorkerGuard
from ..trust.dashboard import install as install_dashboard_guard
from ..trust.revocation import RevocationWatch, file_reader
from ..trust.renewal import install as install_renewal
from ..trust.peers import Peer
from ..trust.tls import TlsMaterial
from ..usage.policy import INSTANCE_KEY
from ..usage.records import RECORDS_FILE
from .daskconfig import TlsFiles, materialize_tls, render_dask_config, write_dask_config
from .renewal import NodeIssuer, NodeRenewal, live_contexts, scheduler_hand_over, vend_material
from .restarts import CloseReasons, announce_closes
from .sizing import WorkerSize, spec_worker_size
from .sources import SCHEDULER_INFO_FILE, NodeSource
from .spec import NodeSpec, parse_spec
from .supervision import BACKOFF, Outcome, RunHistory, before_start

logger = logging.getLogger("daskfleet.agent")

#: How often a worker asks its source whether the platform is taking the node away.
LEAVING_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class PreparedNode:
    """A node whose spec, certificate and environment have been checked."""

    spec: NodeSpec
    tls: TlsFiles
    fingerprint: str
    runtime_dir: Path
    #: The node's TLS material, and the vendor that renews it (None: a long-lived certificate from the source).
    material: TlsMaterial | None = None
    issuer: NodeIssuer | None = None

    def renewal(self, server, hand_over=None) -> NodeRenewal | None:
        """Renew the certificate of ``server`` (a started Scheduler or Worker) when a vendor signs it; stop the
        server when it has no valid certificate left."""
        if self.issuer is None or self.material is None:
            return None

        def stop(reason: str) -> None:
            asyncio.ensure_future(server.close(reason=f"daskfleet: {reason}"))

        return NodeRenewal(self.issuer, self.material, self.tls.cert, lambda: live_contexts(server), hand_over,
                           on_failure=stop).start()


def accepted_fingerprints(expected: str | None, published: PublishedEnvironment | None, platform: str) -> set[str]:
    """The environments a node may start in: the spec's (its image's), else what was published to the cluster and
    what that replaces (a node whose install of it failed keeps running its previous one). Empty: no check."""
    if not expected:
        return set()
    allowed = {expected}
    if published is not None and platform in published.fingerprints:
        allowed |= {published.fingerprint_for(platform), *published.replaces_for(platform)}
    return allowed


def default_runtime_dir(role: str) -> Path:
    """systemd's RuntimeDirectory when set, else a fresh private temporary directory."""
    if runtime := os.environ.get("RUNTIME_DIRECTORY"):
        return Path(runtime)
    return Path(tempfile.mkdtemp(prefix=f"daskfleet-{role}-"))


def prepare_node(role: str, source: NodeSource, runtime_dir: Path) -> PreparedNode:
    """Fetch and check everything a node needs; raise DaskfleetError with the failure class."""
    spec = parse_spec(source.fetch_spec(role), origin=f"node spec from {source.describe()}")
    if spec.role != role:
        raise DaskfleetError(
            f"node spec from {source.describe()}: role: spec is for a {spec.role}, this node is a {role}",
            ExitCode.SPEC_INVALID,
        )
    issuer = source.certificate_issuer(role, spec)
    material = vend_material(issuer) if issuer is not None else source.fetch_tls(role)
    pki.check_node_certificate(
        material.ca_pem, material.cert_pem, material.key_pem,
        cluster=spec.cluster, role=role, origin=f"{role} certificate from {source.describe()}",
    )
    fingerprint = current_fingerprint()
    # The published environment matters only where the spec names an expected one (an instance's image).
    published = source.published_environment() if spec.expected_fingerprint else None
    allowed = accepted_fingerprints(spec.expected_fingerprint, published, conventions.conda_platform())
    if allowed and fingerprint not in allowed:
        raise DaskfleetError(
            f"environment fingerprint {fingerprint} differs from the expected {' or '.join(sorted(allowed))}",
            ExitCode.ENV_MISMATCH,
        )
    pki.ensure_private_dir(runtime_dir)
    files = materialize_tls(material, runtime_dir / "tls")
    config = render_dask_config(role, files)
    os.environ["DASK_CONFIG"] = str(write_dask_config(config, runtime_dir).parent)
    dask.config.update(dask.config.config, config, priority="new")
    return PreparedNode(spec, files, fingerprint, runtime_dir, material, issuer)


def node_security() -> Security:
    """The Security object built from the node's written Dask config (TLS required)."""
    return Security()


def _install_signal_handlers(on_signal) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)


async def run_scheduler(
    node: PreparedNode, source: NodeSource, worker_backend: Callable[[], WorkerBackend] | None = None
) -> Outcome:
    spec = node.spec
    gatekeeper = Gatekeeper(
        cluster=spec.cluster,
        expected_fingerprint=spec.expected_fingerprint or node.fingerprint,
        versions=scheduler_versions(),
        client_version_policy=spec.client_version_policy,
        client_fix=f"Install the cluster's environment with `daskfleet env sync {spec.cluster}` and run your client from it",
    )
    forward = source.audit_forwarder()
    audit = AuditLog(audit_log_path(spec, node.runtime_dir), forward)
    scheduler = Scheduler(
        host=spec.listen_host,
        port=spec.scheduler_port,
        protocol="tls",
        security=node_security(),
        dashboard_address=f"{spec.listen_host}:{spec.dashboard_port}",
        contact_address=f"tls://{spec.contact_host}:{spec.scheduler_port}" if spec.contact_host else None,
    )
    restarting: list[Callable[[int], None]] = []
    announce_closes(scheduler, lambda count: [hear(count) for hear in restarting])
    guard = SchedulerGuard(gatekeeper, audit, ca_pem=node.tls.ca.read_text())
    guard.install(scheduler)
    install_dashboard_guard(scheduler, guard)
    install_revocation(scheduler, guard, spec, source)
    install_memory(scheduler, guard, audit)
    install_renewal(guard)
    accounting = usage.install(
        scheduler, guard, spec.usage, records_path=audit_log_path(spec, node.runtime_dir).with_name(RECORDS_FILE),
        source=source,
    )
    # The budget stop and per-user limits cap what the scaler may ask for; the scaler's figure is a metric.
    scaler = install_scaling(scheduler, spec.scaling, worker_backend, audit, ceiling=accounting.worker_ceiling)
    if scaler is not None:
        scaler.observers.append(lambda decision: accounting.set_desired_workers(decision.desired))
        restarting.append(scaler.core.expect)  # restarted workers come back: no replacements meanwhile
        guard.add_handler(conventions.SCALING_STATE_HANDLER, scaler.state)
    rollout = install_rollout(
        scheduler, guard, audit, source.published_environment, platform=conventions.conda_platform(),
        own_fingerprint=node.fingerprint, settings=spec.rollout, own_error=source.environment_error(),
        expect_back=scaler.core.expect if scaler is not None and scaler.backend.restarts_switching_workers else None,
    )
    try:
        await scheduler
    except RuntimeError as exc:
        cause = exc.__cause__
        if not isinstance(cause, OSError):
            raise
        raise DaskfleetError(
            f"scheduler cannot listen on {spec.listen_host}:{spec.scheduler_port} ({cause.strerror or cause})",
            ExitCode.CONFIG,
        ) from None
    dashboard_port = scheduler.http_server.port
    contact_host = spec.contact_host or spec.listen_host
    info = {"address": scheduler.address, "dashboard": f"https://{contact_host}:{dashboard_port}/status", "pid": os.getpid()}
    pki.write_private(node.runtime_dir / SCHEDULER_INFO_FILE, json.dumps(info))  # atomic: the launcher polls it
    logger.info("daskfleet scheduler for %s at %s, dashboard %s", spec.cluster, info["address"], info["dashboard"])
    _install_signal_handlers(lambda: asyncio.ensure_future(scheduler.close(reason="signal")))
    renewal = node.renewal(scheduler)
    await scheduler.finished()
    if renewal is not None:
        renewal.stop()
        if renewal.failure:
            raise DaskfleetError(renewal.failure, ExitCode.CONFIG)
    if forward is not None:
        await asyncio.to_thread(forward.close)
    if rollout.restarting:
        return Outcome(ExitCode.ENVIRONMENT_SWITCH, "restarting into the newly published environment")
    if scaler is not None and scaler.stopping:
        return Outcome(ExitCode.RETIRED, "the cluster went idle and its scheduler's capacity is 0: stopped")
    return Outcome(ExitCode.OK, "the scheduler stopped on request")


def install_revocation(scheduler: Scheduler, guard: SchedulerGuard, spec: NodeSpec, source: NodeSource) -> None:
    """Poll the cluster's deny-list (the spec's file, else the source's) and sweep expired peers."""
    policy = spec.revocation
    if policy.deny_list_file:
        reader, origin = file_reader(policy.deny_list_file), policy.deny_list_file
    else:
        reader, origin = source.deny_list, f"deny-list of {spec.cluster} ({source.describe()})"
    watch = RevocationWatch(guard, reader, poll_s=policy.deny_list_poll_s, sweep_s=policy.expiry_sweep_s, origin=origin)
    scheduler.add_plugin(watch, name=RevocationWatch.name)


async def wait_for_scheduler(address: str, security: Security, timeout: float, cluster: str) -> None:
    """Return once ``address`` answers over TLS as ``cluster``'s scheduler; bounded by ``timeout`` seconds."""
    deadline = monotonic() + timeout
    last_error: Exception | None = None
    while True:
        remaining = deadline - monotonic()
        if remaining <= 0:
            raise DaskfleetError(
                f"scheduler {address} unreachable after {timeout:g}s (last error: {last_error})",
                ExitCode.SCHEDULER_UNREACHABLE,
            )
        try:
            comm = await connect(address, timeout=min(remaining, 5.0), **security.get_connection_args("worker"))
        except (OSError, TimeoutError) as exc:
            last_error = exc
            await asyncio.sleep(min(0.5, max(deadline - monotonic(), 0)))
        else:
            peer = Peer.from_peercert(comm.extra_info.get("peercert"), address)
            comm.abort()
            if (peer.cluster, peer.role) != (cluster, "scheduler"):
                raise DaskfleetError(
                    f"{address} presented a {peer.role or 'role-less'} certificate for cluster {peer.cluster!r}, "
                    f"not the scheduler of {cluster!r}",
                    ExitCode.CERT_ROLE_MISMATCH,
                )
            return


def audit_log_path(spec: NodeSpec, runtime_dir: Path) -> Path:
    """The spec's audit log, else systemd's LogsDirectory (kept across restarts), else the runtime dir."""
    if spec.audit_log:
        return Path(spec.audit_log)
    return Path(os.environ.get("LOGS_DIRECTORY") or runtime_dir) / "audit.jsonl"


def spill_directory(runtime_dir: Path) -> str:
    """Where a worker spills: systemd's CacheDirectory on instances (disk, not the in-memory /run)."""
    return os.environ.get("CACHE_DIRECTORY") or str(runtime_dir / "work")


async def drain_when_leaving(source: NodeSource, worker: Worker, interval: float = LEAVING_POLL_SECONDS) -> str | None:
    """Poll the source; when the platform takes the node away, retire the worker (its data moves) and say why."""
    while worker.status.name in ("init", "running", "paused"):
        reason = await asyncio.to_thread(source.leaving)
        if reason:
            logger.warning("node is leaving (%s): retiring the worker so its data moves first", reason)
            try:
                await worker.close_gracefully(reason=f"leaving: {reason}")
            except OSError as exc:  # the scheduler is gone too: nothing left to hand the data to
                logger.warning("could not retire through the scheduler (%s); closing", exc)
                await worker.close(reason=f"leaving: {reason}")
            try:
                await asyncio.to_thread(source.left)
            except DaskfleetError as exc:  # drained already; the platform's own timeout lets the node go
                logger.warning("drained, but could not say so: %s", exc)
            return reason
        try:  # the next poll, or at once when the worker has stopped
            await asyncio.wait_for(worker.finished(), interval)
        except TimeoutError:
            pass
    return None


@dataclass(frozen=True)
class WorkerMemory:
    """A worker's memory limit in bytes (one figure for the worker and its watcher), and distributed's terminate rule."""

    limit: int | None
    policy: TerminatePolicy
    #: The agent's run history, where a watcher records a run it ended.
    history: Path | None = None

    def record(self, worker: Worker, node: PreparedNode) -> WatchedWorker:
        """What a watcher reads in the worker's runtime directory once it has registered."""
        return WatchedWorker(
            pid=os.getpid(), name=str(worker.name), address=worker.address, scheduler_address=str(node.spec.scheduler_address),
            memory_limit=self.limit, terminate=self.policy.fraction, interval_s=self.policy.interval_s,
            tls=(str(node.tls.ca), str(node.tls.cert), str(node.tls.key)),
            history=None if self.history is None else str(self.history),
        )


async def run_worker(node: PreparedNode, source: NodeSource, own_watcher: bool = True, history: Path | None = None) -> Outcome:
    """Run the worker; unless its supervisor watches its memory (``own_watcher`` False), under the agent's own watcher."""
    spec = node.spec
    size = spec_worker_size(spec.nthreads, spec.memory_limit)  # as LocalCluster(n_workers=1) sizes its worker
    nthreads = size.nthreads
    memory = WorkerMemory(worker_memory_limit(size.memory_limit, nthreads, cgroup_memory_limit()),
                          TerminatePolicy.from_config(), history)
    watched = own_watcher and bool(memory.limit) and memory.policy.fraction is not None
    watcher = start_watcher(node.runtime_dir) if watched else None
    prefer_for_oom_kill()  # after the watcher started: it keeps the unit's own, low score
    try:
        return await _serve_worker(node, source, nthreads, memory)
    finally:
        if watcher is not None:
            stop_watcher(watcher)


async def _serve_worker(node: PreparedNode, source: NodeSource, nthreads: int, memory: WorkerMemory) -> Outcome:
    spec = node.spec
    security = node_security()
    await wait_for_scheduler(spec.scheduler_address, security, spec.connect_timeout_s, spec.cluster)
    contact = f"tls://{spec.contact_host}:{spec.worker_port}" if spec.contact_host else None
    kind = list(source.instance_kind())
    env_error = source.environment_error()
    logger.info("worker of %s: %s", spec.cluster,
                WorkerSize(nthreads, memory.limit).describe() if memory.limit else f"{nthreads} thread(s), no memory limit")
    worker = Worker(
        spec.scheduler_address,
        host=spec.listen_host,
        port=spec.worker_port,
        contact_address=contact,
        name=spec.name or socket.gethostname(),
        nthreads=nthreads,
        memory_limit=memory.limit,
        security=security,
        death_timeout=spec.connect_timeout_s,
        startup_information={
            FINGERPRINT_KEY: lambda _worker: node.fingerprint, INSTANCE_KEY: lambda _worker: kind,
            ENV_ERROR_KEY: lambda _worker: env_error,
        },
        dashboard=False,
        local_directory=spill_directory(node.runtime_dir),
    )
    switching = _serve_environment_switch(worker)
    WorkerGuard(WorkerGatekeeper(spec.cluster)).install(worker)
    reasons = CloseReasons(worker)
    try:
        await worker
    except RuntimeError as exc:
        refusal = _registration_refusal(exc.__cause__)
        if refusal is None:
            raise
        raise DaskfleetError(refusal, ExitCode.REFUSED_BY_SCHEDULER) from None
    except TimeoutError:
        raise DaskfleetError(
            f"scheduler {spec.scheduler_address} did not accept the worker within {spec.connect_timeout_s:g}s",
            ExitCode.SCHEDULER_UNREACHABLE,
        ) from None
    pki.write_private(node.runtime_dir / WORKER_RECORD_FILE, memory.record(worker, node).to_json())  # its watcher starts
    stopping = asyncio.Event()

    def on_signal() -> None:
        stopping.set()
        asyncio.ensure_future(worker.close_gracefully(reason="signal"))

    _install_signal_handlers(on_signal)
    drain = asyncio.create_task(drain_when_leaving(source, worker))
    renewal = node.renewal(worker, scheduler_hand_over(worker))
    await worker.finished()
    if renewal is not None:
        renewal.stop()
        if renewal.failure:
            drain.cancel()
            raise DaskfleetError(renewal.failure, ExitCode.CONFIG)
    if switching.is_set():
        drain.cancel()
        return Outcome(ExitCode.ENVIRONMENT_SWITCH, "left to run the newly published environment: its data moved; "
                       "restarting into it")
    if stopping.is_set() or reasons.restart.is_set() or reasons.retired.is_set():
        drain.cancel()
    elif drained := await drain:
        return Outcome(ExitCode.DRAINED, f"drained: {drained}; its data moved; stopping")
    return worker_exit(stopping.is_set(), reasons, spec.scheduler_address)


def _serve_environment_switch(worker: Worker) -> asyncio.Event:
    """The scheduler's call to switch environments: retire (so data moves), then exit to restart into it."""
    switching = asyncio.Event()

    async def switch_environment() -> str:
        switching.set()
        asyncio.ensure_future(worker.close_gracefully(reason="daskfleet: environment switch"))
        return "OK"

    worker.handlers[SWITCH_OP] = switch_environment
    return switching


def worker_exit(stopping: bool, reasons: CloseReasons, scheduler: str) -> Outcome:
    """Why a worker that had joined has stopped, as its exit code and line."""
    if stopping:
        return Outcome(ExitCode.OK, "the worker stopped on request (its data moved first)")
    if reasons.restart.is_set():
        return Outcome(ExitCode.RESTART_REQUESTED, "the scheduler restarts this worker (client.restart()): restarting")
    if reasons.retired.is_set():
        return Outcome(ExitCode.RETIRED, "retired by the scheduler: its data moved; stopping")
    return Outcome(ExitCode.SCHEDULER_LOST, f"lost the scheduler {scheduler}: restarting to rejoin it")


def _registration_refusal(exc: BaseException | None) -> str | None:
    """The scheduler's message when ``exc`` is distributed's "Unexpected response from register"."""
    marker = "Unexpected response from register: "
    if not isinstance(exc, ValueError) or marker not in str(exc):
        return None
    try:
        response = ast.literal_eval(str(exc).partition(marker)[2])
    except (ValueError, SyntaxError):
        return str(exc)
    return str(response.get("message", response)) if isinstance(response, dict) else str(exc)


def run_node(
    role: str,
    source: NodeSource,
    runtime_dir: Path | None = None,
    worker_backend: Callable[[], WorkerBackend] | None = None,
    *,
    memory_watcher: bool = True,
    history: Path | None = None,
) -> Outcome:
    """Prepare and run one node until it stops; DaskfleetError carries a failure's exit code.

    ``worker_backend`` makes what a scheduler scales its workers with; the caller picks it for the platform.
    A worker runs under the agent's own memory watcher unless ``memory_watcher`` is False (its supervisor
    watches); ``history`` is the run history a watcher records a run it ended in.
    """
    node = prepare_node(role, source, runtime_dir or default_runtime_dir(role))
    if role == "scheduler":
        return asyncio.run(run_scheduler(node, source, worker_backend))
    return asyncio.run(run_worker(node, source, memory_watcher, history))


def run_supervised(
    role: str, source: NodeSource, history: RunHistory | None, run: Callable[[], Outcome],
) -> Outcome:
    """``run`` under the supervision semantics: wait out the backoff or give up first, record how the run ended,
    and let the platform know when the node stops for good (``NodeSource.stopped``).

    Without a ``history`` (a node run by hand) there is no backoff and no give-up.
    """
    verdict = before_start(history.runs(), time(), BACKOFF) if history else None
    if verdict is not None and verdict.gave_up:
        outcome = Outcome(ExitCode.GAVE_UP, f"error: {verdict.gave_up}")
    else:
        if verdict is not None and verdict.wait_s:
            logger.warning("starting after %d failure(s) in a row (the last: %s): waiting %.1fs first",
                           verdict.failures, verdict.last, verdict.wait_s)
            sleep(verdict.wait_s)
        outcome = _run_recorded(history, run)
    if outcome.for_good:
        source.stopped(role, outcome)
    return outcome


def _run_recorded(history: RunHistory | None, run: Callable[[], Outcome]) -> Outcome:
    if history is not None:
        history.started(time())
    try:
        outcome = run()
    except DaskfleetError as error:
        outcome = Outcome(error.exit_code, f"error: {error.message}")
    except Exception as exc:  # a bug: recorded as a failure, then its traceback
        if history is not None:
            history.ended(Outcome(1, f"error: crashed: {type(exc).__name__}: {exc}"), time())
        raise
    if history is not None:
        history.ended(outcome, time())
    return outcome
