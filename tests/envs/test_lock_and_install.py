"""Lock, install and fingerprint for real, against the channel the tests build (see envs/channel.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conda_lock.lockfile.v1.models import Lockfile as CondaLockV1
from envs.channel import write_spec

from daskfleet.conventions import ENV_PLATFORMS
from daskfleet.environments.cache import file_digests
from daskfleet.environments.lockfile import read_lock
from daskfleet.errors import ExitCode

from support import last_line


def daskfleet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The daskfleet command of this checkout, as a user runs it (the environment carries $DASKFLEET_HOME)."""
    return subprocess.run(
        [sys.executable, "-m", "daskfleet", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def locked(tmp_path: Path, channel, name: str, dependencies, platforms=("linux-64",)) -> Path:
    spec = write_spec(tmp_path / name, channel.url, dependencies, platforms)
    ok(daskfleet("env", "lock", spec.parent))
    return spec.parent / "conda-lock.yml"


def install(lock: Path, prefix: Path, wheel: Path) -> dict:
    return json.loads(ok(daskfleet("env", "install", lock, "--prefix", prefix, "--wheel", wheel, "--json")))


def test_a_lock_for_every_platform_in_conda_locks_own_format(home, channel, tmp_path):
    lock = locked(tmp_path, channel, "all", ["alpha ==1.0"], ENV_PLATFORMS)
    document = yaml.safe_load(lock.read_text())
    assert document["version"] == 1
    CondaLockV1.model_validate({key: value for key, value in document.items() if key != "version"})
    assert sorted(document["metadata"]["platforms"]) == sorted(ENV_PLATFORMS)
    for platform in ENV_PLATFORMS:
        names = {entry["name"] for entry in document["package"] if entry["platform"] == platform}
        assert names == {"python", "alpha", "beta"}, platform
    assert all(entry["hash"]["sha256"] and entry["hash"]["md5"] for entry in document["package"])
    # conda-lock's own CLI reads it, with no conda installed.
    rendered = subprocess.run(
        [str(Path(sys.executable).with_name("conda-lock")), "render", "--kind", "explicit", "-p", "linux-64", lock.name],
        cwd=lock.parent, capture_output=True, text=True, timeout=120,
    )
    assert rendered.returncode == 0, rendered.stderr
    explicit = (lock.parent / "conda-linux-64.lock").read_text()
    assert "@EXPLICIT" in explicit and "alpha-1.0-py_0.tar.bz2#" in explicit


def test_locking_an_unchanged_spec_does_nothing_and_says_so(home, channel, tmp_path):
    lock = locked(tmp_path, channel, "again", ["gamma"])
    before = lock.read_bytes()
    again = ok(daskfleet("env", "lock", lock.parent))
    assert "up to date" in again and "nothing to do" in again
    assert lock.read_bytes() == before
    spec = lock.parent / "environment.yml"
    spec.write_text(spec.read_text() + "  - alpha ==1.1\n")
    assert "locked" in ok(daskfleet("env", "lock", lock.parent))
    assert "alpha" in {entry["name"] for entry in yaml.safe_load(lock.read_text())["package"]}


def test_lock_install_and_the_agent_agree_on_one_fingerprint(home, channel, tmp_path, daskfleet_wheel):
    lock = locked(tmp_path, channel, "one", ["alpha ==1.0"])
    prefix = tmp_path / "prefix"
    report = install(lock, prefix, daskfleet_wheel)
    from_lock = ok(daskfleet("env", "fingerprint", "--lock", lock, "--platform", "linux-64")).strip()
    from_prefix = ok(daskfleet("env", "fingerprint", "--prefix", prefix)).strip()
    inside = subprocess.run(
        [str(prefix / "bin" / "python"), "-m", "daskfleet", "fingerprint"], capture_output=True, text=True, timeout=120,
    )
    assert from_lock == from_prefix == inside.stdout.strip() == report["fingerprint"]
    imported = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", "import alpha, beta, daskfleet; print(alpha.__version__, alpha.__file__)"],
        capture_output=True, text=True, timeout=60,
    )
    assert imported.stdout.split()[0] == "1.0" and imported.stdout.split()[1].startswith(str(prefix))
    again = ok(daskfleet("env", "install", lock, "--prefix", prefix, "--wheel", daskfleet_wheel))
    assert "nothing to do" in again


def test_a_second_lock_differing_in_one_package_fetches_and_extracts_only_that_package(
    home, channel, tmp_path, daskfleet_wheel
):
    first = locked(tmp_path, channel, "first", ["alpha ==1.0"])
    second = locked(tmp_path, channel, "second", ["alpha ==1.1"])
    install(first, tmp_path / "p1", daskfleet_wheel)
    channel.requests.clear()
    report = install(second, tmp_path / "p2", daskfleet_wheel)
    assert channel.package_requests() == ["alpha-1.1-py_0.tar.bz2"]
    assert report["fetched"] == ["alpha 1.1 (py_0)"]
    assert sorted(report["from_cache"]) == sorted([f"python {sys.version.split()[0]} (0_stub)", "beta 2.0 (py_0)"])
    assert report["extracted"] == ["alpha-1.1-py_0"]


def test_an_existing_prefix_is_updated_in_place(home, channel, tmp_path, daskfleet_wheel):
    first = locked(tmp_path, channel, "first", ["alpha ==1.0", "gamma"])
    second = locked(tmp_path, channel, "second", ["alpha ==1.1"])
    prefix = tmp_path / "prefix"
    install(first, prefix, daskfleet_wheel)
    report = install(second, prefix, daskfleet_wheel)
    assert ok(daskfleet("env", "fingerprint", "--prefix", prefix)).strip() == report["fingerprint"]
    site = next(prefix.glob("lib/python3*/site-packages"))
    assert (site / "alpha-1.1.dist-info").is_dir() and not (site / "alpha-1.0.dist-info").exists()
    assert not (site / "gamma").exists()


def test_a_package_whose_hash_differs_from_the_lock_is_refused(home, channel, channel_root, tmp_path, daskfleet_wheel):
    lock = locked(tmp_path, channel, "tampered", ["alpha ==1.0"])
    tampered = tmp_path / "alpha-1.0-py_0.tar.bz2"
    shutil.copy(channel_root / "channel" / "noarch" / tampered.name, tampered)
    with tampered.open("ab") as archive:
        archive.write(b"\0")
    lock.write_text(lock.read_text().replace(f"{channel.url}/channel/noarch/{tampered.name}", tampered.as_uri()))
    prefix = tmp_path / "prefix"
    result = daskfleet("env", "install", lock, "--prefix", prefix, "--wheel", daskfleet_wheel)
    assert result.returncode == ExitCode.ENVIRONMENT
    line = last_line(result.stderr)
    assert line.startswith("daskfleet: error: alpha 1.0 (py_0): sha256 of file://") and "the lock says" in line
    assert "Traceback" not in result.stderr
    assert not prefix.exists() and not list(prefix.parent.glob(".prefix.installing-*"))
    assert not list((home / "pkgs" / "archives").glob(f"*/{tampered.name}"))


def test_pip_entries_of_a_lock_are_installed_and_count_with_their_hash(home, channel, channel_root, tmp_path, daskfleet_wheel):
    lock = locked(tmp_path, channel, "pip", ["beta"])
    wheel = channel_root / "wheels" / "gamma-0.1-py3-none-any.whl"
    sha256, _ = file_digests(wheel)
    document = yaml.safe_load(lock.read_text())
    document["package"].append({
        "name": "gamma", "version": "0.1", "manager": "pip", "platform": "linux-64", "dependencies": {},
        "url": f"{channel.url}/wheels/{wheel.name}", "hash": {"sha256": sha256}, "category": "main", "optional": False,
    })
    lock.write_text(yaml.safe_dump(document))
    report = install(lock, tmp_path / "prefix", daskfleet_wheel)
    assert "gamma 0.1" in report["wheels"]
    from_lock = ok(daskfleet("env", "fingerprint", "--lock", lock, "--platform", "linux-64")).strip()
    assert ok(daskfleet("env", "fingerprint", "--prefix", tmp_path / "prefix")).strip() == from_lock == report["fingerprint"]
    recorded = next((tmp_path / "prefix").glob("lib/python3*/site-packages/gamma-0.1.dist-info/direct_url.json"))
    assert json.loads(recorded.read_text())["archive_info"]["hashes"]["sha256"] == sha256


def test_an_unreachable_channel_is_one_clear_error(home, tmp_path):
    spec = write_spec(tmp_path / "offline", "http://127.0.0.1:9", ["alpha"])
    result = daskfleet("env", "lock", spec.parent)
    assert result.returncode == ExitCode.ENVIRONMENT
    line = last_line(result.stderr)
    assert line.startswith(f"daskfleet: error: {spec}: cannot lock for linux-64 from http://127.0.0.1:9/channel")
    assert "Traceback" not in result.stderr and not (spec.parent / "conda-lock.yml").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  - pip:\n    - requests\n", "dependencies.pip: pip packages cannot be locked by daskfleet"),
        ("  - {name: alpha}\n", "is not a conda match spec"),
    ],
)
def test_a_spec_daskfleet_cannot_lock_is_refused_by_its_key(home, channel, tmp_path, extra, message):
    spec = write_spec(tmp_path / "bad", channel.url, ["alpha"])
    spec.write_text(spec.read_text() + extra)
    result = daskfleet("env", "lock", spec.parent)
    assert result.returncode == ExitCode.CONFIG and message in last_line(result.stderr)


