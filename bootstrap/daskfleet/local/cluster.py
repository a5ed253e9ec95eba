"""A whole secured cluster on one machine: the embedded default (``daskfleet local up``).

Nodes run through the same node-agent code path the instances use (``daskfleet node <role>
--source dir:<node directory>``), bound to 127.0.0.1, under the cluster's supervisor
(``daskfleet.local.supervisor``), which restarts them as systemd does on instances. The scheduler
sizes its workers itself (``daskfleet.local.workers``), from worker slots issued here:
``--workers N`` keeps N while the cluster is in use, ``--adapt MIN:MAX`` follows the load. Every
slot is sized as LocalCluster sizes its workers: the most workers that may run at once share the
machine's cores and memory (``daskfleet.node.sizing``). The scheduler keeps the address of its
first start, so a restarted one is found where it was. Several local clusters run side by side
(``--cluster NAME``), each with its own state directory, CA (kept there), certificates naming it,
and ports; the local user holds an admin certificate of each.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from ..conventions import ADMIN_ROLE, CLIENT_CERT_VALIDITY_HOURS
from ..environments.policy import RolloutPolicy
from ..environments.records import current_fingerprint
from ..errors import DaskfleetError, ExitCode
from ..node.sources import CA_FILE, CERT_FILE, KEY_FILE, SCHEDULER_INFO_FILE, SPEC_FILE, TLS_DIR
from ..node.sizing import WorkerSize, local_worker_size
from ..conventions import DENY_LIST_FILE
from ..node.spec import NodeSpec, RevocationPolicy, dump_spec
from ..scaling.defaults import LOCAL_INTERVAL_S
from ..scaling.policy import ScalingSpec
from ..trust import pki
from ..trust.tls import client_security, verify_scheduler_identity
from ..usage.policy import UsagePolicy
from .vendor import write_node_vendor
from .state import (
    LOCAL_CLUSTER, SCHEDULER, STATE_FILE, SUPERVISION_DIR, SUPERVISOR_LOG, LocalCluster, NodeProcess, client_dir,
    client_material, command_flags, load_ca, locked, node_python, save_ca,
)

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
#: Worker slots are node directories nodes/worker-0, worker-1, ...: one per worker that may run at once.
WORKER_SLOT_PREFIX = "worker-"


#: The local scheduler reads its published environment from a file: it may look often.
LOCAL_ROLLOUT = RolloutPolicy(poll_s=0.2, switch_timeout_s=START_TIMEOUT_S * 2)
#: Its deny-list too (``<state>/deny-list.json``, written by ``daskfleet revoke local USER``): a revoked user's
#: connections close within about a second.
LOCAL_REVOCATION_POLL_S = 1.0
LOCAL_EXPIRY_SWEEP_S = 1.0


def local_revocation(state_dir: Path) -> RevocationPolicy:
    return RevocationPolicy(deny_list_poll_s=LOCAL_REVOCATION_POLL_S, expiry_sweep_s=LOCAL_EXPIRY_SWEEP_S,
                            deny_list_file=str(Path(state_dir) / DENY_LIST_FILE))


def local_scaling(
    min_workers: int, max_workers: int, *, cap: int | None = None, interval_s: float = LOCAL_INTERVAL_S, **policy
) -> ScalingSpec:
    """The scaling section of a local scheduler: the same policy as on AWS, with a shorter interval and launch timeout."""
    return ScalingSpec(
        min_workers=min_workers, max_workers=max_workers, cluster_cap=cap, interval_s=interval_s,
        launch_timeout_s=START_TIMEOUT_S, **policy,
    )


def write_node_dir(directory: Path, spec: NodeSpec, ca: pki.IssuedCert, cert: pki.IssuedCert) -> None:
    """A node directory as DirectorySource reads it."""
    pki.ensure_private_dir(directory.parent)
    pki.ensure_private_dir(directory)
    pki.write_private(directory / SPEC_FILE, dump_spec(spec))
    tls = directory / TLS_DIR
    pki.write_private(tls / CA_FILE, ca.cert_pem)
    pki.write_private(tls / CERT_FILE, cert.cert_pem)
    pki.write_private(tls / KEY_FILE, cert.key_pem)


def write_vended_node_dir(
    directory: Path, spec: NodeSpec, ca: pki.IssuedCert, state_dir: Path, cert_seconds: float | None = None,
) -> None:
    """A node directory whose certificate the local vendor signs at each start and renews (``cert_seconds``; None:
    conventions.NODE_CERT_VALIDITY_HOURS): its spec, the CA and where the vendor is; no key or certificate."""
    pki.ensure_private_dir(directory.parent)
    pki.ensure_private_dir(directory)
    pki.write_private(directory / TLS_DIR / CA_FILE, ca.cert_pem)
    write_node_vendor(directory, state_dir, spec.cluster, cert_seconds)
    pki.write_private(directory / SPEC_FILE, dump_spec(spec))  # last: a slot with a spec is complete (local.workers)


def node_command(state_dir: Path, name: str, role: str, *extra: str) -> list[str]:
    """``daskfleet node <role>`` for the node directory ``name``, in the cluster's environment (``node_python``)."""
    return [
        node_python(state_dir), "-m", "daskfleet", "node", role, "--source", f"dir:{state_dir / 'nodes' / name}",
        "--runtime-dir", str(node_runtime_dir(state_dir, name)),
        "--restart-history", str(state_dir / SUPERVISION_DIR / f"{name}.json"), *extra,
    ]


