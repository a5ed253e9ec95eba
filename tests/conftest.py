"""Fixtures: real Dask processes over real TLS sockets on 127.0.0.1, and a moto server for AWS calls."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from moto.server import ThreadedMotoServer

from envs.channel import ChannelServer, build_channel

from daskfleet.environments.wheel import build_wheel
from daskfleet.local import cluster as local
from daskfleet.trust import pki

from support import REPO


@pytest.fixture(scope="session")
def cluster_ca():
    """The CA of the session's local cluster, kept so tests can sign further certificates."""
    return pki.create_ca(local.LOCAL_CLUSTER)


#: A user's override of distributed's nanny environment, as dask's configuration carries it from the environment
#: of ``local up``; the session cluster starts with it, and its workers must get it (tests/test_prespawn.py).
USER_NANNY_CONFIG = {
    "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": "{'MALLOC_TRIM_THRESHOLD_': 131072}",
    "DASK_DISTRIBUTED__NANNY__ENVIRON": "{'DASKFLEET_TEST_NANNY_ENVIRON': 'from-config'}",
}


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory, cluster_ca):
    """One local cluster (scheduler + 2 workers of 1 thread) for the session, stopped at the end; it never goes idle."""
    state = tmp_path_factory.mktemp("local-cluster")
    scaling = local.local_scaling(2, 2, idle_timeout_s=0, no_client_timeout_s=0)
    with mock.patch.dict(os.environ, USER_NANNY_CONFIG):  # inherited by the cluster's processes only
        cluster = local.up(state, scaling=scaling, ca=cluster_ca, threads=1)
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
def program_evaluations(tmp_path_factory, worker_id: str) -> Path | None:
    """Where the xdist workers of one run share the Pulumi program's evaluations under mocks (each is seconds of
    CPU): ``evaluate_program(..., shared=program_evaluations)``. Fresh for each run; None without xdist."""
    return None if worker_id == "master" else tmp_path_factory.getbasetemp().parent / "program-evaluations"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1 (a free port) for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


# --- environments without conda channels: a channel the tests build (see envs/channel.py) ---


@pytest.fixture(scope="session")
def channel_root(tmp_path_factory) -> Path:
    """A directory holding ``channel/``: stub pythons for five platforms and the test projects."""
    root = tmp_path_factory.mktemp("conda")
    build_channel(root / "channel")
    return root


@pytest.fixture(scope="session")
def channel(channel_root: Path) -> Iterator[ChannelServer]:
    """The test channel served over HTTP on 127.0.0.1; ``channel.url + '/channel'`` is the channel URL."""
    with ChannelServer(channel_root) as server:
        yield server


@pytest.fixture(scope="session")
def daskfleet_wheel(tmp_path_factory) -> Path:
    """daskfleet's wheel, built once from this checkout."""
    return build_wheel(REPO, tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $DASKFLEET_HOME: its own package cache and repodata cache."""
    path = tmp_path / "home"
    monkeypatch.setenv("DASKFLEET_HOME", str(path))
    return path


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run")


@pytest.fixture
def chromium(tmp_path):
    """A headless Debian chromium driven by its chromedriver (selenium downloads nothing); its DevTools performance
    log (``get_log("performance")``) carries network events, websocket frames included."""
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver_path):
        reason = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the browser tests")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    yield browser
    browser.quit()
