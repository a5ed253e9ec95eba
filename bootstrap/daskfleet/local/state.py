"""Where the local cluster keeps its state, and what ``local up`` recorded there.

The user's client (``daskfleet.client``) reads this to connect; the launcher
(``daskfleet.local.cluster``) writes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from ..conventions import daskfleet_home
from ..errors import DaskfleetError, ExitCode
from ..node.sources import CA_FILE, CERT_FILE, KEY_FILE
from ..trust import pki
from ..trust.tls import TlsMaterial

LOCAL_CLUSTER = "local"
STATE_FILE = "cluster.json"
#: The scheduler's node name (its node directory, log and record).
SCHEDULER = "scheduler"
#: The supervisor's log, under the state directory's ``logs`` with the nodes' logs.
SUPERVISOR_LOG = "supervisor.log"
#: Under the state directory: each node's run history (its backoff and give-up window).
SUPERVISION_DIR = "supervision"
#: In the state directory: a link to the environment (a conda prefix) the cluster's nodes run in, once one
#: was published to it; without it they run in the launcher's own environment.
ENV_LINK = "env"
#: Held while ``cluster.json`` is read and rewritten: the launcher and the scheduler's scaler both record workers.
LOCK_FILE = "cluster.lock"
CLIENT_DIR = "client"


def node_python(state_dir: Path) -> str:
    """The interpreter a node of the local cluster starts with: its published environment's, else this one's."""
    published = Path(state_dir) / ENV_LINK / "bin" / "python"
    return str(published) if published.exists() else sys.executable


def default_state_dir(cluster: str = LOCAL_CLUSTER) -> Path:
    return daskfleet_home() / cluster


@dataclass
class NodeProcess:
    """A node (or the supervisor) of the local cluster: its process, and what its supervisor knows of it."""

    name: str
    role: str
    pid: int
    create_time: float
    log: str
    #: The supervisor keeps it running (the scaler sets and clears this for workers).
    wanted: bool = True
    #: starting, running, restarting, stopped (on request), failed (configuration-class), gave up.
    state: str = "starting"
    exit_code: int | None = None
    exit_time: float = 0.0
    #: The line of its last exit (``error: …`` for a failure).
    last_line: str = ""
    restarts: int = 0

    def process(self) -> psutil.Process | None:
        """The live process, or None when it ended (or its pid now belongs to another)."""
        if self.pid <= 0:
            return None
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None


@dataclass
class LocalCluster:
    """What ``local up`` started, persisted in ``<state>/cluster.json``."""

    state_dir: str
    address: str = ""
    dashboard: str = ""
    user: str = ""
    nodes: list[NodeProcess] = field(default_factory=list)
    #: The adaptive range, MIN:MAX, and the cluster cap ("" for none).
    adapt: str = ""
    cap: str = ""
    #: Each worker's threads and memory limit in bytes (every worker slot's spec says the same).
    worker_threads: int = 0
    worker_memory_limit: int = 0
    #: Set by ``local down`` first, so the scaler starts no worker while everything stops.
    stopping: bool = False
    #: The supervisor process (``daskfleet local supervise``), which starts and restarts every node.
    supervisor: NodeProcess | None = None

    @classmethod
    def load(cls, state_dir: Path) -> LocalCluster | None:
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        doc = json.loads(path.read_text())
        doc["nodes"] = [NodeProcess(**node) for node in doc.get("nodes", [])]
        if doc.get("supervisor"):
            doc["supervisor"] = NodeProcess(**doc["supervisor"])
        return cls(**doc)

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        pki.write_private(path, json.dumps(asdict(self), indent=2))

    def running(self) -> list[NodeProcess]:
        """Live processes: the supervisor and the nodes."""
        supervisor = [self.supervisor] if self.supervisor is not None else []
        return [node for node in supervisor + self.nodes if node.process() is not None]

    def node(self, name: str) -> NodeProcess | None:
        return next((node for node in self.nodes if node.name == name), None)

    @classmethod
    @contextmanager
    def update(cls, state_dir: Path) -> Iterator[LocalCluster | None]:
        """The recorded cluster, read and saved again under the state directory's lock (None: nothing recorded)."""
        with locked(state_dir):
            cluster = cls.load(state_dir)
            yield cluster
            if cluster is not None:
                cluster.save()


@contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """An exclusive lock on the state directory's records, across processes."""
    pki.ensure_private_dir(state_dir)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def client_dir(state_dir: Path) -> Path:
    return state_dir / CLIENT_DIR


def client_material(state_dir: Path) -> TlsMaterial:
    """The local cluster's CA and this user's client certificate and key."""
    directory = client_dir(state_dir)
    try:
        return TlsMaterial(*((directory / name).read_text() for name in (CA_FILE, CERT_FILE, KEY_FILE)))
    except FileNotFoundError:
        raise DaskfleetError(
            f"no client certificate in {directory}: start the cluster with `daskfleet local up`", ExitCode.CONFIG
        ) from None
