"""A package cache shared between prefixes: archives by their hash, verified before they are kept.

``archives/<hash>/<file name>`` holds each conda package or wheel exactly as the lock names it
(sha256 where the lock has one, else md5); an archive enters the cache only after its hash
matched, by an atomic rename, so a cached file is a verified one. ``pkgs/`` holds rattler's
extracted packages, which installs hard-link from. A second install of a lock that differs in
one package fetches and extracts only that package.

Where archives come from is a narrow interface: ``Fetcher`` (the lock's URL here; the cluster
bucket on a node, in a later issue).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import urllib3

from ..errors import DaskfleetError, ExitCode
from .lockfile import LockedPackage

ARCHIVES_DIR = "archives"
EXTRACTED_DIR = "pkgs"
#: Concurrent downloads.
FETCH_WORKERS = 8
_CHUNK = 1 << 20
_HTTP_RETRIES = urllib3.Retry(total=4, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504))


class Fetcher(Protocol):
    """Writes one package archive to a file; raises DaskfleetError(ENVIRONMENT) naming the package."""

    def describe(self, package: LockedPackage) -> str: ...

    def fetch(self, package: LockedPackage, destination: Path, progress: Callable[[int], None]) -> None: ...


class UrlFetcher:
    """Fetches from the URL the lock records: https, http or file."""

    def __init__(self) -> None:
        self._http = urllib3.PoolManager(retries=_HTTP_RETRIES, timeout=urllib3.Timeout(connect=10, read=60))

    def describe(self, package: LockedPackage) -> str:
        return package.url

    def fetch(self, package: LockedPackage, destination: Path, progress: Callable[[int], None]) -> None:
        parts = urlsplit(package.url)
        if parts.scheme == "file":
            self._copy(Path(unquote(parts.path)), destination, package, progress)
        elif parts.scheme in ("http", "https"):
            self._download(destination, package, progress)
        else:
            raise DaskfleetError(f"{package.describe()}: cannot fetch {package.url} (scheme {parts.scheme!r})", ExitCode.ENVIRONMENT)

    @staticmethod
    def _copy(source: Path, destination: Path, package: LockedPackage, progress: Callable[[int], None]) -> None:
        try:
            with source.open("rb") as reader, destination.open("wb") as writer:
                while chunk := reader.read(_CHUNK):
                    writer.write(chunk)
                    progress(len(chunk))
        except FileNotFoundError:
            raise DaskfleetError(f"{package.describe()}: {package.url} does not exist", ExitCode.ENVIRONMENT) from None

    def _download(self, destination: Path, package: LockedPackage, progress: Callable[[int], None]) -> None:
        try:
            response = self._http.request("GET", package.url, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise DaskfleetError(f"{package.describe()}: cannot fetch {package.url} ({exc})", ExitCode.ENVIRONMENT) from None
        try:
            if response.status != 200:
                raise DaskfleetError(
                    f"{package.describe()}: {package.url} answered HTTP {response.status}", ExitCode.ENVIRONMENT
                )
            with destination.open("wb") as writer:
                for chunk in response.stream(_CHUNK):
                    writer.write(chunk)
                    progress(len(chunk))
        except urllib3.exceptions.HTTPError as exc:
            raise DaskfleetError(f"{package.describe()}: download of {package.url} failed ({exc})", ExitCode.ENVIRONMENT) from None
        finally:
            response.release_conn()


@dataclass(frozen=True)
class FetchResult:
    fetched: tuple[LockedPackage, ...]
    cached: tuple[LockedPackage, ...]
    fetched_bytes: int


class PackageCache:
    """A directory of verified archives and extracted packages, shared between prefixes (0700)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def extracted(self) -> Path:
        return self.root / EXTRACTED_DIR

    def archive_path(self, package: LockedPackage) -> Path:
        algorithm, _, digest = package.digest.partition(":")
        key = digest if algorithm == "sha256" else f"{algorithm}-{digest}"
        return self.root / ARCHIVES_DIR / key / package.file_name

    def extracted_packages(self) -> set[str]:
        """``name-version-build`` of every package rattler has unpacked here."""
        if not self.extracted.is_dir():
            return set()
        return {entry.name for entry in self.extracted.iterdir() if entry.is_dir()}

    def has(self, package: LockedPackage) -> bool:
        return self.archive_path(package).is_file()

    def ensure(
        self,
        packages: Iterable[LockedPackage],
        fetcher: Fetcher,
        on_bytes: Callable[[int], None] = lambda _n: None,
    ) -> FetchResult:
        """Fetch every package not yet cached, verifying each; the first failure stops the rest."""
        packages = list(packages)
        missing = [package for package in packages if not self.has(package)]
        cached = [package for package in packages if package not in missing]
        self._make_dirs()
        with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
            sizes = list(pool.map(lambda package: self._fetch_one(package, fetcher, on_bytes), missing))
        return FetchResult(tuple(missing), tuple(cached), sum(sizes))

    def _make_dirs(self) -> None:
        for directory in (self.root, self.root / ARCHIVES_DIR, self.extracted):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)

    def _fetch_one(self, package: LockedPackage, fetcher: Fetcher, on_bytes: Callable[[int], None]) -> int:
        target = self.archive_path(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".fetch-", dir=target.parent)
        os.close(handle)
        partial = Path(temporary)
        try:
            try:
                fetcher.fetch(package, partial, on_bytes)
            except OSError as exc:  # disk full, permissions: say which package and where
                raise DaskfleetError(
                    f"{package.describe()}: cannot write {partial.parent} ({exc.strerror})", ExitCode.ENVIRONMENT
                ) from None
            verify_archive(partial, package, fetcher.describe(package))
            size = partial.stat().st_size
            os.replace(partial, target)
            return size
        finally:
            partial.unlink(missing_ok=True)


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file, in hex."""
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as reader:
        while chunk := reader.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return sha256.hexdigest(), md5.hexdigest()


def verify_archive(path: Path, package: LockedPackage, origin: str) -> None:
    """Refuse an archive whose sha256 (or, where the lock has none, md5) differs from the lock's."""
    sha256, md5 = file_digests(path)
    if package.sha256:
        expected, got, algorithm = package.sha256.lower(), sha256, "sha256"
    else:
        expected, got, algorithm = (package.md5 or "").lower(), md5, "md5"
    if got != expected:
        raise DaskfleetError(
            f"{package.describe()}: {algorithm} of {origin} is {got}, the lock says {expected}; refusing to install it",
            ExitCode.ENVIRONMENT,
        )