def node_log(state_dir: Path, name: str) -> Path:
    return pki.ensure_private_dir(state_dir / "logs") / f"{name}.log"


def node_runtime_dir(state_dir: Path, name: str) -> Path:
    """Node ``name``'s runtime directory (certificates, config, its records), fresh at each start."""
    return state_dir / "run" / name


def node_launch(state_dir: Path, name: str, role: str, *extra: str) -> tuple[list[str], dict[str, str] | None]:
    """The command line and environment (None: this process's) node ``name`` starts with, built anew each time.

    A worker starts with the environment distributed's nanny would give it, so its agent need not
    re-execute itself to get it (``daskfleet.node.prespawn``; it still would if its configuration differs).
    """
    env = None
    if role == "worker":
        from ..node.prespawn import worker_environment  # noqa: PLC0415  (dask's configuration, for workers only)

        env = {**os.environ, **worker_environment()}
    return node_command(state_dir, name, role, *extra), env


def fresh_runtime_dir(state_dir: Path, name: str) -> None:
    """Remove what an earlier run of node ``name`` left in its runtime directory."""
    run_dir = node_runtime_dir(state_dir, name)
    if run_dir.exists():
        shutil.rmtree(run_dir)


def popen_node(state_dir: Path, name: str, role: str, *extra: str) -> subprocess.Popen:
    """Start node ``name`` in the background (a fresh runtime directory; its log is appended to)."""
    command, env = node_launch(state_dir, name, role, *extra)
    fresh_runtime_dir(state_dir, name)
    with open(node_log(state_dir, name), "ab") as log:
        return subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def start_supervisor(state_dir: Path) -> NodeProcess:
    """The cluster's supervisor process (``daskfleet local supervise``), in this environment."""
    log_path = pki.ensure_private_dir(state_dir / "logs") / SUPERVISOR_LOG
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daskfleet", "local", "supervise", "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return NodeProcess("supervisor", "supervisor", proc.pid, psutil.Process(proc.pid).create_time(), str(log_path),
                       state="running")


