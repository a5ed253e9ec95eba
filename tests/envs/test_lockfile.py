"""Reading conda-lock files: what the fingerprint counts, and one clear error per bad entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from daskfleet.conventions import PackageRecord, environment_fingerprint
from daskfleet.environments.lockfile import build_of, parse_lock
from daskfleet.errors import DaskfleetError, ExitCode

SHA = "a" * 64
MD5 = "b" * 32


def _entry(name="numpy", version="2.4.6", url=None, **changes):
    entry = {
        "name": name, "version": version, "manager": "conda", "platform": "linux-64", "dependencies": {},
        "url": url or f"https://conda.anaconda.org/conda-forge/linux-64/{name}-{version}-py311h_0.conda",
        "hash": {"md5": MD5, "sha256": SHA}, "category": "main", "optional": False,
    }
    entry.update(changes)
    return entry


def _lock(*entries, **metadata):
    document = {
        "version": 1,
        "metadata": {"content_hash": {"linux-64": "c" * 64}, "channels": [{"url": "conda-forge", "used_env_vars": []}],
                     "platforms": ["linux-64"], "sources": ["environment.yml"], **metadata},
        "package": list(entries),
    }
    return yaml.safe_dump(document)


def test_the_fingerprint_counts_resolved_packages_not_where_they_came_from():
    one = parse_lock(_lock(_entry()), Path("a.yml"))
    mirrored = parse_lock(
        _lock(_entry(url="https://mirror.example/cf/linux-64/numpy-2.4.6-py311h_0.conda"), content_hash={"linux-64": "d" * 64}),
        Path("b.yml"),
    )
    assert one.fingerprint("linux-64", "0.1.0") == mirrored.fingerprint("linux-64", "0.1.0")
    rebuilt = parse_lock(_lock(_entry(hash={"md5": MD5, "sha256": "e" * 64})), Path("c.yml"))
    assert rebuilt.fingerprint("linux-64", "0.1.0") != one.fingerprint("linux-64", "0.1.0")
    assert one.fingerprint("linux-64", "0.1.0") != one.fingerprint("linux-64", "0.2.0")


def test_a_locked_platform_holds_its_packages_and_daskfleets_wheel():
    lock = parse_lock(_lock(_entry(), _entry("pytest", "8.0", category="dev", optional=True)), Path("l.yml"))
    assert lock.records("linux-64", "0.1.0") == [
        PackageRecord("conda", "numpy", "2.4.6", "py311h_0", f"sha256:{SHA}"),
        PackageRecord("pip", "daskfleet", "0.1.0"),
    ]
    assert lock.fingerprint("linux-64", "0.1.0") == environment_fingerprint(lock.records("linux-64", "0.1.0"))


def test_a_conda_entry_with_only_md5_counts_its_md5():
    lock = parse_lock(_lock(_entry(hash={"md5": MD5})), Path("l.yml"))
    assert lock.for_platform("linux-64")[0].digest == f"md5:{MD5}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "version: conda-lock format 2 is not supported (expected 1)"),
        ({"package": [_entry(hash={"sha256": "xyz"})]}, "package numpy.hash.sha256: String should match pattern"),
        ({"package": [{k: v for k, v in _entry().items() if k != "url"}]}, "package numpy.url: required key is missing"),
        ({"package": [_entry(manager="brew")]}, "package numpy.manager: Input should be 'conda' or 'pip'"),
        ({"package": [_entry(hash={})]}, "package numpy.hash: neither sha256 nor md5"),
    ],
)
def test_a_bad_lock_is_one_error_naming_the_entry_and_key(change, message):
    document = yaml.safe_load(_lock(_entry()))
    document.update(change)
    with pytest.raises(DaskfleetError) as caught:
        parse_lock(yaml.safe_dump(document), Path("bad.yml"))
    assert caught.value.exit_code == ExitCode.ENVIRONMENT
    assert str(caught.value).startswith("bad.yml: ") and message in str(caught.value)


@pytest.mark.parametrize(
    ("url", "build"),
    [
        ("https://x/linux-64/numpy-2.4.6-py311h_0.conda", "py311h_0"),
        ("https://x/noarch/python-dateutil-2.9.0-pyhd8ed1ab_1.tar.bz2", "pyhd8ed1ab_1"),
        ("https://x/noarch/python-dateutil-2.9.0-pyhd8ed1ab_1.whl", ""),
    ],
)
def test_a_build_string_is_read_from_the_file_name(url, build):
    name, version = ("numpy", "2.4.6") if "numpy" in url else ("python-dateutil", "2.9.0")
    assert build_of(url, name, version) == build
