"""Fixtures: real Dask processes over real TLS sockets on 127.0.0.1, and a moto server for AWS calls."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from daskfleet.local import cluster as local
from daskfleet.security import pki

from support import REPO


@pytest.fixture(scope="session")
def cluster_ca():
    """The CA of the session's local cluster, kept so tests can sign further certificates."""
    return pki.create_ca(local.LOCAL_CLUSTER)


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory, cluster_ca):
    """One local cluster (scheduler + 2 workers) for the session, stopped at the end; it never goes idle."""
    state = tmp_path_factory.mktemp("local-cluster")
    scaling = local.local_scaling(2, 2, idle_timeout_s=0, no_client_timeout_s=0)
    cluster = local.up(state, scaling=scaling, ca=cluster_ca)
    yield cluster
    local.down(state)


@pytest.fixture(scope="session")
def other_ca():
    """Another cluster's CA: same cluster name, different key."""
    return pki.create_ca(local.LOCAL_CLUSTER)


@pytest.fixture(scope="session")
def second_venv(tmp_path_factory):
    """A real second virtual environment: this one's packages plus a different toolz.

    It sees the project's site-packages through a .pth file, and has its own toolz
    (a core Dask dependency) at another version, installed from the package index by uv.
    """
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    venv = tmp_path_factory.mktemp("venv2") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.check_output(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip())
    ours = sysconfig.get_paths()["purelib"]
    (site / "zz_daskfleet_base.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--no-deps", "toolz==0.12.1"],
        check=True, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    return venv


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1 (a free port) for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
