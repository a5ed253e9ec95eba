"""Describe an installed environment as package records, for conventions.environment_fingerprint.

Three descriptions of an environment are supported: a conda prefix (``conda-meta/*.json``
plus pip-installed distributions), a Python virtual environment (its installed
distributions), and, in a later issue, a conda-lock file for one platform.
"""

from __future__ import annotations

import functools
import json
import platform
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from ..conventions import PackageRecord, environment_fingerprint, normalize_package_name


def conda_meta_records(prefix: Path) -> list[PackageRecord]:
    """Packages conda installed into ``prefix``, with their build strings."""
    records = []
    for path in sorted((prefix / "conda-meta").glob("*.json")):
        doc = json.loads(path.read_text())
        records.append(PackageRecord("conda", doc["name"], doc["version"], doc.get("build", "")))
    return records


def distribution_records(search_path: Sequence[str], *, skip_installer: str | None = None) -> list[PackageRecord]:
    """Installed Python distributions on ``search_path``; the first of each name wins, as imports do."""
    seen: dict[str, PackageRecord] = {}
    for dist in metadata.distributions(path=list(search_path)):
        name = dist.metadata["Name"]
        if not name:
            continue
        key = normalize_package_name(name)
        if key in seen:
            continue
        installer = (dist.read_text("INSTALLER") or "").strip()
        if skip_installer and installer == skip_installer:
            seen[key] = None  # type: ignore[assignment]  # shadowed by conda's own record
            continue
        seen[key] = PackageRecord("pip", key, dist.version)
    return [record for record in seen.values() if record is not None]


def interpreter_record() -> PackageRecord:
    """A virtual environment's interpreter, which no distribution describes."""
    build = f"{sys.implementation.name}-{sysconfig.get_platform()}"
    return PackageRecord("interpreter", "python", platform.python_version(), build)


def installed_site_paths() -> list[str]:
    """This interpreter's site-packages directories: what is installed, not what PYTHONPATH or cwd add."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def environment_records(prefix: str | Path = sys.prefix, search_path: Iterable[str] | None = None) -> list[PackageRecord]:
    """Records of the environment at ``prefix`` (a conda prefix or a virtual environment)."""
    prefix = Path(prefix)
    path = list(installed_site_paths() if search_path is None else search_path)
    if (prefix / "conda-meta").is_dir():
        return conda_meta_records(prefix) + distribution_records(path, skip_installer="conda")
    return [interpreter_record(), *distribution_records(path)]


@functools.cache
def current_fingerprint() -> str:
    """The fingerprint of the environment this process runs in."""
    return environment_fingerprint(environment_records())
