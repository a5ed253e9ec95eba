"""A whole secured cluster on one machine: the embedded default (``daskfleet local up``).

Nodes are started as background processes through the same node-agent code path the
instances use (``daskfleet node <role> --source dir:<node directory>``), bound to 127.0.0.1.
"""

from __future__ import annotations

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

from ..environments.records import current_fingerprint
from ..errors import DaskfleetError, ExitCode
from ..node.sources import CA_FILE, CERT_FILE, KEY_FILE, SCHEDULER_INFO_FILE, SPEC_FILE, TLS_DIR
from ..node.spec import NodeSpec, dump_spec
from ..security import pki
from ..security.tls import client_security, verify_scheduler_identity
from ..usage.policy import UsagePolicy
from .state import LOCAL_CLUSTER, STATE_FILE, LocalCluster, NodeProcess, client_dir, client_material

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def write_node_dir(directory: Path, spec: NodeSpec, ca: pki.IssuedCert, cert: pki.IssuedCert) -> None:
    """A node directory as DirectorySource reads it."""
    pki.ensure_private_dir(directory.parent)
    pki.ensure_private_dir(directory)
    pki.write_private(directory / SPEC_FILE, dump_spec(spec))
    tls = directory / TLS_DIR
    pki.write_private(tls / CA_FILE, ca.cert_pem)
    pki.write_private(tls / CERT_FILE, cert.cert_pem)
    pki.write_private(tls / KEY_FILE, cert.key_pem)


def _start_node(state_dir: Path, name: str, role: str) -> NodeProcess:
    node_dir = state_dir / "nodes" / name
    run_dir = state_dir / "run" / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    log_path = pki.ensure_private_dir(state_dir / "logs") / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daskfleet", "node", role, "--source", f"dir:{node_dir}", "--runtime-dir", str(run_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return NodeProcess(name, role, proc.pid, psutil.Process(proc.pid).create_time(), str(log_path))


