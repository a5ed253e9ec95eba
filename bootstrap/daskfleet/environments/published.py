"""A cluster's published environment: what the pointer says, and what changed from one to the next.

Publishing a new lock moves a cluster's pointer (on AWS an SSM parameter whose versions are
the history) to a document naming the lock (by its sha256 in the cluster bucket), the
fingerprint each node platform must reach, and the daskfleet wheel nodes install with it. This
module is pure: parsing and writing that document, the package changes between two locks, and
whether a change touches the core packages the scheduler and every client must share.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..conventions import CORE_CONDA_NAMES, CORE_PACKAGES, NODE_PLATFORMS
from ..errors import DaskfleetError, ExitCode
from .lockfile import LockedPackage

_HEX64 = r"^[0-9a-f]{64}$"
_FINGERPRINT = r"^sha256:[0-9a-f]{64}$"


class PublishedWheel(BaseModel):
    """daskfleet's wheel, which nodes install after the lock (its version counts in the fingerprints)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    file_name: str = Field(pattern=r"^daskfleet-[^/]+\.whl$")
    sha256: str = Field(pattern=_HEX64)
    version: str = Field(min_length=1)


class PublishedEnvironment(BaseModel):
    """The pointer's document: which lock the cluster runs, and the fingerprint of each node platform.

    Readers ignore keys they do not know: a newer daskfleet publishes, older nodes read.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    lock_sha256: str = Field(pattern=_HEX64)
    fingerprints: dict[str, str] = Field(min_length=1)
    wheel: PublishedWheel
    #: What each platform's nodes ran before: the scheduler accepts it until every worker has switched.
    replaces: dict[str, list[str]] = {}
    #: Core packages the change touches (python, dask, distributed, …): the scheduler restarts into it.
    core_packages: list[str] = []
    env_name: str | None = None
    #: The local cluster only: where the environment is installed, so a node re-executes itself in it.
    prefix: str | None = None
    published_by: str = Field(min_length=1)
    published_at: str = Field(min_length=1)

    def replaces_for(self, platform: str) -> list[str]:
        return list(self.replaces.get(platform, []))

    def fingerprint_for(self, platform: str) -> str:
        try:
            return self.fingerprints[platform]
        except KeyError:
            raise DaskfleetError(
                f"the published environment has no {platform} build (it has {', '.join(sorted(self.fingerprints))})",
                ExitCode.ENVIRONMENT,
            ) from None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(exclude_none=True), sort_keys=True)


def parse_published(text: str, origin: str) -> PublishedEnvironment:
    """The pointer's document; one DaskfleetError naming the bad key."""
    try:
        raw = json.loads(text)
        published = PublishedEnvironment.model_validate(raw)
    except json.JSONDecodeError as exc:
        raise DaskfleetError(f"{origin}: not JSON ({exc})", ExitCode.ENVIRONMENT) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(document)'}: {error['msg']}" for error in exc.errors()
        )
        raise DaskfleetError(f"{origin}: {problems}", ExitCode.ENVIRONMENT) from None
    for platform, fingerprint in published.fingerprints.items():
        if platform not in NODE_PLATFORMS or not _matches(fingerprint, _FINGERPRINT):
            raise DaskfleetError(f"{origin}: fingerprints.{platform}: not a node platform's fingerprint", ExitCode.ENVIRONMENT)
    return published


def _matches(text: str, pattern: str) -> bool:
    return re.fullmatch(pattern, text) is not None


def now_iso(clock: dt.datetime | None = None) -> str:
    return (clock or dt.datetime.now(dt.timezone.utc)).isoformat(timespec="seconds")


@dataclass(frozen=True)
class PackageChanges:
    """What differs between two environments of one platform, by package name."""

    added: tuple[tuple[str, str], ...] = ()
    removed: tuple[tuple[str, str], ...] = ()
    changed: tuple[tuple[str, str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def names(self) -> set[str]:
        return {entry[0] for entry in (*self.added, *self.removed, *self.changed)}

    def lines(self) -> list[str]:
        """One line per change, for a person: ``+ name version``, ``- name version``, ``~ name old -> new``."""
        return (
            [f"+ {name} {version}" for name, version in self.added]
            + [f"- {name} {version}" for name, version in self.removed]
            + [f"~ {name} {old} -> {new}" for name, old, new in self.changed]
        )


def _versions(packages: Iterable[LockedPackage]) -> dict[str, str]:
    return {package.name: f"{package.version}" + (f" ({package.build})" if package.build else "") for package in packages}


def package_changes(old: Iterable[LockedPackage], new: Iterable[LockedPackage]) -> PackageChanges:
    """Added, removed and changed packages (version or build) from ``old`` to ``new``."""
    before, after = _versions(old), _versions(new)
    return PackageChanges(
        added=tuple(sorted((name, after[name]) for name in after.keys() - before.keys())),
        removed=tuple(sorted((name, before[name]) for name in before.keys() - after.keys())),
        changed=tuple(sorted(
            (name, before[name], after[name]) for name in before.keys() & after.keys() if before[name] != after[name]
        )),
    )


def core_packages_touched(changes: PackageChanges) -> list[str]:
    """The core packages (python, dask, distributed, …) a change adds, removes or changes: the scheduler restarts for them."""
    conda_names = {CORE_CONDA_NAMES.get(name, name): name for name in CORE_PACKAGES}
    return sorted(conda_names[name] for name in changes.names() if name in conda_names)


@dataclass(frozen=True)
class UploadPlan:
    """Which archives a publish must upload: those the images and the bucket do not already hold."""

    to_upload: tuple[LockedPackage, ...]
    on_images: tuple[LockedPackage, ...]
    in_bucket: tuple[LockedPackage, ...] = field(default=())


def plan_uploads(
    packages: Sequence[LockedPackage],
    image_packages: Iterable[LockedPackage],
    in_bucket: Mapping[str, bool] | None = None,
) -> UploadPlan:
    """Each distinct archive of ``packages`` once (noarch ones repeat across platforms), minus what the
    images carry (by hash) and what the bucket already holds (``in_bucket``: digest -> present)."""
    on_image_digests = {package.digest for package in image_packages}
    distinct: dict[str, LockedPackage] = {}
    for package in packages:
        distinct.setdefault(package.digest, package)
    on_images = tuple(package for digest, package in distinct.items() if digest in on_image_digests)
    rest = [package for digest, package in distinct.items() if digest not in on_image_digests]
    present = in_bucket or {}
    return UploadPlan(
        to_upload=tuple(package for package in rest if not present.get(package.digest)),
        on_images=on_images,
        in_bucket=tuple(package for package in rest if present.get(package.digest)),
    )


def describe_history(entries: Sequence[tuple[int, PublishedEnvironment]], platform: str) -> list[dict[str, Any]]:
    """The pointer's versions, newest first, for a person or a script."""
    return [
        {"version": version, "fingerprint": published.fingerprints.get(platform), "env": published.env_name,
         "published_by": published.published_by, "published_at": published.published_at}
        for version, published in sorted(entries, key=lambda entry: entry[0], reverse=True)
    ]
