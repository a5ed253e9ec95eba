"""Lock a conda spec for every platform: conda-lock's parser and format, py-rattler's solver.

conda-lock's own CLI needs conda, mamba or micromamba and downloads micromamba when none is
found; py-rattler (on PyPI) solves with no binary to download, so ``daskfleet env lock`` runs
on any machine with Python and access to the channels. conda-lock is still the authority on
the file: its parser reads ``environment.yml``, its content hash says whether the spec
changed, and its model validates and writes the lock (format version 1, which
``conda-lock install``, ``conda-lock render`` and micromamba read).

The solver sees the virtual packages of ``virtual-packages.yml`` (conda-lock's defaults
without ``__cuda``: the nodes are CPU machines); conda-lock's ``--virtual-package-spec``
takes the same file, so both compute the same content hash.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rattler
import yaml
from rattler.exceptions import (
    FetchRepoDataError, GatewayError, InvalidChannelError, InvalidMatchSpecError, InvalidUrlError, IoError, SolverError,
)
from conda_lock.content_hash import compute_content_hashes
from conda_lock.lockfile import write_conda_lock_file
from conda_lock.lockfile.v1.models import Lockfile as LockfileV1
from conda_lock.lockfile.v2prelim.models import LockedDependency, Lockfile, LockMeta
from conda_lock.lookup import DEFAULT_MAPPING_URL
from conda_lock.models.lock_spec import LockSpecification
from conda_lock.src_parser import make_lock_spec
from conda_lock.virtual_package import virtual_package_repo_from_specification

from ..conventions import ENV_PLATFORMS, daskfleet_home
from ..errors import DaskfleetError, ExitCode
from .lockfile import parse_lock

VIRTUAL_PACKAGES_FILE = Path(__file__).with_name("virtual-packages.yml")
#: What a solve reports about the channels or the spec (anything else is a bug and tracebacks).
_SOLVE_ERRORS = (
    FetchRepoDataError, GatewayError, InvalidChannelError, InvalidMatchSpecError, InvalidUrlError, IoError, SolverError,
)
#: Channels' repodata is cached per user, under $DASKFLEET_HOME.
REPODATA_CACHE_DIR = "repodata"
#: The one solve of one platform may take this long.
SOLVE_TIMEOUT = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class LockOutcome:
    lock_path: Path
    platforms: tuple[str, ...]
    changed: bool
    content_hash: dict[str, str]


def spec_platforms(spec_path: Path, requested: Sequence[str] = ()) -> tuple[str, ...]:
    """The platforms to lock: those asked for, else the spec's ``platforms:``, else all of daskfleet's."""
    doc = _read_spec(spec_path)
    if requested:
        return tuple(requested)
    declared = doc.get("platforms")
    if declared is None:
        return ENV_PLATFORMS
    if not isinstance(declared, list) or not all(isinstance(item, str) for item in declared):
        raise DaskfleetError(f"{spec_path}: platforms: expected a list of conda platforms, got {declared!r}", ExitCode.CONFIG)
    return tuple(declared)


def _read_spec(spec_path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(spec_path.read_text())
    except FileNotFoundError:
        raise DaskfleetError(f"{spec_path}: no such environment spec", ExitCode.CONFIG) from None
    except yaml.YAMLError as exc:
        raise DaskfleetError(f"{spec_path}: not YAML ({str(exc).splitlines()[0]})", ExitCode.CONFIG) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("dependencies"), list):
        raise DaskfleetError(f"{spec_path}: dependencies: required list is missing", ExitCode.CONFIG)
    if not doc.get("channels"):
        raise DaskfleetError(f"{spec_path}: channels: required list is missing (e.g. [conda-forge])", ExitCode.CONFIG)
    for entry in doc["dependencies"]:
        if isinstance(entry, dict) and "pip" in entry:
            raise DaskfleetError(
                f"{spec_path}: dependencies.pip: pip packages cannot be locked by daskfleet; use their conda-forge "
                "packages (daskfleet env install still installs pip entries of a lock conda-lock wrote)",
                ExitCode.CONFIG,
            )
        if not isinstance(entry, str):
            raise DaskfleetError(f"{spec_path}: dependencies: {entry!r} is not a conda match spec", ExitCode.CONFIG)
    return doc


def content_hashes(spec_path: Path, platforms: Sequence[str]) -> dict[str, str]:
    """conda-lock's content hash of the spec for each platform (what says "the spec changed").

    The virtual packages count in it, as in ``conda-lock --virtual-package-spec
    virtual-packages.yml``, so each platform has its own hash. (``FakeRepoData`` is not bound by
    ``with``: its ``__enter__`` only clears conda's override variables and returns None.)
    """
    _read_spec(spec_path)
    lock_spec = _lock_spec(spec_path, platforms)
    virtual_package_repo = virtual_package_repo_from_specification(VIRTUAL_PACKAGES_FILE)
    return dict(compute_content_hashes(lock_spec, virtual_package_repo))


def _lock_spec(spec_path: Path, platforms: Sequence[str]) -> LockSpecification:
    try:
        return make_lock_spec(src_files=[spec_path], platform_overrides=list(platforms), mapping_url=DEFAULT_MAPPING_URL)
    except (ValueError, KeyError) as exc:
        raise DaskfleetError(f"{spec_path}: {exc}", ExitCode.CONFIG) from None


def lock_is_current(lock_path: Path, hashes: dict[str, str]) -> bool:
    """Whether the lock at ``lock_path`` was made from a spec with exactly these content hashes."""
    if not lock_path.exists():
        return False
    try:
        lock = parse_lock(lock_path.read_text(), lock_path)
    except DaskfleetError:
        return False
    return set(lock.platforms) == set(hashes) and dict(lock.content_hash) == hashes


def lock_spec_file(spec_path: Path, lock_path: Path, platforms: Sequence[str] = (), *, force: bool = False) -> LockOutcome:
    """Solve ``spec_path`` for each platform and write ``lock_path``; do nothing when the spec is unchanged."""
    platforms = spec_platforms(spec_path, platforms)
    hashes = content_hashes(spec_path, platforms)
    if not force and lock_is_current(lock_path, hashes):
        return LockOutcome(lock_path, platforms, False, hashes)
    lock_spec = _lock_spec(spec_path, platforms)
    packages = []
    for platform in platforms:
        records = asyncio.run(_solve(spec_path, lock_spec, platform))
        packages += [_locked_dependency(record, platform) for record in records]
    relative_source = os.path.relpath(spec_path, lock_path.parent)
    lockfile = Lockfile(
        package=packages,
        metadata=LockMeta(
            content_hash=hashes, channels=[channel.model_dump() for channel in lock_spec.channels],
            platforms=list(platforms), sources=[relative_source],
        ),
    )
    _write_validated(lockfile, lock_path)
    return LockOutcome(lock_path, platforms, True, hashes)


async def _solve(spec_path: Path, lock_spec: LockSpecification, platform: str) -> list[rattler.RepoDataRecord]:
    specs = [_match_spec(dependency) for dependency in lock_spec.dependencies[platform] if dependency.manager == "conda"]
    channels = [rattler.Channel(channel.url) for channel in lock_spec.channels]
    try:
        return await rattler.solve(
            channels, specs, gateway=rattler.Gateway(cache_dir=daskfleet_home() / REPODATA_CACHE_DIR),
            platforms=[platform, "noarch"], virtual_packages=virtual_packages(platform), timeout=SOLVE_TIMEOUT,
        )
    except _SOLVE_ERRORS as exc:  # fetching repodata, or no solution: each one message
        reason = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in reason[:12])
        where = ", ".join(channel.url for channel in lock_spec.channels)
        raise DaskfleetError(
            f"{spec_path}: cannot lock for {platform} from {where}: {detail}", ExitCode.ENVIRONMENT
        ) from None


def _match_spec(dependency: Any) -> str:
    """conda-lock's parsed dependency as a conda match spec string."""
    text = dependency.name
    if getattr(dependency, "conda_channel", None):
        text = f"{dependency.conda_channel}::{text}"
    version = getattr(dependency, "version", "") or ""
    if version and version[0].isalnum() and not any(mark in version for mark in "*,|<>=!~"):
        version = f"=={version}"  # conda-lock writes an exact pin as a bare version; rattler wants the operator
    build = getattr(dependency, "build", None)
    if version or build:
        text += f" {version or '*'}"
    if build:
        text += f" {build}"
    return text


def virtual_packages(platform: str) -> list[rattler.GenericVirtualPackage]:
    """The virtual packages a platform's solve assumes (virtual-packages.yml)."""
    spec = yaml.safe_load(VIRTUAL_PACKAGES_FILE.read_text())["subdirs"]
    if platform not in spec:
        raise DaskfleetError(
            f"platform {platform}: not one of {', '.join(spec)} (virtual-packages.yml)", ExitCode.CONFIG
        )
    packages = []
    for name, text in spec[platform]["packages"].items():
        version, _, build = str(text).partition(" ")
        packages.append(rattler.GenericVirtualPackage(rattler.PackageName(name), rattler.Version(version), rattler.BuildString(build or "0")))
    return packages


def _locked_dependency(record: rattler.RepoDataRecord, platform: str) -> LockedDependency:
    dependencies = {}
    for depend in record.depends:
        name, _, spec = depend.partition(" ")
        dependencies[name] = spec.strip()
    return LockedDependency(
        name=record.name.normalized, version=str(record.version), manager="conda", platform=platform,
        dependencies=dependencies, url=record.url,
        hash={"md5": record.md5.hex() if record.md5 else None, "sha256": record.sha256.hex() if record.sha256 else None},
        build=str(record.build), categories={"main"},
    )


def _write_validated(lockfile: Lockfile, lock_path: Path) -> None:
    """Write through conda-lock's writer beside the lock, validate with its v1 model, then replace the lock."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lock-", dir=lock_path.parent) as scratch:
        partial = Path(scratch) / lock_path.name  # the writer names the file in its help text
        write_conda_lock_file(lockfile, partial, metadata_choices=())
        document = yaml.safe_load(partial.read_text())
        document.pop("version", None)
        LockfileV1.model_validate(document)
        parse_lock(partial.read_text(), lock_path)  # and daskfleet reads what it wrote
        os.chmod(partial, 0o644)
        os.replace(partial, lock_path)
