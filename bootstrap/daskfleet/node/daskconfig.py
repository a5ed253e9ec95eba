"""The Dask configuration every daskfleet process runs with: TLS required, for every role."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..trust.pki import ensure_private_dir, write_private
from ..trust.tls import TlsMaterial
from .sources import CA_FILE, CERT_FILE, KEY_FILE

#: HTTP routes of the scheduler: the defaults minus ``distributed.http.proxy``, which would
#: forward requests to arbitrary hosts from the scheduler.
SCHEDULER_HTTP_ROUTES = [
    "distributed.http.scheduler.prometheus",
    "distributed.http.scheduler.info",
    "distributed.http.scheduler.json",
    "distributed.http.health",
    "distributed.http.statics",
]
TLS_MIN_VERSION = 1.2


@dataclass(frozen=True)
class TlsFiles:
    """Paths of materialized TLS files (0600, in a 0700 directory)."""

    ca: Path
    cert: Path
    key: Path


def materialize_tls(material: TlsMaterial, directory: Path) -> TlsFiles:
    """Write TLS material privately under ``directory``."""
    ensure_private_dir(directory)
    files = TlsFiles(directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE)
    write_private(files.ca, material.ca_pem)
    write_private(files.cert, material.cert_pem)
    write_private(files.key, material.key_pem)
    return files


def render_dask_config(role: str, files: TlsFiles) -> dict[str, Any]:
    """Dask config for ``role`` (scheduler, worker or client): tls:// only, TLS >= 1.2, HTTPS dashboard."""
    tls_paths = {"cert": str(files.cert), "key": str(files.key)}
    config: dict[str, Any] = {
        "distributed": {
            "comm": {
                "require-encryption": True,
                "default-scheme": "tls",
                "tls": {"ca-file": str(files.ca), "min-version": TLS_MIN_VERSION, role: tls_paths},
            },
            # The dashboard (and a worker's HTTP endpoint) serve HTTPS with the node certificate.
            "scheduler": {
                "dashboard": {"tls": {"ca-file": str(files.ca), **tls_paths}},
                "http": {"routes": list(SCHEDULER_HTTP_ROUTES)},
            },
        }
    }
    return config


def write_dask_config(config: dict[str, Any], directory: Path) -> Path:
    """Write the config where ``DASK_CONFIG`` can point other tools on the node."""
    path = directory / "dask.yaml"
    write_private(path, yaml.safe_dump(config, sort_keys=True))
    return path
