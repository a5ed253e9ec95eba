"""Install one platform of a lock into a prefix: verified archives, rattler for conda, installer for wheels.

No conda, mamba or micromamba is needed: py-rattler links conda packages, the ``installer``
library installs the lock's pip entries and daskfleet's own wheel (recording each wheel's
sha256 in ``direct_url.json``, which the prefix's fingerprint reads). A new prefix is built
beside its final path and renamed into place once its fingerprint equals the lock's, so a
failed install leaves nothing behind; an existing prefix is updated in place by rattler's
transaction. The prefix's fingerprint is checked against the lock's either way.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import rattler
from installer import install as install_wheel_file
from rattler.exceptions import ExtractError, InstallerError, IoError, LinkError, TransactionError
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from installer.utils import parse_wheel_filename

from ..conventions import DASKFLEET_DISTRIBUTION, normalize_package_name
from ..errors import DaskfleetError, ExitCode
from .cache import Fetcher, PackageCache, UrlFetcher, file_digests
from .lockfile import Lock, LockedPackage
from .records import is_conda_prefix, prefix_fingerprint, prefix_site_paths

#: What rattler reports about the packages or the disk (anything else is a bug and tracebacks).
_LINK_ERRORS = (ExtractError, InstallerError, IoError, LinkError, TransactionError)
#: What ``INSTALLER`` says for the wheels daskfleet installs into a prefix.
INSTALLER_NAME = "daskfleet"


@dataclass
class InstallReport:
    """What an install did, for the user and the tests."""

    prefix: Path
    platform: str
    fingerprint: str
    up_to_date: bool = False
    fetched: list[str] = field(default_factory=list)
    from_cache: list[str] = field(default_factory=list)
    fetched_bytes: int = 0
    extracted: list[str] = field(default_factory=list)
    linked: int = 0
    wheels: list[str] = field(default_factory=list)


class _LinkCounter(rattler.InstallerReporter):
    """Counts the packages rattler linked into the prefix."""

    def __init__(self) -> None:
        self.linked = 0

    def on_link_complete(self, index: int) -> None:
        self.linked += 1


def install_lock(
    lock: Lock,
    prefix: str | Path,
    platform: str,
    cache: PackageCache,
    *,
    wheel: Path,
    fetcher: Fetcher | None = None,
    on_bytes: Callable[[int], None] = lambda _n: None,
) -> InstallReport:
    """Make ``prefix`` hold exactly ``lock``'s packages for ``platform`` plus daskfleet's ``wheel``."""
    prefix = Path(prefix).absolute()
    wheel_version = daskfleet_wheel_version(wheel)
    expected = lock.fingerprint(platform, wheel_version)
    report = InstallReport(prefix, platform, expected)
    wheel_sha256, _ = file_digests(wheel)
    if is_conda_prefix(prefix) and prefix_fingerprint(prefix) == expected and _daskfleet_sha256(prefix) == wheel_sha256:
        report.up_to_date = True
        return report
    packages = lock.for_platform(platform)
    result = cache.ensure(packages, fetcher or UrlFetcher(), on_bytes)
    report.fetched = [package.describe() for package in result.fetched]
    report.from_cache = [package.describe() for package in result.cached]
    report.fetched_bytes = result.fetched_bytes
    fresh = not prefix.exists()
    target = prefix.with_name(f".{prefix.name}.installing-{os.getpid()}") if fresh else prefix
    if fresh:
        shutil.rmtree(target, ignore_errors=True)
    try:
        unpacked_before = cache.extracted_packages()
        report.linked = asyncio.run(_link_conda(packages, cache, target, prefix, platform))
        report.extracted = sorted(cache.extracted_packages() - unpacked_before)
        layout = PrefixLayout.for_prefix(target, prefix, platform, packages)
        report.wheels = _install_wheels(packages, cache, layout, wheel, wheel_sha256)
        found = prefix_fingerprint(target)
        if found != expected:
            raise DaskfleetError(
                f"{prefix}: after the install its fingerprint is {found}, the lock's is {expected}; "
                "something outside the lock changed the prefix",
                ExitCode.ENVIRONMENT,
            )
        if fresh:
            prefix.parent.mkdir(parents=True, exist_ok=True)
            os.rename(target, prefix)
    except BaseException:
        if fresh:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return report


async def _link_conda(
    packages: list[LockedPackage], cache: PackageCache, target: Path, final: Path, platform: str
) -> int:
    """Link the lock's conda packages into ``target`` (placeholders patched for ``final``); how many were linked."""
    records = [await _repodata_record(package, cache) for package in packages if package.manager == "conda"]
    counter = _LinkCounter()
    try:
        await rattler.install(
            records, target, cache_dir=cache.extracted, platform=rattler.Subdir(platform), show_progress=False,
            reporter=counter, alternative_target_prefix=final if target != final else None,
            execute_link_scripts=False,
        )
    except _LINK_ERRORS as exc:
        raise DaskfleetError(f"{final}: linking the conda packages failed: {exc}", ExitCode.ENVIRONMENT) from None
    return counter.linked


