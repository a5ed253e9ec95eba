"""The published-environment document, the changes between two locks, and what a publish uploads."""

from __future__ import annotations

import json

import pytest

from daskfleet.environments.lockfile import LockedPackage
from daskfleet.environments.published import (
    core_packages_touched, package_changes, parse_published, plan_uploads,
)
from daskfleet.errors import DaskfleetError

FP = "sha256:" + "1" * 64
DOC = {
    "lock_sha256": "a" * 64, "fingerprints": {"linux-64": FP},
    "wheel": {"file_name": "daskfleet-0.1.0-py3-none-any.whl", "sha256": "b" * 64, "version": "0.1.0"},
    "published_by": "arn:aws:iam::123456789012:role/alice", "published_at": "2026-11-30T00:00:00+00:00",
}


def package(name, version, build="py_0", sha=None, platform="linux-64"):
    return LockedPackage("conda", name, version, platform, f"https://x/{name}-{version}-{build}.conda", "0" * 32,
                         sha or (name + version).encode().hex().ljust(64, "0")[:64], build)


def test_a_newer_publishers_keys_do_not_stop_an_older_reader():
    published = parse_published(json.dumps({**DOC, "some_future_key": {"x": 1}}), "pointer")
    assert published.fingerprint_for("linux-64") == FP and published.replaces_for("linux-64") == []


@pytest.mark.parametrize(("change", "message"), [
    ({"fingerprints": {"osx-arm64": FP}}, "fingerprints.osx-arm64: not a node platform's fingerprint"),
    ({"fingerprints": {"linux-64": "sha1:abc"}}, "fingerprints.linux-64: not a node platform's fingerprint"),
    ({"lock_sha256": "xyz"}, "lock_sha256: String should match pattern"),
])
def test_a_broken_pointer_is_one_error_naming_the_key(change, message):
    with pytest.raises(DaskfleetError, match=message):
        parse_published(json.dumps({**DOC, **change}), "pointer")


def test_changes_name_added_removed_and_changed_packages_and_the_core_ones_among_them():
    old = [package("numpy", "2.4.6"), package("msgpack-python", "1.1.0"), package("attrs", "25.1")]
    new = [package("numpy", "2.4.6", "py_1"), package("msgpack-python", "1.1.1"), package("scikit-learn", "1.7.2")]
    changes = package_changes(old, new)
    assert changes.lines() == [
        "+ scikit-learn 1.7.2 (py_0)", "- attrs 25.1 (py_0)",
        "~ msgpack-python 1.1.0 (py_0) -> 1.1.1 (py_0)", "~ numpy 2.4.6 (py_0) -> 2.4.6 (py_1)",
    ]
    assert core_packages_touched(changes) == ["msgpack", "numpy"]  # distributed's names, as clients compare them
    assert not package_changes(old, old)


def test_a_publish_uploads_each_archive_once_and_only_what_the_images_and_bucket_lack():
    shared = package("tzdata", "2025b", platform="linux-64")
    noarch_again = package("tzdata", "2025b", platform="linux-aarch64", sha=shared.sha256)
    on_image = package("python", "3.11.14")
    in_bucket = package("pandas", "3.0.6")
    new = package("scikit-learn", "1.7.2")
    plan = plan_uploads([shared, noarch_again, on_image, in_bucket, new], [on_image], {in_bucket.digest: True})
    assert [p.name for p in plan.to_upload] == ["tzdata", "scikit-learn"]
    assert plan.on_images == (on_image,) and plan.in_bucket == (in_bucket,)
