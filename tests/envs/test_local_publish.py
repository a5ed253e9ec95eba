"""Publishing a new environment to a running local cluster: the workers switch while a computation runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from envs.test_lock_and_install import daskfleet, locked, ok

import daskfleet as daskfleet_api
from daskfleet.environments.lockfile import read_lock
from daskfleet.environments.install import daskfleet_wheel_version
from daskfleet.errors import ExitCode

from support import last_line


def _status(state: Path) -> dict:
    return json.loads(ok(daskfleet("env", "status", "local", "--state-dir", state, "--json")))


def _wait_for_roll(state: Path, fingerprint: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = _status(state)
        roll = status["roll"]
        if "unavailable" not in roll and roll["target"] == fingerprint and roll["done"] and roll["workers"] and all(
            value == fingerprint for value in roll["workers"].values()
        ):
            return status
        assert time.monotonic() < deadline, f"the roll did not complete within {timeout}s: {status}"
        time.sleep(1)


@pytest.fixture
def running(home, tmp_path):
    state = tmp_path / "state"
    ok(daskfleet("local", "up", "--workers", "2", "--no-client-timeout", "0", "--idle-timeout", "0",
                 "--state-dir", state))
    yield state
    daskfleet("local", "down", "--state-dir", state)


def test_a_published_environment_reaches_every_worker_while_a_computation_runs(
    running, channel, tmp_path, daskfleet_wheel
):
    state = running
    first = locked(tmp_path, channel, "first", ["alpha ==1.0"])
    second = locked(tmp_path, channel, "second", ["alpha ==1.1"])
    version = daskfleet_wheel_version(daskfleet_wheel)
    first_fp, second_fp = read_lock(first).fingerprint("linux-64", version), read_lock(second).fingerprint("linux-64", version)

    published = ok(daskfleet("local", "env", "publish", "--lock", first, "--wheel", daskfleet_wheel, "--state-dir", state))
    assert first_fp in published
    _wait_for_roll(state, first_fp)

    def slow(x):  # defined here, so it travels by value to the workers
        import time as clock

        clock.sleep(0.05)
        return x * 2

    with daskfleet_api.connect("local", state_dir=state) as client:
        futures = client.map(slow, range(400))
        channel.requests.clear()
        ok(daskfleet("local", "env", "publish", "--lock", second, "--wheel", daskfleet_wheel, "--state-dir", state))
        assert channel.package_requests() == ["alpha-1.1-py_0.tar.bz2"]  # one package changed: one fetched
        assert sum(client.gather(futures)) == 2 * sum(range(400))
        status = _wait_for_roll(state, second_fp)
        versions = client.run(lambda: __import__("alpha").__version__)
        assert set(versions.values()) == {"1.1"}
    assert status["published"]["replaces"] == {"linux-64": [first_fp]}
    audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    assert [entry["fingerprint"] for entry in audit if entry["event"] == "environment-published"] == [first_fp, second_fp]
    assert sum(1 for entry in audit if entry["event"] == "environment-switch") >= 4

    rolled_back = ok(daskfleet("env", "rollback", "local", "--state-dir", state))
    assert f"{second_fp} -> {first_fp}" in rolled_back
    _wait_for_roll(state, first_fp)
    assert (state / "env").resolve().name == first_fp.removeprefix("sha256:")[:16]


def test_a_client_whose_packages_differ_is_told_the_command_that_fixes_it(local_cluster, second_venv):
    code = (
        "import daskfleet, sys\n"
        "from daskfleet.errors import DaskfleetError\n"
        f"try:\n    daskfleet.connect('local', state_dir={str(local_cluster.state_dir)!r}, timeout=30)\n"
        "except DaskfleetError as error:\n    print(error.message); sys.exit(3)\n"
    )
    result = subprocess.run([str(second_venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "toolz" in result.stdout and "`daskfleet env sync local`" in result.stdout


def test_publishing_to_no_running_cluster_is_one_clear_error(home, channel, tmp_path, daskfleet_wheel):
    lock = locked(tmp_path, channel, "lonely", ["gamma"])
    result = daskfleet("local", "env", "publish", "--lock", lock, "--wheel", daskfleet_wheel,
                       "--state-dir", tmp_path / "nothing")
    assert result.returncode == ExitCode.CONFIG
    assert "no local cluster runs from" in last_line(result.stderr) and "Traceback" not in result.stderr


def test_a_change_of_core_packages_restarts_the_scheduler_into_it_and_old_clients_are_told_the_fix(
    running, channel, tmp_path, daskfleet_wheel
):
    """The published lock carries another toolz (a core package): the scheduler announces it, restarts into it on the
    same address, the workers follow, and a client still on the old environment is refused with the fix command."""
    state = running
    version = daskfleet_wheel_version(daskfleet_wheel)
    first = locked(tmp_path, channel, "first", ["alpha ==1.0"])
    core = locked(tmp_path, channel, "core", ["alpha ==1.0", "toolz ==0.0.1"])
    first_fp, core_fp = read_lock(first).fingerprint("linux-64", version), read_lock(core).fingerprint("linux-64", version)
    ok(daskfleet("local", "env", "publish", "--lock", first, "--wheel", daskfleet_wheel, "--state-dir", state))
    _wait_for_roll(state, first_fp)
    address = json.loads((state / "cluster.json").read_text())["address"]

    python = str(state / "env" / "bin" / "python")  # a client in the cluster's current environment
    watcher = subprocess.Popen([python, "-c", (
        "import daskfleet, time, warnings\n"
        f"client = daskfleet.connect('local', state_dir={str(state)!r}, timeout=30)\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    deadline = time.monotonic() + 120\n"
        "    while not any('restarts now' in str(w.message) for w in seen) and time.monotonic() < deadline:\n"
        "        time.sleep(0.1)\n"
        "print([str(w.message) for w in seen])\n"
    )], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # the watcher is connected
    published = ok(daskfleet("local", "env", "publish", "--lock", core, "--wheel", daskfleet_wheel, "--state-dir", state))
    assert "core packages change (toolz)" in published
    told, _ = watcher.communicate(timeout=180)
    assert "the cluster's environment changes" in told and "restarts now" in told
    status = _wait_for_roll(state, core_fp)
    assert status["roll"]["scheduler"] == core_fp
    assert json.loads((state / "cluster.json").read_text())["address"] == address  # same address after the restart
    audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    assert any(entry["event"] == "scheduler-restart" and "toolz" in entry["reason"] for entry in audit)

    code = (
        "import daskfleet, sys\n"
        "from daskfleet.errors import DaskfleetError\n"
        f"try:\n    daskfleet.connect('local', state_dir={str(state)!r}, timeout=30)\n"
        "except DaskfleetError as error:\n    print(error.message); sys.exit(3)\n"
    )
    old = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert old.returncode == 3 and "toolz" in old.stdout and "`daskfleet env sync local`" in old.stdout