async def _repodata_record(package: LockedPackage, cache: PackageCache) -> rattler.RepoDataRecord:
    """The record rattler links ``package`` from: read from its unpacked copy when the cache has one, else
    from the archive. Either way it carries exactly the lock's hashes, which rattler checks the cache against
    and the prefix's fingerprint counts."""
    archive = cache.archive_path(package)
    sha256 = bytes.fromhex(package.sha256) if package.sha256 else None
    md5 = bytes.fromhex(package.md5) if package.md5 else None
    index = cache.extracted / f"{package.name}-{package.version}-{package.build}" / "info" / "index.json"
    if index.is_file():
        info = rattler.PackageRecord.from_index_json(
            index, size=archive.stat().st_size, sha256=package.sha256, md5=package.md5,
        )
        return rattler.RepoDataRecord(info, archive.name, archive.as_uri(), archive.parent.as_uri())
    record = await rattler.RepoDataRecord.from_package_archive(archive)
    record.sha256, record.md5 = sha256, md5
    return record


@dataclass(frozen=True)
class PrefixLayout:
    """Where a wheel's parts go in a conda prefix of one platform."""

    target: Path
    final: Path
    site_packages: Path
    scripts: Path
    interpreter: Path
    script_kind: str

    @classmethod
    def for_prefix(cls, target: Path, final: Path, platform: str, packages: list[LockedPackage]) -> PrefixLayout:
        python = next((package for package in packages if package.manager == "conda" and package.name == "python"), None)
        if platform.startswith("win-"):
            return cls(target, final, target / "Lib" / "site-packages", target / "Scripts", final / "python.exe", "win-amd64")
        if python is None:
            raise DaskfleetError(
                f"the lock has no python package for {platform}: nothing to install wheels for", ExitCode.ENVIRONMENT
            )
        major_minor = ".".join(python.version.split(".")[:2])
        site = target / "lib" / f"python{major_minor}" / "site-packages"
        return cls(target, final, site, target / "bin", final / "bin" / "python", "posix")

    def scheme(self) -> dict[str, str]:
        site = str(self.site_packages)
        return {"purelib": site, "platlib": site, "scripts": str(self.scripts), "data": str(self.target),
                "headers": str(self.target / "include")}


def _install_wheels(
    packages: list[LockedPackage], cache: PackageCache, layout: PrefixLayout, wheel: Path, wheel_sha256: str
) -> list[str]:
    """The lock's pip entries from the cache, then daskfleet's ``wheel`` (whose sha256 the caller read once);
    wheels no longer locked are removed."""
    layout.site_packages.mkdir(parents=True, exist_ok=True)
    wanted = {normalize_package_name(package.name) for package in packages if package.manager == "pip"}
    wanted.add(DASKFLEET_DISTRIBUTION)
    for name in _our_distributions(layout.site_packages) - wanted:
        _remove_distribution(layout.site_packages, name)
    installed = []
    for package in packages:
        if package.manager == "pip":
            _install_wheel(cache.archive_path(package), layout, package.version, package.sha256)
            installed.append(package.describe())
    version = daskfleet_wheel_version(wheel)
    _install_wheel(wheel, layout, version, wheel_sha256)
    installed.append(f"{DASKFLEET_DISTRIBUTION} {version} (wheel)")
    return installed


