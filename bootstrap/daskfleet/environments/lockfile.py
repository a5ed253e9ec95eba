"""Read a conda-lock file (format version 1), and the fingerprint it names for one platform.

Nodes read locks without conda-lock installed, so this reader validates only what daskfleet
uses, with an error that names the entry and key. Writing goes through conda-lock's own
model and writer (``daskfleet.environments.solve``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..conventions import DASKFLEET_DISTRIBUTION, PackageRecord, environment_fingerprint, package_hash
from ..errors import DaskfleetError, ExitCode

LOCK_FORMAT_VERSION = 1
#: Locks of real environments run to thousands of lines: parse them with libyaml where PyYAML has it.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: conda-lock installs this category unless asked for others.
MAIN_CATEGORY = "main"
_CONDA_SUFFIXES = (".conda", ".tar.bz2")


class _Hash(BaseModel):
    model_config = ConfigDict(extra="ignore")

    md5: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{32}$")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    manager: Literal["conda", "pip"]
    platform: str = Field(min_length=1)
    url: str = Field(min_length=1)
    hash: _Hash
    dependencies: dict[str, str] = {}
    build: str | None = None
    category: str = MAIN_CATEGORY
    optional: bool = False


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    platforms: list[str]
    content_hash: dict[str, str] = {}
    channels: list[Any] = []
    sources: list[str] = []


class _LockDocument(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal[1]
    metadata: _Metadata
    package: list[_Entry]


@dataclass(frozen=True)
class LockedPackage:
    """One package of a lock for one platform."""

    manager: str
    name: str
    version: str
    platform: str
    url: str
    md5: str | None
    sha256: str | None
    build: str
    dependencies: Mapping[str, str] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return PurePosixPath(unquote(urlsplit(self.url).path)).name

    @property
    def digest(self) -> str:
        """What identifies the archive: ``sha256:<hex>``, or ``md5:<hex>`` where the lock has no sha256."""
        return package_hash(self.sha256, self.md5)

    def describe(self) -> str:
        return f"{self.name} {self.version}" + (f" ({self.build})" if self.build else "")

    def record(self) -> PackageRecord:
        return PackageRecord(self.manager, self.name, self.version, self.build, self.digest)


@dataclass(frozen=True)
class Lock:
    """A conda-lock file: its platforms, input hashes and packages."""

    path: Path
    platforms: tuple[str, ...]
    content_hash: Mapping[str, str]
    channels: tuple[str, ...]
    packages: tuple[LockedPackage, ...]

    def for_platform(self, platform: str) -> list[LockedPackage]:
        """The packages conda-lock would install for ``platform`` (its main category)."""
        if platform not in self.platforms:
            raise DaskfleetError(
                f"{self.path}: locked for {', '.join(self.platforms)}, not {platform}", ExitCode.ENVIRONMENT
            )
        return [package for package in self.packages if package.platform == platform]

    def records(self, platform: str, daskfleet_version: str | None = None) -> list[PackageRecord]:
        """What an environment installed from this lock for ``platform`` holds, daskfleet's wheel included."""
        packages = self.for_platform(platform)
        records = [package.record() for package in packages]
        if not any(package.name == DASKFLEET_DISTRIBUTION for package in packages):
            records.append(PackageRecord("pip", DASKFLEET_DISTRIBUTION, daskfleet_version or own_version()))
        return records

    def fingerprint(self, platform: str, daskfleet_version: str | None = None) -> str:
        return environment_fingerprint(self.records(platform, daskfleet_version))


def own_version() -> str:
    """The version of the daskfleet that installs environments (and whose wheel goes into them)."""
    return metadata.version(DASKFLEET_DISTRIBUTION)


def build_of(url: str, name: str, version: str) -> str:
    """A conda package's build string from its file name ``<name>-<version>-<build>.<ext>``."""
    file_name = PurePosixPath(unquote(urlsplit(url).path)).name
    for suffix in _CONDA_SUFFIXES:
        if file_name.endswith(suffix):
            stem = file_name.removesuffix(suffix)
            prefix = f"{name}-{version}-"
            return stem.removeprefix(prefix) if stem.startswith(prefix) else stem.rsplit("-", 1)[-1]
    return ""


def _describe(error: Mapping[str, Any], doc: Mapping[str, Any]) -> str:
    location = list(error["loc"])
    where = ".".join(str(part) for part in location) or "(document)"
    if location[:1] == ["package"] and len(location) > 1 and isinstance(location[1], int):
        entries = doc.get("package") or []
        entry = entries[location[1]] if location[1] < len(entries) else {}
        name = entry.get("name") if isinstance(entry, Mapping) else None
        where = f"package {name or location[1]}" + ("." + ".".join(str(part) for part in location[2:]) if location[2:] else "")
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def parse_lock(text: str, path: Path) -> Lock:
    """Validate a conda-lock document; one DaskfleetError naming every bad entry and key."""
    try:
        doc = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506  (a safe loader; libyaml's when present)
    except yaml.YAMLError as exc:
        raise DaskfleetError(f"{path}: not YAML ({str(exc).splitlines()[0]})", ExitCode.ENVIRONMENT) from None
    if not isinstance(doc, Mapping):
        raise DaskfleetError(f"{path}: not a conda-lock file (expected a mapping)", ExitCode.ENVIRONMENT)
    if doc.get("version") != LOCK_FORMAT_VERSION:
        raise DaskfleetError(
            f"{path}: version: conda-lock format {doc.get('version')!r} is not supported (expected {LOCK_FORMAT_VERSION})",
            ExitCode.ENVIRONMENT,
        )
    try:
        parsed = _LockDocument.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(_describe(error, doc) for error in exc.errors())
        raise DaskfleetError(f"{path}: {problems}", ExitCode.ENVIRONMENT) from None
    packages = []
    for entry in parsed.package:
        if entry.category != MAIN_CATEGORY or entry.optional:
            continue
        if not (entry.hash.sha256 or entry.hash.md5):
            raise DaskfleetError(f"{path}: package {entry.name}.hash: neither sha256 nor md5", ExitCode.ENVIRONMENT)
        build = entry.build or (build_of(entry.url, entry.name, entry.version) if entry.manager == "conda" else "")
        packages.append(LockedPackage(
            manager=entry.manager, name=entry.name, version=entry.version, platform=entry.platform, url=entry.url,
            md5=entry.hash.md5, sha256=entry.hash.sha256, build=build, dependencies=dict(entry.dependencies),
        ))
    channels = tuple(str(channel.get("url") if isinstance(channel, Mapping) else channel) for channel in parsed.metadata.channels)
    return Lock(path, tuple(parsed.metadata.platforms), dict(parsed.metadata.content_hash), channels, tuple(packages))


def read_lock(path: str | Path) -> Lock:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DaskfleetError(f"{path}: no such lock file", ExitCode.ENVIRONMENT) from None
    except OSError as exc:
        raise DaskfleetError(f"{path}: cannot read ({exc.strerror})", ExitCode.ENVIRONMENT) from None
    return parse_lock(text, path)
