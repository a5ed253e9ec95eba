"""``daskfleet env publish | status | rollback | sync CLUSTER``: a running cluster's environment, from a laptop."""

from __future__ import annotations

import json
from pathlib import Path

import click

_cluster_options = [
    click.option("--profile", help="AWS profile of your own login (default: the default credential chain)."),
    click.option("--region", help="AWS region of the cluster (default: your profile's)."),
]


def _aws_options(function):
    for option in reversed(_cluster_options):
        function = option(function)
    return function


def _lock_of(env_name: str | None, lock: Path | None) -> Path:
    from ..conventions import ENV_LOCK_FILE
    from ..errors import DaskfleetError, ExitCode

    if (env_name is None) == (lock is None):
        raise DaskfleetError("give the environment's name (ENV) or --lock LOCK, not both", ExitCode.CONFIG)
    path = lock if lock is not None else Path("envs") / env_name / ENV_LOCK_FILE
    if not path.is_file():
        raise DaskfleetError(f"{path}: no such lock file (`make env ENV={env_name}` writes it)", ExitCode.CONFIG)
    return path


@click.command("publish")
@click.argument("cluster")
@click.argument("env_name", metavar="[ENV]", required=False)
@click.option("--lock", type=click.Path(dir_okay=False, path_type=Path), help="A conda-lock file instead of envs/ENV's.")
@click.option("--wheel", type=click.Path(dir_okay=False, path_type=Path),
              help="daskfleet's wheel the nodes install with it (default: built from this checkout).")
@_aws_options
def publish(cluster: str, env_name: str | None, lock: Path | None, wheel: Path | None, profile: str | None,
            region: str | None) -> None:
    """Publish a lock to a running AWS cluster: its nodes switch to it within minutes, no image rebuilt.

    Uploads (with your AWS login) only the packages the cluster's images and bucket lack, then the
    lock, then points the cluster at it. An interrupted publish leaves the cluster as it was.
    """
    from ..aws.published import ClusterTarget, publish as publish_lock
    from ..aws.user import YOUR_IDENTITY, caller_arn, user_session
    from ..environments.cache import PackageCache
    from ..environments.commands import default_cache
    from ..environments.install import daskfleet_wheel_version
    from ..environments.progress import byte_progress
    from ..environments.wheel import find_wheel

    lock_path = _lock_of(env_name, lock)
    cache = PackageCache(default_cache())
    chosen = find_wheel(cache.root, wheel)
    session = user_session(region, profile)
    target = ClusterTarget.resolve(session, cluster, YOUR_IDENTITY)
    with byte_progress("fetching packages") as on_fetch, byte_progress("uploading to the cluster bucket") as on_upload:
        outcome = publish_lock(
            target, lock_path, cache=cache, wheel=chosen, wheel_version=daskfleet_wheel_version(chosen),
            by=caller_arn(session), env_name=env_name, on_fetch=on_fetch, on_upload=on_upload,
        )
    click.echo(f"published {lock_path} to {cluster} (pointer version {outcome.pointer_version}): uploaded "
               f"{len(outcome.uploaded)} package(s) ({outcome.uploaded_bytes / 1e6:.1f} MB); {outcome.on_images} on the "
               f"images, {outcome.already_in_bucket} already in the bucket")
    for platform, fingerprint in sorted(outcome.published.fingerprints.items()):
        click.echo(f"  {platform:<14} {fingerprint}")
        changes = outcome.changes.get(platform)
        for line in (changes.lines() if changes else []):
            click.echo(f"    {line}")
    if outcome.core:
        click.echo(f"core packages change ({', '.join(outcome.core)}): the scheduler restarts into it first")
    click.echo(f"the nodes switch within minutes; watch them with: daskfleet env status {cluster}")


@click.command("status")
@click.argument("cluster")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="A local cluster's state directory.")
@click.option("--address", help="The scheduler's tls:// address (e.g. through an SSM port forward).")
@click.option("--user", help="Your daskfleet user name (default: from your AWS identity).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@_aws_options
def status(cluster: str, state_dir: Path | None, address: str | None, user: str | None, as_json: bool,
           profile: str | None, region: str | None) -> None:
    """Show the published environment, what each node runs, and how far the roll has got."""
    from .environments import env_status, render_status

    view = env_status(cluster, state_dir=state_dir, address=address, user=user, profile=profile, region=region)
    click.echo(json.dumps(view, indent=2) if as_json else render_status(view))


@click.command("rollback")
@click.argument("cluster")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="A local cluster's state directory.")
@_aws_options
def rollback(cluster: str, state_dir: Path | None, profile: str | None, region: str | None) -> None:
    """Point the cluster back at its previous environment (the nodes roll back onto it)."""
    from .connect import local_cluster

    local = local_cluster(cluster, state_dir)
    if local is not None:
        from ..local.environments import rollback as local_rollback

        current, restored = local_rollback(local[1].resolve())
    else:
        from ..aws.published import ClusterTarget, rollback as aws_rollback
        from ..aws.user import YOUR_IDENTITY, caller_arn, user_session

        session = user_session(region, profile)
        done = aws_rollback(ClusterTarget.resolve(session, cluster, YOUR_IDENTITY), by=caller_arn(session))
        current, restored = done.current, done.restored
    for platform, fingerprint in sorted(restored.fingerprints.items()):
        click.echo(f"{cluster} ({platform}): {current.fingerprints.get(platform)} -> {fingerprint}")
    click.echo(f"the nodes roll back within minutes; watch them with: daskfleet env status {cluster}")


@click.command("sync")
@click.argument("cluster")
@click.option("--prefix", type=click.Path(file_okay=False, path_type=Path),
              help="Where to install it (default: $DASKFLEET_HOME/envs/CLUSTER).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="A local cluster's state directory.")
@_aws_options
def sync(cluster: str, prefix: Path | None, state_dir: Path | None, profile: str | None, region: str | None) -> None:
    """Install the cluster's published environment for this laptop, from the conda channels; print its fingerprint."""
    from ..conventions import daskfleet_home
    from .connect import local_cluster

    local = local_cluster(cluster, state_dir)
    if local is not None:
        from ..local.state import ENV_LINK

        link = local[1].resolve() / ENV_LINK
        if not link.exists():
            click.echo(f"local cluster {local[0]!r} runs in daskfleet's own environment: run your client from it")
            return
        click.echo(f"local cluster {local[0]!r} runs {link.resolve()}: run your client with {link}/bin/python")
        return
    from ..aws.published import ClusterTarget, sync as sync_environment
    from ..aws.user import YOUR_IDENTITY, user_session
    from ..environments.cache import PackageCache
    from ..environments.commands import default_cache
    from ..environments.progress import byte_progress

    target = ClusterTarget.resolve(user_session(region, profile), cluster, YOUR_IDENTITY)
    destination = prefix or daskfleet_home() / "envs" / cluster
    with byte_progress(f"installing {cluster}'s environment") as on_bytes:
        report = sync_environment(target, destination, PackageCache(default_cache()), on_bytes=on_bytes)
    click.echo(f"{destination} holds {cluster}'s published environment ({report.platform}): {report.fingerprint}\n"
               f"run your client with {destination}/bin/python")
