"""Describe an installed environment as package records, for conventions.environment_fingerprint.

Two kinds of environment are described: a conda prefix (its ``conda-meta/*.json`` records
plus the Python distributions that no conda package owns, e.g. daskfleet's own wheel or
pip entries of a lock) and a Python virtual environment (its interpreter and installed
distributions). A lock file describes the same records for one platform
(``daskfleet.environments.lockfile``); for a prefix installed from it, both agree.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from packaging.version import InvalidVersion, Version

from ..conventions import (
    DASKFLEET_DISTRIBUTION, PackageRecord, environment_fingerprint, normalize_package_name, package_hash,
)

#: A distribution's metadata directory inside a conda package's file list.
_DIST_DIR = re.compile(r"(?:^|/)site-packages/(?P<name>[^/]+?)-(?P<version>[^-/]+?)(?:-py[^/]*)?\.(?:dist|egg)-info(?:/|$)")


def _version_key(version: str) -> str:
    """A version as dist-info directory names write it (normalized where it parses)."""
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def is_conda_prefix(prefix: Path) -> bool:
    return (prefix / "conda-meta").is_dir()


def conda_meta_records(prefix: Path) -> tuple[list[PackageRecord], set[tuple[str, str]]]:
    """Packages conda installed into ``prefix``, and the (name, version) of the distributions they own."""
    records, owned = [], set()
    for path in sorted((prefix / "conda-meta").glob("*.json")):
        doc = json.loads(path.read_text())
        records.append(PackageRecord(
            "conda", doc["name"], doc["version"], doc.get("build", ""), package_hash(doc.get("sha256"), doc.get("md5")),
        ))
        for file in doc.get("files", ()):
            if (match := _DIST_DIR.search(file)) is not None:
                owned.add((normalize_package_name(match["name"]), _version_key(match["version"])))
    return records, owned


def _archive_hash(dist: metadata.Distribution) -> str:
    """The sha256 an installer recorded for the archive a distribution came from (PEP 610), if any."""
    try:
        info = json.loads(dist.read_text("direct_url.json") or "{}").get("archive_info") or {}
    except json.JSONDecodeError:
        return ""
    sha256 = (info.get("hashes") or {}).get("sha256")
    if not sha256 and str(info.get("hash", "")).startswith("sha256="):
        sha256 = info["hash"].removeprefix("sha256=")
    return package_hash(sha256, None)


def distribution_records(
    search_path: Sequence[str], *, owned_by_conda: set[tuple[str, str]] = frozenset()  # type: ignore[assignment]
) -> list[PackageRecord]:
    """Installed Python distributions on ``search_path`` that conda does not own; the first of a name wins."""
    seen: dict[str, PackageRecord | None] = {}
    for dist in metadata.distributions(path=list(search_path)):
        name = dist.metadata["Name"]
        if not name:
            continue
        key = normalize_package_name(name)
        if key in seen:
            continue
        if (key, _version_key(dist.version)) in owned_by_conda:
            seen[key] = None  # described by its conda record
            continue
        digest = "" if key == DASKFLEET_DISTRIBUTION else _archive_hash(dist)
        seen[key] = PackageRecord("pip", key, dist.version, "", digest)
    return [record for record in seen.values() if record is not None]


def interpreter_record() -> PackageRecord:
    """A virtual environment's interpreter, which no distribution describes."""
    build = f"{sys.implementation.name}-{sysconfig.get_platform()}"
    return PackageRecord("interpreter", "python", platform.python_version(), build)


def installed_site_paths() -> list[str]:
    """This interpreter's site-packages directories: what is installed, not what PYTHONPATH or cwd add."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def prefix_site_paths(prefix: Path) -> list[str]:
    """The site-packages directories of a conda prefix, found on disk (any Python version, POSIX or Windows)."""
    found = sorted(prefix.glob("lib/python3*/site-packages")) + sorted(prefix.glob("Lib/site-packages"))
    return [str(path) for path in found]


def environment_records(prefix: str | Path = sys.prefix, search_path: Iterable[str] | None = None) -> list[PackageRecord]:
    """Records of the environment at ``prefix`` (a conda prefix or, for this interpreter, a virtual environment)."""
    prefix = Path(prefix)
    if is_conda_prefix(prefix):
        records, owned = conda_meta_records(prefix)
        path = list(prefix_site_paths(prefix) if search_path is None else search_path)
        return records + distribution_records(path, owned_by_conda=owned)
    path = list(installed_site_paths() if search_path is None else search_path)
    return [interpreter_record(), *distribution_records(path)]


def prefix_fingerprint(prefix: str | Path) -> str:
    """The fingerprint of the conda prefix (or this interpreter's virtual environment) at ``prefix``."""
    return environment_fingerprint(environment_records(prefix))


def environment_stamp(prefix: str | Path = sys.prefix, search_path: Iterable[str] | None = None) -> tuple:
    """What changes whenever a package is installed, upgraded or removed: the modification times of the directories
    that list them (``conda-meta``, the site-packages directories). Cheap: one ``stat`` each."""
    prefix = Path(prefix)
    listing = [prefix / "conda-meta", *(installed_site_paths() if search_path is None else search_path)]
    stamp = []
    for path in listing:
        try:
            stamp.append((str(path), os.stat(path).st_mtime_ns))
        except FileNotFoundError:
            continue
    return tuple(stamp)


#: This process's environment fingerprint, under the stamp it was computed at.
_current: tuple[tuple, str] | None = None


def current_fingerprint() -> str:
    """The fingerprint of the environment this process runs in; computed again once its packages changed
    (``environment_stamp``), so a long-lived process (a spare agent) never reports an environment it no longer has."""
    global _current  # noqa: PLW0603  (one value per process)
    search_path = installed_site_paths()
    stamp = environment_stamp(sys.prefix, search_path)
    if _current is None or _current[0] != stamp:
        _current = (stamp, environment_fingerprint(environment_records(sys.prefix, search_path)))
    return _current[1]
