"""Helpers shared by the tests: node directories, agent processes, certificates."""

from __future__ import annotations

import json
import ssl
import tempfile
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from distributed import Client, Security

from daskfleet.trust import pki
from daskfleet.node.sources import CA_FILE, CERT_FILE, KEY_FILE, SPEC_FILE, TLS_DIR

REPO = Path(__file__).resolve().parent.parent


def write_node_dir(directory: Path, spec: dict[str, Any] | str | None, ca_pem: str | None, cert: pki.IssuedCert | None) -> Path:
    """A node directory for DirectorySource; ``None`` leaves a file out, a str spec is written verbatim."""
    tls = directory / TLS_DIR
    tls.mkdir(parents=True, exist_ok=True)
    if spec is not None:
        (directory / SPEC_FILE).write_text(spec if isinstance(spec, str) else json.dumps(spec))
    if ca_pem is not None:
        (tls / CA_FILE).write_text(ca_pem)
    if cert is not None:
        (tls / CERT_FILE).write_text(cert.cert_pem)
        (tls / KEY_FILE).write_text(cert.key_pem)
    return directory


def agent_environment(role: str) -> dict[str, str] | None:
    """What an agent's supervisor starts it with: a worker gets distributed's nanny environment (the unit's drop-in,
    the local supervisor), so it does not re-execute itself (tests/test_prespawn.py covers that path)."""
    from daskfleet.node.prespawn import worker_environment

    return {**os.environ, **worker_environment()} if role == "worker" else None


def run_agent(role: str, node_dir: Path, runtime_dir: Path, *, python: str = sys.executable, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``daskfleet node <role>`` to completion (for failure classes: it must exit by itself)."""
    return subprocess.run(
        [python, "-m", "daskfleet", "node", role, "--source", f"dir:{node_dir}", "--runtime-dir", str(runtime_dir)],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=agent_environment(role),
    )


def start_agent(role: str, node_dir: Path, runtime_dir: Path, log: Path, *, python: str = sys.executable) -> subprocess.Popen:
    handle = open(log, "wb")  # noqa: SIM115  closed by the caller through the process
    return subprocess.Popen(
        [python, "-m", "daskfleet", "node", role, "--source", f"dir:{node_dir}", "--runtime-dir", str(runtime_dir)],
        stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        env=agent_environment(role),
    )


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def security_for(ca_pem: str, cert: pki.IssuedCert, role: str = "client") -> Security:
    """A distributed Security presenting ``cert`` in ``role`` (in memory, TLS required)."""
    return Security(
        tls_ca_file=ca_pem,
        require_encryption=True,
        **{f"tls_{role}_cert": cert.cert_pem, f"tls_{role}_key": cert.key_pem},
    )


def user_client(cluster: Any, ca: pki.IssuedCert, user: str, role: str = "client") -> Client:
    """A client of the local ``cluster`` with a ``role`` certificate (member by default) for ``user``, signed by its CA."""
    from daskfleet.local.state import LOCAL_CLUSTER  # noqa: PLC0415

    cert = pki.issue_certificate(ca, LOCAL_CLUSTER, role, user=user)
    return Client(cluster.address, security=security_for(ca.cert_pem, cert), timeout=30)


def venv_python(venv: Path) -> str:
    return str(venv / "bin" / "python")


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    """``condition()``'s first true value, polled; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)
    return value


def dashboard_context(state_dir: Path | str, role: str = "metrics", user: str | None = None) -> ssl.SSLContext:
    """An SSL context presenting a ``role`` certificate of the local cluster in ``state_dir`` (made from its CA), as
    the dashboard port requires: ``metrics`` by default, what Prometheus presents."""
    from daskfleet.local.state import cluster_name, load_ca  # noqa: PLC0415

    state_dir = Path(state_dir)
    ca = load_ca(state_dir)
    cert = pki.issue_certificate(ca, cluster_name(state_dir), role, user=user)
    context = ssl.create_default_context(cafile=str(state_dir / "ca" / "ca.pem"))
    context.check_hostname = False
    with tempfile.TemporaryDirectory() as directory:  # load_cert_chain reads files; they need not outlive it
        pki.write_private(Path(directory) / "cert.pem", cert.cert_pem)
        pki.write_private(Path(directory) / "key.pem", cert.key_pem)
        context.load_cert_chain(Path(directory) / "cert.pem", Path(directory) / "key.pem")
    return context
