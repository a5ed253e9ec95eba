"""The environment fingerprint: stable, order-free, and the same from each description."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from daskfleet.conventions import PackageRecord, environment_fingerprint, short_fingerprint
from daskfleet.environments.records import current_fingerprint, environment_records


def _fake_conda_prefix(root, packages, pip_packages=()):
    (root / "conda-meta").mkdir(parents=True)
    for name, version, build in packages:
        (root / "conda-meta" / f"{name}-{version}-{build}.json").write_text(
            json.dumps({"name": name, "version": version, "build": build, "subdir": "linux-64"})
        )
    site = root / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    for name, version, installer in pip_packages:
        dist = site / f"{name}-{version}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (dist / "INSTALLER").write_text(installer + "\n")
    return root, [str(site)]


def test_fingerprint_ignores_order_and_duplicates():
    one = [PackageRecord("conda", "numpy", "2.0.0", "py311_0"), PackageRecord("pip", "Foo_Bar", "1.0")]
    assert environment_fingerprint(one) == environment_fingerprint(list(reversed(one)) + one[:1])
    assert environment_fingerprint(one) != environment_fingerprint(one[:1])


def test_conda_prefix_is_described_by_conda_meta_and_pip_installed_distributions(tmp_path):
    prefix, path = _fake_conda_prefix(
        tmp_path, [("python", "3.11.7", "h955ad1f_0"), ("numpy", "2.0.0", "py311_0")],
        [("numpy", "2.0.0", "conda"), ("tiny-thing", "0.3", "pip")],
    )
    records = environment_records(prefix, path)
    assert sorted(records) == sorted([
        PackageRecord("conda", "python", "3.11.7", "h955ad1f_0"),
        PackageRecord("conda", "numpy", "2.0.0", "py311_0"),
        PackageRecord("pip", "tiny-thing", "0.3"),
    ])


def test_a_build_string_changes_the_fingerprint(tmp_path):
    a, pa = _fake_conda_prefix(tmp_path / "a", [("numpy", "2.0.0", "openblas_0")])
    b, pb = _fake_conda_prefix(tmp_path / "b", [("numpy", "2.0.0", "mkl_0")])
    assert environment_fingerprint(environment_records(a, pa)) != environment_fingerprint(environment_records(b, pb))


def test_this_virtual_environment_has_a_stable_fingerprint(tmp_path):
    names = {record.name for record in environment_records(sys.prefix)}
    assert {"python", "dask", "distributed"} <= names
    assert len(short_fingerprint(current_fingerprint())) == 16
    # The working directory and PYTHONPATH are not the installed environment: they change nothing.
    stray = tmp_path / "stray"
    (stray / "toolz-0.1.dist-info").mkdir(parents=True)
    (stray / "toolz-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toolz\nVersion: 0.1\n")
    elsewhere = subprocess.run(
        [sys.executable, "-m", "daskfleet", "fingerprint"], cwd=stray, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(stray)},
    )
    assert elsewhere.stdout.strip() == current_fingerprint()