def _tail(path: str, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _wait_for(what: str, node: NodeProcess, ready: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if node.process() is None:
            raise DaskfleetError(f"{node.name} exited before {what}; last lines of {node.log}:\n{_tail(node.log)}", ExitCode.LOCAL_FAILURE)
        if time.monotonic() > deadline:
            raise DaskfleetError(f"{node.name}: no {what} within {timeout:g}s; see {node.log}", ExitCode.LOCAL_FAILURE)
        time.sleep(0.1)


def issue_local_pki(
    state_dir: Path, workers: int, user: str, ca: pki.IssuedCert | None = None
) -> tuple[pki.IssuedCert, dict[str, pki.IssuedCert]]:
    """One certificate per node and for the user, from ``ca`` or a fresh CA whose key is never stored."""
    ca = ca or pki.create_ca(LOCAL_CLUSTER)
    certs = {"scheduler": pki.issue_certificate(ca, LOCAL_CLUSTER, "scheduler", dns_names=("localhost",), ip_addresses=(HOST,))}
    for index in range(workers):
        certs[f"worker-{index}"] = pki.issue_certificate(ca, LOCAL_CLUSTER, "worker", ip_addresses=(HOST,))
    client = pki.issue_certificate(ca, LOCAL_CLUSTER, "client", user=user)
    directory = client_dir(state_dir)
    pki.write_private(directory / CA_FILE, ca.cert_pem)
    pki.write_private(directory / CERT_FILE, client.cert_pem)
    pki.write_private(directory / KEY_FILE, client.key_pem)
    return ca, certs


def up(
    state_dir: Path,
    workers: int = 2,
    *,
    smoke: bool = True,
    client_version_policy: str = "refuse",
    ca: pki.IssuedCert | None = None,
    usage: UsagePolicy | None = None,
) -> LocalCluster:
    """Start a scheduler and ``workers`` workers; on any failure stop what was started."""
    if workers < 0:
        raise DaskfleetError(f"--workers: must be 0 or more, got {workers}", ExitCode.CONFIG)
    pki.ensure_private_dir(state_dir)
    existing = LocalCluster.load(state_dir)
    if existing and existing.running():
        raise DaskfleetError(
            f"a local cluster already runs from {state_dir} at {existing.address}; `daskfleet local down` stops it",
            ExitCode.LOCAL_FAILURE,
        )
    user = getpass.getuser()
    cluster = LocalCluster(state_dir=str(state_dir), user=user)
    try:
        _bring_up(cluster, state_dir, workers, user, smoke, client_version_policy, ca, usage or UsagePolicy())
    except BaseException:
        _stop(cluster)
        raise
    return cluster


def _bring_up(
    cluster: LocalCluster, state_dir: Path, workers: int, user: str, smoke: bool, policy: str, ca: pki.IssuedCert | None,
    usage: UsagePolicy,
) -> None:
    ca, certs = issue_local_pki(state_dir, workers, user, ca)
    fingerprint = current_fingerprint()
    scheduler_spec = NodeSpec(
        cluster=LOCAL_CLUSTER, role="scheduler", listen_host=HOST, scheduler_port=0, dashboard_port=0,
        expected_fingerprint=fingerprint, audit_log=str(state_dir / "audit.jsonl"), client_version_policy=policy,
        usage=usage,
    )
    write_node_dir(state_dir / "nodes" / "scheduler", scheduler_spec, ca, certs["scheduler"])
    scheduler = _start_node(state_dir, "scheduler", "scheduler")
    cluster.nodes.append(scheduler)
    cluster.save()
    info_path = state_dir / "run" / "scheduler" / SCHEDULER_INFO_FILE
    _wait_for("the scheduler listening", scheduler, info_path.exists)
    info = json.loads(info_path.read_text())
    cluster.address, cluster.dashboard = info["address"], info["dashboard"]
    cluster.save()
    for index in range(workers):
        name = f"worker-{index}"
        spec = NodeSpec(
            cluster=LOCAL_CLUSTER, role="worker", scheduler_address=cluster.address, listen_host=HOST,
            worker_port=0, name=name, nthreads=1, expected_fingerprint=fingerprint, connect_timeout_s=START_TIMEOUT_S,
        )
        write_node_dir(state_dir / "nodes" / name, spec, ca, certs[name])
        cluster.nodes.append(_start_node(state_dir, name, "worker"))
        cluster.save()
    _wait_until_registered(cluster, state_dir, workers, smoke)
    cluster.save()


def _wait_until_registered(cluster: LocalCluster, state_dir: Path, workers: int, smoke: bool) -> None:
    from distributed import Client  # noqa: PLC0415  (imported only when a cluster starts)

    security = client_security(client_material(state_dir), LOCAL_CLUSTER)
    with Client(cluster.address, security=security, timeout=START_TIMEOUT_S) as client:
        verify_scheduler_identity(client, LOCAL_CLUSTER)
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(client.scheduler_info(n_workers=-1)["workers"]) < workers:
            for node in cluster.nodes:
                if node.process() is None:
                    raise DaskfleetError(f"{node.name} exited; last lines of {node.log}:\n{_tail(node.log)}", ExitCode.LOCAL_FAILURE)
            if time.monotonic() > deadline:
                raise DaskfleetError(f"workers did not register within {START_TIMEOUT_S:g}s", ExitCode.LOCAL_FAILURE)
            time.sleep(0.1)
        if smoke and workers:
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
        for _, proc in live:
            _signal_group(proc, signal.SIGTERM)
        _, alive = psutil.wait_procs([proc for _, proc in live], timeout=STOP_TIMEOUT_S)
        for proc in alive:
            _signal_group(proc, signal.SIGKILL)
        _, survivors = psutil.wait_procs(alive, timeout=5)
        stuck += [node.name for node, proc in live if proc in survivors]
    return stuck


def _signal_group(proc: psutil.Process, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the node is its own session leader (start_new_session)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def down(state_dir: Path) -> LocalCluster | None:
    """Stop everything ``up`` started from ``state_dir``; None when nothing was started."""
    cluster = LocalCluster.load(state_dir)
    if cluster is None:
        return None
    stuck = _stop(cluster)
    if stuck:
        raise DaskfleetError(f"could not stop: {', '.join(stuck)}", ExitCode.LOCAL_FAILURE)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return cluster
