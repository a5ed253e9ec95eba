"""Where a local cluster keeps its state, and what ``local up`` recorded there.

Each local cluster has its own state directory, ``$DASKFLEET_HOME/<cluster>`` by default, holding its CA
(certificate and key), its admin's and members' client certificates, its nodes and its records. The user's
client (``daskfleet.client``) reads it to connect; the launcher (``daskfleet.local.cluster``) writes it.
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

#: The local cluster's name when none is given (``daskfleet local up``, ``daskfleet.connect()``).
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
#: The local user's (the cluster's admin's) client certificate, with the CA certificate.
CLIENT_DIR = "client"
#: The cluster CA's certificate and key (``ca.pem``, ``ca-key.pem``; 0600 in a 0700 directory), kept so that
#: ``daskfleet local issue`` can make member certificates once the cluster is up.
CA_DIR = "ca"
CA_KEY_FILE = "ca-key.pem"
#: ``users/<user>/``: a member's client certificate made by ``daskfleet local issue --user <user>``.
USERS_DIR = "users"


def node_python(state_dir: Path) -> str:
    """The interpreter a node of the local cluster starts with: its published environment's, else this one's."""
    published = Path(state_dir) / ENV_LINK / "bin" / "python"
    return str(published) if published.exists() else sys.executable


def default_state_dir(cluster: str = LOCAL_CLUSTER) -> Path:
    return daskfleet_home() / cluster


def command_flags(state_dir: Path, cluster: str) -> str:
    """What ``daskfleet local …`` needs to find this cluster again: `` --cluster NAME``, `` --state-dir DIR``, or nothing."""
    if Path(state_dir).resolve() != default_state_dir(cluster).resolve():
        return f" --state-dir {state_dir}"
    return "" if cluster == LOCAL_CLUSTER else f" --cluster {cluster}"


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
    #: Times its supervisor ended it for exceeding its memory limit (exit 80), and the line of the last.
    memory_kills: int = 0
    memory_line: str = ""

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
    #: The cluster's name: its certificates' trust domain (spiffe://<cluster>/...).
    cluster: str = LOCAL_CLUSTER
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
    #: The dashboard forwarder ``local up`` starts (``daskfleet dashboard``), and its plain-HTTP loopback URL: the
    #: dashboard port itself asks for a certificate of the cluster, which the browser does not hold.
    forwarder: NodeProcess | None = None
    dashboard_url: str = ""

    @classmethod
    def load(cls, state_dir: Path) -> LocalCluster | None:
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        doc = json.loads(path.read_text())
        doc["nodes"] = [NodeProcess(**node) for node in doc.get("nodes", [])]
        for key in ("supervisor", "forwarder"):
            if doc.get(key):
                doc[key] = NodeProcess(**doc[key])
        return cls(**doc)

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        pki.write_private(path, json.dumps(asdict(self), indent=2))

    def running(self) -> list[NodeProcess]:
        """Live processes: the supervisor and the nodes."""
        others = [node for node in (self.supervisor, self.forwarder) if node is not None]
        return [node for node in others + self.nodes if node.process() is not None]

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


def user_dir(state_dir: Path, user: str) -> Path:
    return state_dir / USERS_DIR / user


def find_state_dir(cluster: str | None, state_dir: str | Path | None = None) -> Path | None:
    """The state directory of the local cluster ``cluster`` names, or None when the name is an AWS cluster's.

    A name is local when ``state_dir`` is given, when it is ``local`` (or None), or when $DASKFLEET_HOME holds
    a local cluster of that name (``local up --cluster NAME`` made its state directory, with its certificates;
    ``local down`` keeps it): a local cluster you made wins over an AWS cluster of the same name, until its
    state directory is removed.
    """
    if state_dir is not None:
        return Path(state_dir)
    name = cluster or LOCAL_CLUSTER
    default = default_state_dir(name)
    return default if name == LOCAL_CLUSTER or (client_dir(default) / CERT_FILE).exists() else None


def cluster_name(state_dir: Path) -> str:
    """The name of the local cluster in ``state_dir``: the trust domain of its admin's certificate."""
    material = client_material(state_dir)
    name = pki.identity_of(material.cert_pem).cluster
    if name is None:
        raise DaskfleetError(f"{client_dir(state_dir) / CERT_FILE}: carries no daskfleet role URI", ExitCode.CONFIG)
    return name


def client_material(state_dir: Path, user: str | None = None) -> TlsMaterial:
    """The local cluster's CA and a client certificate and key: the admin's (the local user's), or ``user``'s.

    ``user`` names a member whose certificate ``daskfleet local issue`` made; the admin's own name gives the
    admin's certificate.
    """
    directory = client_dir(state_dir)
    if user is not None and (user_dir(state_dir, user) / CERT_FILE).exists():
        directory = user_dir(state_dir, user)
    try:
        material = TlsMaterial(*((directory / name).read_text() for name in (CA_FILE, CERT_FILE, KEY_FILE)))
    except FileNotFoundError:
        raise DaskfleetError(
            f"no client certificate in {directory}: start the cluster with `daskfleet local up`", ExitCode.CONFIG
        ) from None
    if user is not None and pki.identity_of(material.cert_pem).common_name != user:
        name = pki.identity_of(material.cert_pem).cluster or LOCAL_CLUSTER
        raise DaskfleetError(
            f"local cluster {name!r} has no certificate for user {user!r}: "
            f"`daskfleet local issue --user {user} --cluster {name}` makes one", ExitCode.CONFIG,
        )
    return material


def save_ca(state_dir: Path, ca: pki.IssuedCert) -> None:
    directory = state_dir / CA_DIR
    pki.write_private(directory / CA_FILE, ca.cert_pem)
    pki.write_private(directory / CA_KEY_FILE, ca.key_pem)


def load_ca(state_dir: Path) -> pki.IssuedCert | None:
    """The cluster CA kept in ``state_dir``, or None when none is (no ``local up`` yet)."""
    directory = state_dir / CA_DIR
    try:
        return pki.IssuedCert((directory / CA_FILE).read_text(), (directory / CA_KEY_FILE).read_text())
    except FileNotFoundError:
        return None
