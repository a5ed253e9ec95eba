"""Shared set-up for the benchmarks: a throwaway PKI and node directories under one temp dir."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from distributed import Security

from daskfleet.trust import pki
from daskfleet.local.cluster import LOCAL_CLUSTER, write_node_dir
from daskfleet.node.spec import NodeSpec
from daskfleet.node.sources import CA_FILE, CERT_FILE, KEY_FILE

HOST = "127.0.0.1"


@dataclass
class BenchPki:
    root: Path
    ca: pki.IssuedCert

    def node_dir(self, name: str, spec: NodeSpec) -> Path:
        cert = pki.issue_certificate(self.ca, LOCAL_CLUSTER, spec.role, ip_addresses=(HOST,))
        directory = self.root / "nodes" / name
        write_node_dir(directory, spec, self.ca, cert)
        return directory

    def client_files(self) -> Path:
        directory = self.root / "client"
        cert = pki.issue_certificate(self.ca, LOCAL_CLUSTER, "client", user="bench")
        pki.write_private(directory / CA_FILE, self.ca.cert_pem)
        pki.write_private(directory / CERT_FILE, cert.cert_pem)
        pki.write_private(directory / KEY_FILE, cert.key_pem)
        return directory


def agent(role: str, node_dir: Path, run_dir: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "daskfleet", "node", role, "--source", f"dir:{node_dir}", "--runtime-dir", str(run_dir)],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,  # noqa: SIM115
    )


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared (process exit {proc.poll()})")
        time.sleep(0.05)
    time.sleep(0.05)
    return json.loads(path.read_text())


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def tls_files(directory: Path) -> Security:
    """Certificates per role (``scheduler``, ``worker``, ``client``) from a fresh CA, written to ``directory`` as
    ``ca.pem``, ``ROLE.pem`` and ``ROLE.key`` for a TLS LocalCluster or listener; the client's Security."""
    ca = pki.create_ca(LOCAL_CLUSTER)
    pki.write_private(directory / "ca.pem", ca.cert_pem)
    for role in ("scheduler", "worker", "client"):
        cert = pki.issue_certificate(ca, LOCAL_CLUSTER, role, user="bench" if role == "client" else None,
                                     ip_addresses=(HOST,))
        pki.write_private(directory / f"{role}.pem", cert.cert_pem)
        pki.write_private(directory / f"{role}.key", cert.key_pem)
    return Security(tls_ca_file=str(directory / "ca.pem"), tls_client_cert=str(directory / "client.pem"),
                    tls_client_key=str(directory / "client.key"), require_encryption=True)


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def rounds_ratio(mine: list[float], theirs: list[float]) -> float:
    """The median of the rounds' own ratios ``mine[i] / theirs[i]``: what a throughput target's verdict reads.

    Each round runs the contenders back to back, so a ratio within a round cancels the machine's drift between
    rounds. The ratio of the two sides' medians (``medians_ratio``, printed beside it) does not: here a side's
    rounds range over ±15 %, which hides a 1-2 % target either way."""
    return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))


def medians_ratio(mine: list[float], theirs: list[float]) -> float:
    """The ratio of the two sides' medians, printed beside ``rounds_ratio``."""
    return statistics.median(mine) / statistics.median(theirs)