def test_fingerprint_takes_a_lock_or_a_prefix(home, tmp_path):
    neither = daskfleet("env", "fingerprint")
    assert neither.returncode == ExitCode.CONFIG and "exactly one of --lock" in last_line(neither.stderr)
    not_conda = daskfleet("env", "fingerprint", "--prefix", tmp_path)
    assert not_conda.returncode == ExitCode.CONFIG and "not a conda prefix" in last_line(not_conda.stderr)


def test_installing_a_platform_the_lock_lacks_is_refused(home, channel, tmp_path, daskfleet_wheel):
    lock = locked(tmp_path, channel, "linux", ["gamma"])
    result = daskfleet("env", "install", lock, "--prefix", tmp_path / "p", "--platform", "osx-arm64", "--wheel", daskfleet_wheel)
    assert result.returncode == ExitCode.ENVIRONMENT
    assert "locked for linux-64, not osx-arm64" in last_line(result.stderr)


@pytest.mark.parametrize("command", [["env"], ["env", "lock"], ["env", "install"], ["env", "fingerprint"], ["env", "wheel"]])
def test_every_env_command_has_help(command):
    result = daskfleet(*command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_make_env_locks_installs_and_prints_the_node_fingerprints_and_a_second_run_does_nothing(
    home, channel, tmp_path
):
    from support import REPO

    envs = tmp_path / "envs"
    write_spec(envs / "team", channel.url, ["alpha ==1.0"], ("linux-64", "linux-aarch64"))
    make = ["make", "--no-print-directory", "env", "ENV=team", f"ENVS_DIR={envs}", f"ENV_PREFIXES={tmp_path / '.envs'}"]
    first = subprocess.run(make, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    lock = read_lock(envs / "team" / "conda-lock.yml")
    assert f"linux-64       {lock.fingerprint('linux-64')}" in first.stdout
    assert f"linux-aarch64  {lock.fingerprint('linux-aarch64')}" in first.stdout
    assert (tmp_path / ".envs" / "team" / "conda-meta").is_dir()
    second = subprocess.run(make, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "is up to date" in second.stdout and "nothing to do" in second.stdout.split("env install")[-1]
