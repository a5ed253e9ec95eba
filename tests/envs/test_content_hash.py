"""A lock's content hash is conda-lock's own: `conda-lock --virtual-package-spec` accepts daskfleet's locks as current."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conda_lock.content_hash import backwards_compatible_content_hashes, compute_content_hashes
from conda_lock.lookup import DEFAULT_MAPPING_URL
from conda_lock.src_parser import make_lock_spec
from conda_lock.virtual_package import virtual_package_repo_from_specification

from daskfleet.conventions import ENV_PLATFORMS
from daskfleet.environments import solve

from support import REPO

SPEC = REPO / "envs" / "default" / "environment.yml"


def _conda_lock_hashes(spec, virtual_package_spec):
    """What `conda-lock lock -f SPEC --virtual-package-spec FILE` computes (conda_lock.make_lock_files)."""
    lock_spec = make_lock_spec(src_files=[spec], mapping_url=DEFAULT_MAPPING_URL)
    repo = virtual_package_repo_from_specification(virtual_package_spec)
    return lock_spec, repo, compute_content_hashes(lock_spec, repo)


def test_the_hash_is_conda_locks_own_for_the_same_spec_and_virtual_packages():
    ours = solve.content_hashes(SPEC, ENV_PLATFORMS)
    lock_spec, repo, theirs = _conda_lock_hashes(SPEC, solve.VIRTUAL_PACKAGES_FILE)
    assert ours == theirs
    for platform, digest in ours.items():  # conda-lock's relock check takes the lock as current
        assert digest in backwards_compatible_content_hashes(lock_spec, repo, platform)


def test_each_platform_has_its_own_hash():
    hashes = solve.content_hashes(SPEC, ENV_PLATFORMS)
    assert sorted(hashes) == sorted(ENV_PLATFORMS)
    assert len(set(hashes.values())) == len(ENV_PLATFORMS)


def test_changing_a_platforms_virtual_packages_changes_only_its_hash(tmp_path, monkeypatch):
    before = solve.content_hashes(SPEC, ENV_PLATFORMS)
    edited = tmp_path / "virtual-packages.yml"
    shutil.copy(solve.VIRTUAL_PACKAGES_FILE, edited)
    document = yaml.safe_load(edited.read_text())
    document["subdirs"]["linux-64"]["packages"]["__glibc"] = "2.34"
    edited.write_text(yaml.safe_dump(document))
    monkeypatch.setattr(solve, "VIRTUAL_PACKAGES_FILE", edited)

    after = solve.content_hashes(SPEC, ENV_PLATFORMS)
    assert after["linux-64"] != before["linux-64"]
    assert {p: h for p, h in after.items() if p != "linux-64"} == {p: h for p, h in before.items() if p != "linux-64"}
    assert after == _conda_lock_hashes(SPEC, edited)[2]


@pytest.mark.parametrize("platform", ENV_PLATFORMS)
def test_the_solver_assumes_the_virtual_packages_the_hash_covers(platform):
    declared = yaml.safe_load(solve.VIRTUAL_PACKAGES_FILE.read_text())["subdirs"][platform]["packages"]
    assert sorted(str(package.name.normalized) for package in solve.virtual_packages(platform)) == sorted(declared)
