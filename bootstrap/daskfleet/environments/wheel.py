"""daskfleet's own wheel, which every environment installs after its lock (daskfleet is on no channel).

From a checkout the wheel is built with hatchling (the project's build backend, in the
tooling environment); an installed daskfleet that is no checkout (a node) finds the wheel
its image kept in the package cache.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..conventions import DASKFLEET_DISTRIBUTION
from ..errors import DaskfleetError, ExitCode
from .lockfile import own_version

#: Where a package cache keeps daskfleet wheels.
WHEELS_DIR = "wheels"


def source_checkout() -> Path | None:
    """The project directory when this daskfleet is an editable install of a checkout (PEP 610 dir_info)."""
    try:
        text = metadata.distribution(DASKFLEET_DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    info = json.loads(text or "{}")
    if not (info.get("dir_info") or {}).get("editable"):
        return None
    root = Path(unquote(urlsplit(info["url"]).path))
    return root if (root / "pyproject.toml").is_file() else None


def build_wheel(project: Path, out_dir: Path) -> Path:
    """Build daskfleet's wheel from ``project`` into ``out_dir`` with hatchling; the wheel's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    script = "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))"
    completed = subprocess.run(
        [sys.executable, "-c", script, str(out_dir.absolute())], cwd=project, capture_output=True, text=True,
    )
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise DaskfleetError(f"cannot build daskfleet's wheel from {project} with hatchling: {last}", ExitCode.ENVIRONMENT)
    return out_dir / completed.stdout.strip().splitlines()[-1]


def find_wheel(cache_root: Path, explicit: Path | None = None) -> Path:
    """The daskfleet wheel an install puts into the prefix: given, built from this checkout, or the cache's."""
    if explicit is not None:
        return explicit
    kept = cache_root / WHEELS_DIR
    project = source_checkout()
    if project is not None:
        return build_wheel(project, kept)
    cached = sorted(kept.glob(f"{DASKFLEET_DISTRIBUTION}-{own_version()}-*.whl"))
    if cached:
        return cached[-1]
    raise DaskfleetError(
        f"no daskfleet {own_version()} wheel: pass --wheel, or keep one in {kept} (images do)", ExitCode.CONFIG,
    )


def keep_wheel(wheel: Path, cache_root: Path) -> Path:
    """Copy ``wheel`` into the package cache, for later installs on a machine that has no checkout."""
    kept = cache_root / WHEELS_DIR / wheel.name
    if wheel.absolute() != kept.absolute():
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wheel, kept)
    return kept
