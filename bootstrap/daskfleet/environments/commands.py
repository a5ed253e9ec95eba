"""``daskfleet env …`` and ``daskfleet fingerprint``: environments, their locks and fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..conventions import ENV_LOCK_FILE, ENV_SPEC_FILE, NODE_PLATFORMS, conda_platform, daskfleet_home
from ..errors import DaskfleetError, ExitCode

#: The package cache shared by every prefix this user installs.
PACKAGE_CACHE_DIR = "pkgs"


def default_cache() -> Path:
    return daskfleet_home() / PACKAGE_CACHE_DIR


def resolve_spec(env: str) -> Path:
    """ENV as a spec file, a directory holding one, or a name under ./envs/."""
    candidate = Path(env)
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        return candidate / ENV_SPEC_FILE
    named = Path("envs") / env / ENV_SPEC_FILE
    if named.is_file():
        return named
    raise DaskfleetError(
        f"ENV {env!r}: no {ENV_SPEC_FILE} at {candidate}, in it, or at {named}", ExitCode.CONFIG
    )


@click.group("env")
def env() -> None:
    """Environments: lock a conda spec, install a lock, compute fingerprints."""


@env.command("lock")
@click.argument("env_name", metavar="ENV")
@click.option("--platform", "platforms", multiple=True, metavar="PLATFORM",
              help="Lock only this platform (repeatable; default: the spec's platforms, else all five of daskfleet's).")
@click.option("--force", is_flag=True, help="Solve again even when the spec has not changed.")
def lock(env_name: str, platforms: tuple[str, ...], force: bool) -> None:
    """Solve ENV's environment.yml for every platform and write its conda-lock.yml beside it.

    ENV is a name under ./envs/, a directory, or an environment.yml. Nothing happens when the
    lock was made from the same spec (conda-lock's content hash). Needs the channels, not conda.
    """
    try:
        from .solve import lock_spec_file
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "conda_lock":
            raise
        raise DaskfleetError(
            "daskfleet env lock needs conda-lock's library: install daskfleet with its lock extra "
            "(pip install 'daskfleet[lock]'; the repository's tooling environment has it)",
            ExitCode.CONFIG,
        ) from None
    spec = resolve_spec(env_name)
    outcome = lock_spec_file(spec, spec.parent / ENV_LOCK_FILE, platforms, force=force)
    if outcome.changed:
        click.echo(f"locked {spec} for {', '.join(outcome.platforms)}: wrote {outcome.lock_path}")
    else:
        click.echo(f"{outcome.lock_path} is up to date with {spec}; nothing to do (--force solves again)")


@env.command("install")
@click.argument("lock_path", metavar="LOCK", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--prefix", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The environment to create, or to update in place.")
@click.option("--platform", help="Which platform of the lock (default: this machine's).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Package cache shared between prefixes (default: $DASKFLEET_HOME/pkgs or ~/.daskfleet/pkgs).")
@click.option("--wheel", type=click.Path(dir_okay=False, path_type=Path),
              help="daskfleet's wheel to install after the lock (default: built from this checkout, or the cache's).")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def install(lock_path: Path, prefix: Path, platform: str | None, cache_dir: Path | None, wheel: Path | None,
            as_json: bool) -> None:
    """Install one platform of LOCK into --prefix, verifying every package's hash against the lock.

    Packages come from the lock's URLs through the shared cache: a second install of a lock that
    differs in one package fetches and extracts only that one. daskfleet's own wheel follows.
    """
    from .cache import PackageCache
    from .install import install_lock
    from .lockfile import read_lock
    from .progress import byte_progress
    from .wheel import find_wheel, keep_wheel

    cache = PackageCache(cache_dir or default_cache())
    platform = platform or conda_platform()
    the_lock = read_lock(lock_path)
    chosen = find_wheel(cache.root, wheel)
    with byte_progress(f"fetching {lock_path.name} ({platform})", enabled=not as_json) as on_bytes:
        report = install_lock(the_lock, prefix, platform, cache, wheel=chosen, on_bytes=on_bytes)
    keep_wheel(chosen, cache.root)
    if as_json:
        click.echo(json.dumps({**report.__dict__, "prefix": str(report.prefix)}, indent=2))
    elif report.up_to_date:
        click.echo(f"{prefix} already holds {lock_path} for {platform}; nothing to do\nfingerprint: {report.fingerprint}")
    else:
        click.echo(
            f"installed {lock_path} ({platform}) into {prefix}: fetched {len(report.fetched)} package(s) "
            f"({report.fetched_bytes / 1e6:.1f} MB), {len(report.from_cache)} from the cache; "
            f"extracted {len(report.extracted)}, linked {report.linked}; wheels: {', '.join(report.wheels)}\n"
            f"fingerprint: {report.fingerprint}\n"
            f"use it: {prefix.absolute()}/bin/python, or `conda activate {prefix.absolute()}`"
        )


@env.command("fingerprint")
@click.option("--lock", "lock_path", type=click.Path(dir_okay=False, path_type=Path), help="A conda-lock file.")
@click.option("--platform", "platforms", multiple=True, metavar="PLATFORM",
              help="Platform of --lock (repeatable; default: the node platforms).")
@click.option("--prefix", type=click.Path(file_okay=False, path_type=Path), help="An installed conda prefix.")
@click.option("--json", "as_json", is_flag=True, help="Print {platform or prefix: fingerprint} as JSON.")
def fingerprint_command(lock_path: Path | None, platforms: tuple[str, ...], prefix: Path | None, as_json: bool) -> None:
    """Print the environment fingerprint of a lock's platform(s) or of an installed prefix.

    The two agree for a prefix installed from the lock, and equal what the node agent computes
    at boot; stacks and images name an environment by it.
    """
    if (lock_path is None) == (prefix is None):
        raise DaskfleetError("give exactly one of --lock LOCK (with --platform) or --prefix DIR", ExitCode.CONFIG)
    if prefix is not None:
        if platforms:
            raise DaskfleetError("--platform goes with --lock, not --prefix", ExitCode.CONFIG)
        from .records import is_conda_prefix, prefix_fingerprint

        if not is_conda_prefix(prefix):
            raise DaskfleetError(f"--prefix {prefix}: not a conda prefix (no conda-meta directory)", ExitCode.CONFIG)
        values = {str(prefix): prefix_fingerprint(prefix)}
    else:
        from .lockfile import read_lock

        the_lock = read_lock(lock_path)
        values = {platform: the_lock.fingerprint(platform) for platform in platforms or NODE_PLATFORMS}
    if as_json:
        click.echo(json.dumps(values, indent=2))
    elif len(values) == 1:
        click.echo(next(iter(values.values())))
    else:
        width = max(len(key) for key in values)
        for key, value in values.items():
            click.echo(f"{key:<{width}}  {value}")


@env.command("wheel")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write the wheel into.")
def wheel_command(out_dir: Path) -> None:
    """Build daskfleet's wheel from this checkout (what environments and images install); print its path."""
    from .wheel import build_wheel, source_checkout

    project = source_checkout()
    if project is None:
        raise DaskfleetError("this daskfleet is not an editable install of a checkout: nothing to build from", ExitCode.CONFIG)
    click.echo(build_wheel(project, out_dir))


@click.command()
def fingerprint() -> None:
    """Print the environment fingerprint of this Python environment (what the node agent checks)."""
    from .records import current_fingerprint

    click.echo(current_fingerprint())
