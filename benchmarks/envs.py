"""Environment installs: a delta install (warm cache, one package changed) against a cold full install.

No conda channel is reachable here, so the channel is built like the tests' (tests/envs/channel.py):
real conda packages converted from wheels, served over HTTP on 127.0.0.1, solved, locked and
installed by daskfleet. The packages carry incompressible payloads so fetching, verifying and
extracting cost what they cost for real packages of that size; loopback is faster than a real
network, which makes the cold install cheaper and the ratio conservative.

Also times the fingerprint of an installed prefix of the default environment's size (it runs at
every node boot): conda-meta records with realistic file lists, synthesized.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from daskfleet.environments.cache import PackageCache
from daskfleet.environments.install import install_lock
from daskfleet.environments.lockfile import read_lock
from daskfleet.environments.records import prefix_fingerprint
from daskfleet.environments.wheel import build_wheel

from .common import summary

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the channel builder the tests use
from envs.channel import ChannelServer, convert, make_wheel, reindex, stub_python, write_spec  # noqa: E402

#: The benchmark channel: PACKAGES packages of PACKAGE_BYTES each (the default env locks ~150 packages
#: of ~1 GB in all; this is smaller so the benchmark stays short, and the ratio is per byte the same).
PACKAGES = 30
PACKAGE_BYTES = 3 * 1024 * 1024
#: The default env's shape, for the fingerprint: conda packages, files they install, pip wheels.
DEFAULT_ENV_PACKAGES = 150
DEFAULT_ENV_FILES = 45_000
ROUNDS = 5


def _channel(root: Path, packages: int = PACKAGES, package_bytes: int = PACKAGE_BYTES) -> Path:
    channel = root / "channel"
    stub_python("linux-64", channel)
    noarch = channel / "noarch"
    noarch.mkdir(parents=True, exist_ok=True)
    wheels = root / "wheels"
    for index in range(packages):
        name = f"bench{index:03d}"
        versions = ("1.0", "1.1") if index == 0 else ("1.0",)
        for version in versions:
            wheel = make_wheel(wheels, name, version, payload=os.urandom(package_bytes))
            convert(wheel, noarch, "V2")  # .conda, as conda-forge serves
    reindex(channel)
    return channel


def _lock(root: Path, server: ChannelServer, name: str, first_version: str, packages: int = PACKAGES) -> Path:
    dependencies = [f"bench000 =={first_version}", *(f"bench{index:03d}" for index in range(1, packages))]
    spec = write_spec(root / "envs" / name, server.url, dependencies)
    subprocess.run([sys.executable, "-m", "daskfleet", "env", "lock", str(spec.parent)], check=True, capture_output=True,
                   env={**os.environ, "DASKFLEET_HOME": str(root / "home")})
    return spec.parent / "conda-lock.yml"


def _timed_install(lock: Path, prefix: Path, cache: PackageCache, wheel: Path) -> float:
    started = time.perf_counter()
    install_lock(read_lock(lock), prefix, "linux-64", cache, wheel=wheel)
    return time.perf_counter() - started


def _synthetic_prefix(root: Path) -> Path:
    prefix = root / "default-sized-prefix"
    meta = prefix / "conda-meta"
    meta.mkdir(parents=True)
    site = prefix / "lib" / "python3.11" / "site-packages"
    per_package = DEFAULT_ENV_FILES // DEFAULT_ENV_PACKAGES
    for index in range(DEFAULT_ENV_PACKAGES):
        name = f"pkg{index:03d}"
        files = [f"lib/python3.11/site-packages/{name}/module{n}.py" for n in range(per_package)]
        files.append(f"lib/python3.11/site-packages/{name}-1.0.dist-info/METADATA")
        (meta / f"{name}-1.0-py_0.json").write_text(json.dumps({
            "name": name, "version": "1.0", "build": "py_0", "sha256": f"{index:064x}", "md5": f"{index:032x}",
            "files": files, "paths_data": {"paths": [{"_path": path, "path_type": "hardlink"} for path in files]},
        }))
        info = site / f"{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    return prefix


def run(root: Path) -> dict[str, float]:
    root.mkdir(parents=True)
    _channel(root)
    wheel = build_wheel(REPO, root / "wheel")
    cold_times, delta_times = [], []
    with ChannelServer(root) as server:
        first, second = _lock(root, server, "first", "1.0"), _lock(root, server, "second", "1.1")
        for round_ in range(ROUNDS):
            cold_cache = PackageCache(root / f"cache-cold-{round_}")
            cold_times.append(_timed_install(second, root / f"cold-{round_}", cold_cache, wheel))
            warm_cache = PackageCache(root / f"cache-warm-{round_}")
            _timed_install(first, root / f"base-{round_}", warm_cache, wheel)
            delta_times.append(_timed_install(second, root / f"delta-{round_}", warm_cache, wheel))
    size_mb = PACKAGES * PACKAGE_BYTES / 1e6
    print(f"  cold full install ({PACKAGES + 1} packages, {size_mb:.0f} MB): {summary(cold_times)} s")
    print(f"  delta install (warm cache, 1 package changed):  {summary(delta_times)} s")
    prefix = _synthetic_prefix(root)
    fingerprint_times = []
    for _ in range(5):
        started = time.perf_counter()
        prefix_fingerprint(prefix)
        fingerprint_times.append(time.perf_counter() - started)
    print(f"  fingerprint of a prefix of {DEFAULT_ENV_PACKAGES} packages / {DEFAULT_ENV_FILES} files: "
          f"{summary([value * 1000 for value in fingerprint_times])} ms")
    return {
        "delta install / cold full install": statistics.median(delta_times) / statistics.median(cold_times),
        "fingerprint at boot (ms, default-env size)": statistics.median(fingerprint_times) * 1000,
    }
