"""Environment switch: from publish until every worker of a 2-worker local cluster runs the new fingerprint.

The contender is what the switch replaces: a full cold install of the same environment (an empty
package cache, every package fetched). Both use the same channel, built like the tests'
(tests/envs/channel.py) with packages of realistic weight, served at CHANNEL_BYTES_PER_S as a
stand-in for a conda channel across the internet (loopback would make downloads free); the cold
install is also timed unthrottled, side by side, so the effect of that choice is visible.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from distributed import Client

import daskfleet
from daskfleet import conventions
from daskfleet.environments.cache import PackageCache
from daskfleet.environments.install import daskfleet_wheel_version, install_lock
from daskfleet.environments.lockfile import read_lock
from daskfleet.environments.wheel import build_wheel

from .common import summary
from .envs import REPO, _channel, _lock
from envs.channel import ChannelServer  # noqa: E402  (benchmarks.envs puts tests/ on the path)

#: 50 MB/s: a good connection to conda-forge's CDN.
CHANNEL_BYTES_PER_S = 50e6
#: The default environment's weight: about 60 packages, some 480 MB of archives.
PACKAGES = 60
PACKAGE_BYTES = 8 * 1024 * 1024
ROUNDS = 3


def _daskfleet(*args: object, home: Path) -> str:
    env = {"DASKFLEET_HOME": str(home), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "daskfleet", *map(str, args)], capture_output=True, text=True,
                            timeout=600, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"daskfleet {' '.join(map(str, args))} failed: {result.stderr[-2000:]}")
    return result.stdout


def _rolled(client: Client, fingerprint: str) -> bool:
    """Asked of the scheduler by a connected client (what `daskfleet env status` shows), every 50 ms."""
    roll = client.sync(getattr(client.scheduler, conventions.ENV_ROLL_HANDLER))
    return roll["done"] and len(roll["workers"]) == 2 and all(value == fingerprint for value in roll["workers"].values())


def _switch(client: Client, state: Path, lock: Path, wheel: Path, fingerprint: str, home: Path) -> float:
    started = time.perf_counter()
    _daskfleet("local", "env", "publish", "--lock", lock, "--wheel", wheel, "--state-dir", state, home=home)
    while not _rolled(client, fingerprint):
        if time.perf_counter() - started > 300:
            raise RuntimeError("the workers did not switch within 300 s")
        time.sleep(0.05)
    return time.perf_counter() - started


def run(root: Path) -> dict[str, float]:
    root.mkdir(parents=True)
    _channel(root, PACKAGES, PACKAGE_BYTES)
    wheel = build_wheel(REPO, root / "wheel")
    version = daskfleet_wheel_version(wheel)
    home = root / "home"
    cold, cold_loopback, switches = [], [], []
    with ChannelServer(root, bytes_per_s=CHANNEL_BYTES_PER_S) as server:
        first, second = (_lock(root, server, name, version, PACKAGES) for name, version in (("first", "1.0"), ("second", "1.1")))
        fingerprints = {lock: read_lock(lock).fingerprint("linux-64", version) for lock in (first, second)}
        for round_ in range(ROUNDS):
            started = time.perf_counter()
            install_lock(read_lock(second), root / f"cold-{round_}", "linux-64", PackageCache(root / f"cold-cache-{round_}"),
                         wheel=wheel)
            cold.append(time.perf_counter() - started)
        state = root / "state"
        _daskfleet("local", "up", "--workers", "2", "--idle-timeout", "0", "--no-client-timeout", "0",
                   "--state-dir", state, home=home)
        try:
            with daskfleet.connect("local", state_dir=state) as client:
                _switch(client, state, first, wheel, fingerprints[first], home)  # the cluster runs the first lock
                for round_ in range(ROUNDS):
                    lock = second if round_ % 2 == 0 else first
                    switches.append(_switch(client, state, lock, wheel, fingerprints[lock], home))
        finally:
            _daskfleet("local", "down", "--state-dir", state, home=home)
        server.bytes_per_s = None
        for round_ in range(ROUNDS):
            started = time.perf_counter()
            install_lock(read_lock(second), root / f"loop-{round_}", "linux-64", PackageCache(root / f"loop-cache-{round_}"),
                         wheel=wheel)
            cold_loopback.append(time.perf_counter() - started)
    print(f"  cold full install, channel at {CHANNEL_BYTES_PER_S / 1e6:.0f} MB/s: {summary(cold)} s")
    print(f"  cold full install, channel on loopback:   {summary(cold_loopback)} s")
    print(f"  switch of a 2-worker local cluster (1 package changed), publish to all workers on it: {summary(switches)} s")
    return {
        "environment switch / cold full install": statistics.median(switches) / statistics.median(cold),
        "environment switch / cold install on loopback": statistics.median(switches) / statistics.median(cold_loopback),
    }
