"""Write envs/conda-forge-names.txt: every package name conda-forge's feedstock-outputs registry knows.

conda-forge/feedstock-outputs holds one file per package name a feedstock may publish
(outputs/<a>/<b>/<c>/<name>.json); its single-file branch carries all of them in one
feedstock-outputs.json ({name: [feedstock, ...]}), which this script reads. Standard library
only, so it runs before `make install`:

    python envs/conda_forge_names.py [--out envs/conda-forge-names.txt] [--url URL]

Every failure is one line on stderr and exit status 1; the list is replaced only once the
new one is complete.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

REGISTRY_URL = "https://raw.githubusercontent.com/conda-forge/feedstock-outputs/single-file/feedstock-outputs.json"
DEFAULT_OUT = Path(__file__).with_name("conda-forge-names.txt")
#: What a package name is made of (conda-forge's are lowercase; the check only keeps out garbage).
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*")
#: Names any real registry has; a response without them is not the registry.
SENTINELS = ("python", "numpy")
#: The registry lists tens of thousands of names; far fewer means a truncated or wrong download.
MIN_NAMES = 10_000


class RefreshError(Exception):
    """One line for the person running the refresh."""


def fetch(url: str, timeout: float = 120.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a fixed https URL, or --url)
            return response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RefreshError(f"cannot download {url}: {reason}") from None


def parse_registry(payload: bytes, source: str, min_names: int = MIN_NAMES) -> list[str]:
    """The sorted package names of a feedstock-outputs.json document."""
    try:
        registry = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RefreshError(f"{source}: not JSON ({exc})") from None
    if not isinstance(registry, dict) or not all(isinstance(v, list) for v in registry.values()):
        raise RefreshError(f"{source}: expected a JSON object of package name -> list of feedstocks")
    bad = sorted(name for name in registry if not NAME.fullmatch(name))
    if bad:
        raise RefreshError(f"{source}: not conda package names: {', '.join(bad[:5])}")
    missing = [name for name in SENTINELS if name not in registry]
    if missing or len(registry) < min_names:
        raise RefreshError(
            f"{source}: {len(registry)} names{' without ' + ', '.join(missing) if missing else ''}; "
            f"the registry has at least {min_names}: a truncated or wrong download"
        )
    return sorted(registry)


def render(names: list[str], source: str, refreshed: dt.date) -> str:
    header = f"""\
# conda-forge package names, one a line: what a spec in envs/*/environment.yml may depend on.
# (tests/envs/test_conda_forge_names.py fails naming any dependency that is not listed here.)
#
# source: conda-forge/feedstock-outputs, the registry of every package name a conda-forge feedstock
#   may publish (outputs/<a>/<b>/<c>/<name>.json), read as {source}
# refreshed: {refreshed.isoformat()}, by envs/conda_forge_names.py
# coverage: the complete list ({len(names)} names)
# refresh: `make conda-forge-names` (envs/conda_forge_names.py), on a machine that reaches GitHub.
"""
    return header + "".join(f"{name}\n" for name in names)


def write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=REGISTRY_URL, help="feedstock-outputs.json to read (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the list to write (default: %(default)s)")
    parser.add_argument("--min-names", type=int, default=MIN_NAMES, help=argparse.SUPPRESS)  # tests' small registries
    args = parser.parse_args(argv)
    try:
        names = parse_registry(fetch(args.url), args.url, args.min_names)
    except RefreshError as exc:
        print(f"conda-forge-names: error: {exc}", file=sys.stderr)
        return 1
    write_atomically(args.out, render(names, args.url, dt.date.today()))
    print(f"conda-forge-names: wrote {len(names)} names to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