def _install_wheel(path: Path, layout: PrefixLayout, version: str, sha256: str | None) -> None:
    """Install one wheel (replacing another version of it), recording its sha256 as PEP 610 says."""
    name = normalize_package_name(parse_wheel_filename(path.name).distribution)
    current = _installed_version(layout.site_packages, name)
    if current == version and name != DASKFLEET_DISTRIBUTION:
        return
    if current is not None:
        _remove_distribution(layout.site_packages, name)
    direct_url = {"url": path.absolute().as_uri(), "archive_info": {"hashes": {"sha256": sha256}} if sha256 else {}}
    destination = SchemeDictionaryDestination(
        layout.scheme(), interpreter=str(layout.interpreter), script_kind=layout.script_kind,
    )
    try:
        with WheelFile.open(path) as source:
            install_wheel_file(source, destination, {
                "INSTALLER": INSTALLER_NAME.encode(),
                "direct_url.json": json.dumps(direct_url).encode(),
            })
    except (OSError, ValueError) as exc:
        raise DaskfleetError(f"{path.name}: cannot install into {layout.final} ({exc})", ExitCode.ENVIRONMENT) from None


def _daskfleet_sha256(prefix: Path) -> str | None:
    """The sha256 of the daskfleet wheel installed in ``prefix``, as its direct_url.json records it."""
    for site in prefix_site_paths(prefix):
        for dist in _distributions(Path(site)):
            if normalize_package_name(dist.metadata["Name"] or "") == DASKFLEET_DISTRIBUTION:
                info = json.loads(dist.read_text("direct_url.json") or "{}").get("archive_info") or {}
                return (info.get("hashes") or {}).get("sha256")
    return None


def _distributions(site: Path) -> list[metadata.Distribution]:
    return list(metadata.distributions(path=[str(site)]))


def _installed_version(site: Path, name: str) -> str | None:
    for dist in _distributions(site):
        if normalize_package_name(dist.metadata["Name"] or "") == name:
            return dist.version
    return None


def _our_distributions(site: Path) -> set[str]:
    """Distributions in ``site`` that daskfleet installed (from wheels), by normalized name."""
    return {
        normalize_package_name(dist.metadata["Name"] or "")
        for dist in _distributions(site)
        if (dist.read_text("INSTALLER") or "").strip() == INSTALLER_NAME
    }


def _remove_distribution(site: Path, name: str) -> None:
    """Remove an installed distribution by its RECORD (what pip uninstall does), dist-info last."""
    for dist in _distributions(site):
        if normalize_package_name(dist.metadata["Name"] or "") != name:
            continue
        for entry in dist.files or ():
            path = Path(dist.locate_file(entry))
            if path.is_file() or path.is_symlink():
                path.unlink()
        info_dirs = {Path(dist.locate_file(entry)).parent for entry in dist.files or () if entry.name == "METADATA"}
        for directory in info_dirs:
            shutil.rmtree(directory, ignore_errors=True)


def daskfleet_wheel_version(wheel: Path) -> str:
    """The version of a daskfleet wheel, from its file name; refuses any other wheel."""
    try:
        parsed = parse_wheel_filename(wheel.name)
    except ValueError:
        raise DaskfleetError(f"--wheel {wheel}: not a wheel file name", ExitCode.CONFIG) from None
    if normalize_package_name(parsed.distribution) != DASKFLEET_DISTRIBUTION:
        raise DaskfleetError(f"--wheel {wheel}: a {parsed.distribution} wheel, not daskfleet's", ExitCode.CONFIG)
    if not wheel.is_file():
        raise DaskfleetError(f"--wheel {wheel}: no such file", ExitCode.CONFIG)
    return parsed.version

