"""The environment fingerprint: stable, order-free, and the same from each description."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from daskfleet.conventions import PackageRecord, environment_fingerprint, short_fingerprint
from daskfleet.environments.records import current_fingerprint, environment_records


SITE = "lib/python3.11/site-packages"


def _fake_conda_prefix(root, packages, dists=(), owned=()):
    """conda-meta records (name, version, build[, sha256]) and dist-info directories; ``owned`` names the
    (package, dist-info directory) pairs a conda record lists in its files, as conda packages of Python code do."""
    (root / "conda-meta").mkdir(parents=True)
    for name, version, build, *digest in packages:
        files = [f"{SITE}/{info}/METADATA" for package, info in owned if package == name]
        (root / "conda-meta" / f"{name}-{version}-{build}.json").write_text(json.dumps({
            "name": name, "version": version, "build": build, "subdir": "linux-64", "files": files,
            **({"sha256": digest[0], "md5": "0" * 32} if digest else {}),
        }))
    site = root / SITE
    site.mkdir(parents=True)
    for name, version, direct_url in dists:
        dist = site / f"{name}-{version}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        if direct_url is not None:
            (dist / "direct_url.json").write_text(json.dumps(direct_url))
    return root, [str(site)]


def test_fingerprint_ignores_order_and_duplicates():
    one = [PackageRecord("conda", "numpy", "2.0.0", "py311_0"), PackageRecord("pip", "Foo_Bar", "1.0")]
    assert environment_fingerprint(one) == environment_fingerprint(list(reversed(one)) + one[:1])
    assert environment_fingerprint(one) != environment_fingerprint(one[:1])


def test_conda_prefix_is_described_by_conda_meta_and_the_distributions_no_conda_package_owns(tmp_path):
    wheel_sha = "ab" * 32
    prefix, path = _fake_conda_prefix(
        tmp_path, [("python", "3.11.7", "h955ad1f_0", "cd" * 32), ("numpy", "2.0.0", "py311_0")],
        [("numpy", "2.0.0", None), ("tiny_thing", "0.3", {"url": "https://x/t.whl", "archive_info": {"hashes": {"sha256": wheel_sha}}}),
         ("daskfleet", "0.1.0", {"url": "file:///w.whl", "archive_info": {"hashes": {"sha256": "ef" * 32}}})],
        owned=[("numpy", "numpy-2.0.0.dist-info")],
    )
    records = environment_records(prefix, path)
    assert sorted(records) == sorted([
        PackageRecord("conda", "python", "3.11.7", "h955ad1f_0", f"sha256:{'cd' * 32}"),
        PackageRecord("conda", "numpy", "2.0.0", "py311_0"),
        PackageRecord("pip", "tiny-thing", "0.3", "", f"sha256:{wheel_sha}"),
        # daskfleet's wheel counts by its version: its hash changes with every build
        PackageRecord("pip", "daskfleet", "0.1.0"),
    ])


def test_a_distribution_installed_over_a_conda_package_changes_the_fingerprint(tmp_path):
    """pip-installing on a node by hand is drift the fingerprint must show."""
    conda = [("numpy", "2.0.0", "py311_0")]
    owned = [("numpy", "numpy-2.0.0.dist-info")]
    clean, clean_path = _fake_conda_prefix(tmp_path / "clean", conda, [("numpy", "2.0.0", None)], owned)
    drifted, drifted_path = _fake_conda_prefix(tmp_path / "drifted", conda, [("numpy", "2.1.0", None)], owned)
    assert environment_fingerprint(environment_records(clean, clean_path)) != environment_fingerprint(
        environment_records(drifted, drifted_path)
    )


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
