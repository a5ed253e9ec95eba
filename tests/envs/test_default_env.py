"""envs/default: the spec every node and client runs, held together with the tooling environment."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from envs.test_lock_and_install import locked

from daskfleet.conventions import ENV_PLATFORMS
from daskfleet.environments.lockfile import read_lock

from support import REPO

SPEC = REPO / "envs" / "default" / "environment.yml"
#: conda-forge names of PyPI distributions, where they differ.
CONDA_NAMES = {"installer": "python-installer", "prometheus-client": "prometheus_client"}
#: Channels on this machine (the tests' channel, a directory): a lock solved against them is never committed.
LOCAL_CHANNEL = re.compile(r"(file:|https?://(127\.|localhost))")


def _spec_pins() -> dict[str, str | None]:
    """conda name -> exact version where the spec pins one with ==, else None."""
    pins = {}
    for entry in yaml.safe_load(SPEC.read_text())["dependencies"]:
        name, _, constraint = entry.partition(" ")
        exact = re.fullmatch(r"==\s*([^,|*]+)", constraint.strip())
        pins[name] = exact.group(1) if exact else None
    return pins


def _uv_versions() -> dict[str, set[str]]:
    versions: dict[str, set[str]] = {}
    for package in tomllib.loads((REPO / "uv.lock").read_text())["package"]:
        versions.setdefault(package["name"], set()).add(package["version"])
    return versions


def _conda_name(requirement: str) -> str:
    name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
    return CONDA_NAMES.get(name, name)


def test_the_tooling_environment_runs_the_versions_the_default_env_pins():
    uv = _uv_versions()
    pypi_names = {conda: pypi for pypi, conda in CONDA_NAMES.items()}
    compared = 0
    for name, version in _spec_pins().items():
        pypi = pypi_names.get(name, name)
        if version is None or pypi not in uv:
            continue
        compared += 1
        assert uv[pypi] == {version}, f"{name}: envs/default pins {version}, uv.lock has {sorted(uv[pypi])}"
    assert compared >= 8  # dask, distributed, numpy, pandas, pyarrow, s3fs, bokeh, prometheus_client


def test_the_default_env_carries_every_runtime_dependency_of_daskfleet():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    missing = {_conda_name(requirement) for requirement in project["dependencies"]} - set(_spec_pins())
    assert not missing, f"envs/default/environment.yml lacks daskfleet's runtime dependencies {sorted(missing)}"


def test_the_default_env_is_locked_for_every_platform_from_a_real_channel():
    spec = yaml.safe_load(SPEC.read_text())
    assert spec["platforms"] == list(ENV_PLATFORMS)
    assert spec["channels"] == ["conda-forge"]
    for name in ("pandas", "pyarrow", "numpy", "s3fs", "dask", "distributed"):
        assert _spec_pins()[name], f"{name} is not pinned"


def _not_from_real_channels(path) -> list[str]:
    """What shows a lock was not solved against real channels: a local channel, a package not fetched over https."""
    lock = read_lock(path)
    return ([f"channel {url}" for url in lock.channels if LOCAL_CHANNEL.match(url)]
            + [f"package {package.url}" for package in lock.packages if not package.url.startswith("https://")])


def _fabricated_lock(path, channel: str, package_url: str):
    path.write_text(yaml.safe_dump({
        "version": 1,
        "metadata": {"platforms": ["linux-64"], "channels": [{"url": channel, "used_env_vars": []}]},
        "package": [{"name": "alpha", "version": "1.0", "manager": "conda", "platform": "linux-64",
                     "url": package_url, "hash": {"sha256": "a" * 64}}],
    }))
    return path


def test_committed_locks_come_from_real_channels():
    """Only a real solve against real channels is committed: never a lock of the tests' channel."""
    for lock in sorted((REPO / "envs").glob("*/conda-lock.yml")):
        assert _not_from_real_channels(lock) == [], lock


@pytest.mark.parametrize("channel, package_url, refused", [
    ("conda-forge", "https://conda.anaconda.org/conda-forge/noarch/alpha-1.0-py_0.conda", []),
    ("http://127.0.0.1:8123/channel", "http://127.0.0.1:8123/channel/noarch/alpha-1.0-py_0.conda",
     ["channel http://127.0.0.1:8123/channel", "package http://127.0.0.1:8123/channel/noarch/alpha-1.0-py_0.conda"]),
    ("file:///tmp/channel", "file:///tmp/channel/noarch/alpha-1.0-py_0.conda",
     ["channel file:///tmp/channel", "package file:///tmp/channel/noarch/alpha-1.0-py_0.conda"]),
    ("https://localhost:8443/channel", "https://conda.anaconda.org/conda-forge/noarch/alpha-1.0-py_0.conda",
     ["channel https://localhost:8443/channel"]),
])
def test_a_lock_of_a_local_channel_is_refused_for_committing(tmp_path, channel, package_url, refused):
    assert _not_from_real_channels(_fabricated_lock(tmp_path / "conda-lock.yml", channel, package_url)) == refused


def test_a_lock_of_the_tests_channel_is_refused_for_committing(home, channel, tmp_path):
    assert _not_from_real_channels(locked(tmp_path, channel, "local", ["alpha ==1.0"]))
