"""Publishing an environment to the local cluster: the same switch as on AWS, on one machine.

``publish`` installs a lock into ``<state>/envs/<short fingerprint>`` from the shared package
cache, points ``<state>/env`` at it (local nodes start with its interpreter, see
``state.node_python``), and writes the publication into every node directory, where the
scheduler's rollout reads it (``DirectorySource.published_environment``): the scheduler then
rolls the workers onto it, a few at a time, without stopping the cluster. ``rollback`` points
back at the previous publication, whose prefix is still on disk.
"""

from __future__ import annotations

import getpass
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import conventions
from ..environments.cache import PackageCache, file_digests
from ..environments.install import InstallReport, install_lock
from ..environments.lockfile import read_lock
from ..environments.published import PublishedEnvironment, PublishedWheel, now_iso, parse_published
from ..environments.records import current_fingerprint
from ..errors import DaskfleetError, ExitCode
from ..node.sources import PUBLISHED_FILE
from ..trust.pki import write_private
from .state import ENV_LINK, LocalCluster, node_python

ENVS_DIR = "envs"
HISTORY_FILE = "env-history.jsonl"
#: The core packages' versions an interpreter has installed (its metadata; nothing is imported, so it takes
#: milliseconds); the same script on both sides of a switch.
_VERSIONS = (
    "import json, sys, importlib.metadata as m\n"
    "def v(n):\n    try:\n        return m.version(n)\n    except m.PackageNotFoundError:\n        return None\n"
    "print(json.dumps({'python': '.'.join(map(str, sys.version_info[:3])), **{n: v(n) for n in sys.argv[1:]}}))"
)


@dataclass(frozen=True)
class LocalPublication:
    published: PublishedEnvironment
    previous: str
    report: InstallReport


def _running(state_dir: Path) -> LocalCluster:
    cluster = LocalCluster.load(state_dir)
    if cluster is None or not cluster.running():
        raise DaskfleetError(f"no local cluster runs from {state_dir}: `daskfleet local up` starts one", ExitCode.CONFIG)
    return cluster


def current_publication(state_dir: Path) -> PublishedEnvironment | None:
    path = state_dir / "nodes" / "scheduler" / PUBLISHED_FILE
    return parse_published(path.read_text(), str(path)) if path.exists() else None


def _core_versions(python: str) -> dict[str, str | None]:
    """The core packages' versions an interpreter reports, as the scheduler compares them for clients."""
    names = [name for name in conventions.CORE_PACKAGES if name != "python"]
    result = subprocess.run([python, "-c", _VERSIONS, *names], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DaskfleetError(f"{python} cannot report its packages: {last}", ExitCode.ENVIRONMENT)
    return json.loads(result.stdout)


def _core_changes(old_python: str, new_python: str) -> list[str]:
    old, new = _core_versions(old_python), _core_versions(new_python)
    return sorted(name for name in conventions.CORE_PACKAGES if old.get(name) != new.get(name))


def _switch(state_dir: Path, prefix: Path) -> None:
    link = state_dir / ENV_LINK
    temporary = state_dir / f".{ENV_LINK}.switching"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(prefix.relative_to(state_dir))
    temporary.replace(link)


def _announce(state_dir: Path, published: PublishedEnvironment) -> None:
    """The publication, in every node directory (the scheduler's rollout reads it), and in the history."""
    for node_dir in sorted((state_dir / "nodes").iterdir()):
        if node_dir.is_dir():
            write_private(node_dir / PUBLISHED_FILE, published.to_json())
    with (state_dir / HISTORY_FILE).open("a") as history:
        history.write(published.to_json() + "\n")


def publish(state_dir: Path, lock_path: Path, *, cache: PackageCache, wheel: Path, wheel_version: str) -> LocalPublication:
    """Install ``lock_path`` for this machine beside the cluster and roll the cluster onto it."""
    _running(state_dir)
    platform = conventions.conda_platform()
    lock = read_lock(lock_path)
    fingerprint = lock.fingerprint(platform, wheel_version)
    previous = current_publication(state_dir)
    before = previous.fingerprint_for(platform) if previous else current_fingerprint()
    prefix = state_dir / ENVS_DIR / conventions.short_fingerprint(fingerprint)
    old_python = node_python(state_dir)
    report = install_lock(lock, prefix, platform, cache, wheel=wheel)
    core = _core_changes(old_python, str(prefix / "bin" / "python")) if before != fingerprint else []
    published = PublishedEnvironment(
        lock_sha256=file_digests(lock_path)[0], fingerprints={platform: fingerprint},
        wheel=PublishedWheel(file_name=wheel.name, sha256=file_digests(wheel)[0], version=wheel_version),
        replaces={platform: [before]} if before != fingerprint else {}, core_packages=core,
        prefix=str(prefix), published_by=getpass.getuser(), published_at=now_iso(),
    )
    _switch(state_dir, prefix)
    _announce(state_dir, published)
    return LocalPublication(published, before, report)


def history(state_dir: Path) -> list[PublishedEnvironment]:
    path = state_dir / HISTORY_FILE
    if not path.exists():
        return []
    return [parse_published(line, f"{path}:{number}") for number, line in enumerate(path.read_text().splitlines(), 1) if line]


def rollback(state_dir: Path) -> tuple[PublishedEnvironment, PublishedEnvironment]:
    """Point the local cluster back at the newest earlier publication that differs from the current one."""
    _running(state_dir)
    platform = conventions.conda_platform()
    entries = history(state_dir)
    if not entries:
        raise DaskfleetError(f"nothing was published to the local cluster of {state_dir}", ExitCode.ENVIRONMENT)
    current = entries[-1]
    for earlier in reversed(entries[:-1]):
        if earlier.fingerprints != current.fingerprints:
            target = earlier.fingerprint_for(platform)
            prefix = state_dir / ENVS_DIR / conventions.short_fingerprint(target)
            if not prefix.is_dir():
                raise DaskfleetError(f"{prefix}: the earlier environment is no longer installed", ExitCode.ENVIRONMENT)
            restored = earlier.model_copy(update={
                "replaces": {platform: [current.fingerprint_for(platform)]}, "prefix": str(prefix),
                "published_by": getpass.getuser(),
                "published_at": now_iso(),
                "core_packages": _core_changes(node_python(state_dir), str(prefix / "bin" / "python")),
            })
            _switch(state_dir, prefix)
            _announce(state_dir, restored)
            return current, restored
    raise DaskfleetError("no earlier environment differs from the current one; nothing to roll back to", ExitCode.ENVIRONMENT)