def _tail(path: str, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _wait_for(what: str, state_dir: Path, name: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> None:
    """Until ``ready()``; fail early when the node failed for good or its supervisor is gone."""
    deadline = time.monotonic() + timeout
    while not ready():
        check_alive(state_dir, name)
        if time.monotonic() > deadline:
            log = state_dir / "logs" / f"{name}.log"
            raise DaskfleetError(f"{name}: no {what} within {timeout:g}s; see {log}", ExitCode.LOCAL_FAILURE)
        time.sleep(0.1)


def check_alive(state_dir: Path, name: str) -> None:
    """Raise when node ``name`` stopped for good, or the supervisor that would restart it is gone."""
    cluster = LocalCluster.load(state_dir)
    record = cluster.node(name) if cluster else None
    if record is not None and record.state in ("failed", "gave up", "stopped", "retired"):
        raise DaskfleetError(
            f"{name} {record.state} (exit {record.exit_code}); last lines of {record.log}:\n{_tail(record.log)}",
            ExitCode.LOCAL_FAILURE,
        )
    if cluster is None or cluster.supervisor is None or cluster.supervisor.process() is None:
        log = state_dir / "logs" / SUPERVISOR_LOG
        raise DaskfleetError(f"the supervisor of {state_dir} exited; last lines of {log}:\n{_tail(str(log))}",
                             ExitCode.LOCAL_FAILURE)


def issue_local_pki(
    state_dir: Path, user: str, ca: pki.IssuedCert | None = None, cluster: str = LOCAL_CLUSTER,
) -> pki.IssuedCert:
    """The admin's certificate for the user (12 h: ``daskfleet.connect`` and ``daskfleet login local`` renew it
    through the local vendor), from ``ca``, else the CA kept in ``state_dir``, else a fresh one; the CA is kept there
    (the local vendor signs with it: each node's certificate at its start, ``local issue``'s member certificates)."""
    ca = ca or load_ca(state_dir) or pki.create_ca(cluster)
    save_ca(state_dir, ca)
    client = pki.issue_certificate(ca, cluster, ADMIN_ROLE, user=user, valid_hours=CLIENT_CERT_VALIDITY_HOURS)
    directory = client_dir(state_dir)
    pki.write_private(directory / CA_FILE, ca.cert_pem)
    pki.write_private(directory / CERT_FILE, client.cert_pem)
    pki.write_private(directory / KEY_FILE, client.key_pem)
    return ca


def up(
    state_dir: Path,
    workers: int = 2,
    *,
    scaling: ScalingSpec | None = None,
    smoke: bool = True,
    client_version_policy: str = "refuse",
    ca: pki.IssuedCert | None = None,
    usage: UsagePolicy | None = None,
    cluster: str = LOCAL_CLUSTER,
    threads: int | None = None,
    memory_limit: str | None = None,
    node_cert_seconds: float | None = None,
) -> LocalCluster:
    """Start cluster ``cluster``'s scheduler that keeps ``workers`` workers (or follows ``scaling``); on any failure stop
    what was started.

    Each worker gets ``threads`` and ``memory_limit`` (distributed's form); unset, the machine is split among the
    most workers that may run at once, as LocalCluster splits it (``daskfleet.node.sizing``).
    Node certificates last ``node_cert_seconds`` (tests; None: conventions.NODE_CERT_VALIDITY_HOURS) and are renewed
    by the nodes themselves.
    """
    if workers < 0:
        raise DaskfleetError(f"--workers: must be 0 or more, got {workers}", ExitCode.CONFIG)
    scaling = scaling or local_scaling(workers, workers)
    size = worker_size(scaling, threads, memory_limit)
    pki.ensure_private_dir(state_dir)
    existing = LocalCluster.load(state_dir)
    if existing and existing.running():
        raise DaskfleetError(
            f"local cluster {existing.cluster!r} already runs from {state_dir} at {existing.address}; "
            f"`daskfleet local down{command_flags(state_dir, existing.cluster)}` stops it",
            ExitCode.LOCAL_FAILURE,
        )
    user = getpass.getuser()
    cap = "" if scaling.cluster_cap is None else str(scaling.cluster_cap)
    record = LocalCluster(
        state_dir=str(state_dir), cluster=cluster, user=user, adapt=f"{scaling.min_workers}:{scaling.max_workers}",
        cap=cap, worker_threads=size.nthreads, worker_memory_limit=size.memory_limit,
    )
    try:
        _bring_up(record, state_dir, scaling, size, user, smoke, client_version_policy, ca, usage or UsagePolicy(),
                  node_cert_seconds)
    except BaseException:
        with contextlib.suppress(DaskfleetError):
            down(state_dir)
        raise
    return LocalCluster.load(state_dir) or record


def worker_size(scaling: ScalingSpec, threads: int | None, memory_limit: str | None) -> WorkerSize:
    """Each worker's size: the most workers that may run at once fill the machine; bad values name their flag."""
    if threads is not None and not 1 <= threads <= 1024:
        raise DaskfleetError(f"--threads: {threads} is not a number of threads per worker (accepted: 1 to 1024)",
                             ExitCode.CONFIG)
    try:
        return local_worker_size(scaling.hard_cap, threads, memory_limit)
    except ValueError as exc:
        raise DaskfleetError(f"--memory-limit: {exc}", ExitCode.CONFIG) from None


def _bring_up(
    cluster: LocalCluster, state_dir: Path, scaling: ScalingSpec, size: WorkerSize, user: str, smoke: bool, policy: str,
    ca: pki.IssuedCert | None, usage: UsagePolicy, cert_seconds: float | None = None,
) -> None:
    slots = scaling.hard_cap
    ca = issue_local_pki(state_dir, user, ca, cluster.cluster)
    fingerprint = current_fingerprint()
    scheduler_spec = NodeSpec(
        cluster=cluster.cluster, role="scheduler", listen_host=HOST, scheduler_port=0, dashboard_port=0,
        expected_fingerprint=fingerprint, audit_log=str(state_dir / "audit.jsonl"), client_version_policy=policy,
        usage=usage,
        scaling=scaling,
        rollout=LOCAL_ROLLOUT,
        revocation=local_revocation(state_dir),
    )
    nodes = state_dir / "nodes"
    # An earlier cluster's certificates, runtime files and run histories.
    for stale in (nodes, state_dir / "run", state_dir / SUPERVISION_DIR):
        if stale.exists():
            shutil.rmtree(stale)
    write_vended_node_dir(nodes / SCHEDULER, scheduler_spec, ca, state_dir, cert_seconds)
    cluster.nodes = [NodeProcess(SCHEDULER, "scheduler", 0, 0.0, str(node_log(state_dir, SCHEDULER)))]
    with locked(state_dir):
        cluster.save()
    supervisor = start_supervisor(state_dir)
    with LocalCluster.update(state_dir) as recorded:
        recorded.supervisor = supervisor
    info_path = node_runtime_dir(state_dir, SCHEDULER) / SCHEDULER_INFO_FILE
    _wait_for("the scheduler listening", state_dir, SCHEDULER, info_path.exists)
    info = json.loads(info_path.read_text())
    # A restarted scheduler listens where the first one did: workers and clients find it again.
    ports = {"scheduler_port": int(info["address"].rsplit(":", 1)[1]),
             "dashboard_port": int(info["dashboard"].split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])}
    pki.write_private(nodes / SCHEDULER / SPEC_FILE, dump_spec(scheduler_spec.model_copy(update=ports)))
    with LocalCluster.update(state_dir) as recorded:
        recorded.address, recorded.dashboard = info["address"], info["dashboard"]
    for index in range(slots):  # the scheduler's scaler starts workers from these as soon as they exist
        name = f"{WORKER_SLOT_PREFIX}{index}"
        spec = NodeSpec(
            cluster=cluster.cluster, role="worker", scheduler_address=info["address"], listen_host=HOST,
            worker_port=0, name=name, nthreads=size.nthreads, memory_limit=size.memory_limit,
            expected_fingerprint=fingerprint, connect_timeout_s=START_TIMEOUT_S,
        )
        write_vended_node_dir(nodes / name, spec, ca, state_dir, cert_seconds)
    _wait_until_registered(
        info["address"], state_dir, min(scaling.min_workers, slots), smoke and slots > 0, cluster.cluster)


def _wait_until_registered(address: str, state_dir: Path, workers: int, smoke: bool, cluster: str) -> None:
    from distributed import Client  # noqa: PLC0415  (imported only when a cluster starts)

    security = client_security(client_material(state_dir), cluster)
    with Client(address, security=security, timeout=START_TIMEOUT_S) as client:
        verify_scheduler_identity(client, cluster)
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(client.scheduler_info(n_workers=-1)["workers"]) < workers:
            check_alive(state_dir, SCHEDULER)
            if time.monotonic() > deadline:
                logs = "\n".join(f"{path.name}: {_tail(str(path), 2)}" for path in sorted((state_dir / "logs").glob("worker-*.log")))
                raise DaskfleetError(
                    f"{workers} worker(s) did not register within {START_TIMEOUT_S:g}s; worker logs:\n{logs}",
                    ExitCode.LOCAL_FAILURE,
                )
            time.sleep(0.1)
        if smoke:  # with no worker yet, this also proves the scheduler starts one
            squares = client.map(pow, range(10), [2] * 10)
            total = client.submit(sum, squares).result(timeout=START_TIMEOUT_S)
            if total != 285:
                raise DaskfleetError(f"smoke computation returned {total}, expected 285", ExitCode.LOCAL_FAILURE)


def _stop(cluster: LocalCluster) -> list[str]:
    """Stop every process of ``cluster``, workers first so they leave while the scheduler is up.

    Returns the names of any process that survived SIGKILL.
    """
    stuck: list[str] = []
    for phase in (("worker",), ("scheduler",)):
        live = [(node, proc) for node in cluster.nodes if node.role in phase and (proc := node.process()) is not None]
        survivors = end_processes([proc for _, proc in live])
        stuck += [node.name for node, proc in live if proc in survivors]
    return stuck


def end_processes(procs: list[psutil.Process], timeout: float = STOP_TIMEOUT_S) -> list[psutil.Process]:
    """SIGTERM each one's process group, SIGKILL what outlives ``timeout``; returns those that survived both."""
    for proc in procs:
        signal_group(proc, signal.SIGTERM)
    alive = wait_gone(procs, timeout)
    for proc in alive:
        signal_group(proc, signal.SIGKILL)
    return wait_gone(alive, 5)


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each process has ended (a zombie counts: its parent, the supervisor, reaps it later)."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        alive = [proc for proc in alive if _running(proc)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return alive


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def signal_group(proc: psutil.Process, sig: int) -> None:
    """Signal the node's process group (it leads its own session), or the process alone if that fails."""
    try:
        os.killpg(proc.pid, sig)  # the node is its own session leader (start_new_session)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def down(state_dir: Path) -> LocalCluster | None:
    """Stop the supervisor and every node it started from ``state_dir``; None when nothing was started."""
    with LocalCluster.update(state_dir) as cluster:
        if cluster is None:
            return None
        cluster.stopping = True  # from now on the scaler asks for nothing and the supervisor restarts nothing
    stuck = _stop_supervisor(cluster)
    latest = LocalCluster.load(state_dir) or cluster
    stuck += _stop(latest)  # whatever a supervisor that died (or was killed) left running
    stuck += _stop_forwarder(latest)
    if stuck:
        raise DaskfleetError(f"could not stop: {', '.join(sorted(set(stuck)))}", ExitCode.LOCAL_FAILURE)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return latest


def start_dashboard_forwarder(state_dir: Path) -> str:
    """Start ``daskfleet dashboard`` for the cluster in ``state_dir`` in the background (the admin's certificate),
    record it (``local down`` stops it) and return its URL."""
    from ..client.dashboard import record_path  # noqa: PLC0415

    cluster = LocalCluster.load(state_dir)
    record = record_path(cluster.cluster, state_dir)
    record.unlink(missing_ok=True)
    log_path = pki.ensure_private_dir(state_dir / "logs") / "dashboard.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daskfleet", "dashboard", cluster.cluster, "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not record.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                end_processes([psutil.Process(proc.pid)])
            raise DaskfleetError(f"the dashboard forwarder did not start; last lines of {log_path}:\n"
                                 f"{_tail(str(log_path))}", ExitCode.LOCAL_FAILURE)
        time.sleep(0.1)
    url = json.loads(record.read_text())["url"] + "/status"
    with LocalCluster.update(state_dir) as recorded:
        recorded.forwarder = NodeProcess("dashboard", "forwarder", proc.pid, psutil.Process(proc.pid).create_time(),
                                         str(log_path), state="running")
        recorded.dashboard_url = url
    return url


def _stop_forwarder(cluster: LocalCluster) -> list[str]:
    proc = cluster.forwarder.process() if cluster.forwarder is not None else None
    return ["dashboard forwarder"] if proc is not None and end_processes([proc]) else []


def _stop_supervisor(cluster: LocalCluster) -> list[str]:
    """The supervisor stops its nodes (workers first) and exits; it is ended if it takes longer than that may."""
    proc = cluster.supervisor.process() if cluster.supervisor is not None else None
    if proc is None:
        return []
    return ["supervisor"] if end_processes([proc], 2 * (STOP_TIMEOUT_S + 5) + 5) else []
