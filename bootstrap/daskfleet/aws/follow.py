"""A node's environment step: before the agent starts, install the published environment and switch to it.

It runs as root from the node's unit (``ExecStartPre=-+… daskfleet env follow``) with the
instance role: it reads the cluster's pointer, and when the node's platform is published to a
fingerprint the node does not run yet, it installs the published lock into
``/opt/daskfleet/envs/<short fingerprint>`` (the image's package cache first, the missing
archives from the cluster bucket through the VPC's S3 endpoint, every one verified), then
switches ``/opt/daskfleet/env`` to it atomically. The agent then starts from the new link.

A failure (a missing object, a hash mismatch, a full disk) leaves the node on its previous
environment: the step says so in one line, sends it to the cluster's log group, and records it
for the agent, which tells the scheduler at registration. It does not crash-loop: the unit
ignores the step's exit code, and the scheduler does not ask that node again for that publication.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from .. import conventions
from ..environments.cache import PackageCache
from ..environments.install import daskfleet_wheel_version, install_lock
from ..environments.published import PublishedEnvironment
from ..environments.records import is_conda_prefix, prefix_fingerprint
from ..errors import DaskfleetError, ExitCode
from ..node.spec import parse_spec
from .calls import INSTANCE_ROLE
from .published import BucketFetcher, ClusterBucket, ClusterTarget, published_lock, published_wheel
from .source import AwsSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FollowOutcome:
    """What the step did, in one line for the unit's log."""

    message: str


def _current(link: Path) -> str | None:
    """The fingerprint of the environment ``link`` points at (the name of its directory is its short form)."""
    if not link.exists():
        return None
    target = link.resolve()
    return prefix_fingerprint(target) if is_conda_prefix(target) else None


def switch_link(link: Path, prefix: Path) -> None:
    """Point ``link`` at ``prefix`` atomically (a new link renamed over the old one)."""
    temporary = link.with_name(f".{link.name}.switching")
    temporary.unlink(missing_ok=True)
    os.symlink(os.path.relpath(prefix, link.parent), temporary)
    os.replace(temporary, link)


def record_status(fingerprint: str | None, error: str | None) -> None:
    """What the agent reads at start (conventions.NODE_ENV_STATUS_FILE): the fingerprint wanted, and any error."""
    path = conventions.node_path(conventions.NODE_ENV_STATUS_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"wanted": fingerprint, "error": error, "time": time.time()}
    handle, temporary = tempfile.mkstemp(prefix=".env-status.", dir=path.parent)
    with os.fdopen(handle, "w") as writer:
        writer.write(json.dumps(document))
    os.chmod(temporary, 0o644)  # the agent runs as another (dynamic) user; nothing in it is secret
    os.replace(temporary, path)


def wanted_fingerprint(published: PublishedEnvironment | None) -> str | None:
    """The fingerprint this node's platform is published to, or None when nothing is published."""
    return None if published is None else published.fingerprint_for(conventions.conda_platform())


def follow(source: AwsSource, role: str, published: PublishedEnvironment | None) -> FollowOutcome:
    """Install and switch to ``published`` (the pointer ``source`` read) when this node does not run it yet."""
    wanted = wanted_fingerprint(published)
    if wanted is None:
        record_status(None, None)
        return FollowOutcome("no environment is published to this cluster: the image's environment stays")
    platform = conventions.conda_platform()
    link = conventions.node_path(conventions.NODE_ENV_LINK)
    if _current(link) == wanted:
        record_status(wanted, None)
        return FollowOutcome(f"already runs the published environment {wanted}")
    prefix = conventions.node_path(conventions.node_env_prefix(wanted))
    if is_conda_prefix(prefix) and prefix_fingerprint(prefix) == wanted:  # e.g. back to the image's environment
        switch_link(link, prefix)
        record_status(wanted, None)
        return FollowOutcome(f"switched back to {wanted}, still installed at {prefix}")
    spec = parse_spec(source.fetch_spec(role), origin=f"node spec from {source.describe()}")
    if not spec.bucket:
        raise DaskfleetError(f"node spec from {source.describe()}: bucket: not set; redeploy the stack", ExitCode.SPEC_INVALID)
    target = ClusterTarget(source.cluster, spec.bucket, spec.expected_fingerprint, source.client("s3"),
                           source.client("ssm"), INSTANCE_ROLE, spec.kms_key)
    cache = PackageCache(conventions.node_path(conventions.NODE_PACKAGE_CACHE))
    with tempfile.TemporaryDirectory(prefix="daskfleet-follow-") as scratch:
        lock = published_lock(target, published, Path(scratch))
        # Before anything is fetched or installed: the prefix is named by ``wanted``, its content must be it.
        installs = lock.fingerprint(platform, published.wheel.version)
        if installs != wanted:
            raise DaskfleetError(
                f"the published lock installs {installs}, but the pointer says {wanted}; keeping the current environment",
                ExitCode.ENVIRONMENT,
            )
        wheel = published_wheel(target, published, cache)
        if daskfleet_wheel_version(wheel) != published.wheel.version:
            raise DaskfleetError(
                f"{wheel.name}: its version is not {published.wheel.version}, the pointer's; keeping the current environment",
                ExitCode.ENVIRONMENT,
            )
        report = install_lock(lock, prefix, platform, cache, wheel=wheel, fetcher=BucketFetcher(ClusterBucket(target)))
    switch_link(link, prefix)
    record_status(wanted, None)
    fetched = f"{len(report.fetched)} package(s) from the bucket, {len(report.from_cache)} from the image's cache"
    return FollowOutcome(f"switched to {wanted} ({fetched})")


def report_failure(source: AwsSource, error: DaskfleetError, wanted: str | None) -> None:
    """Record a failed step for the agent and send its line to the cluster's log group (best effort)."""
    record_status(wanted, error.message)
    try:
        logs = source.client("logs")
        stream = f"environment/{source.instance_id()}"
        try:
            logs.create_log_stream(logGroupName=conventions.log_group_name(source.cluster), logStreamName=stream)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        logs.put_log_events(
            logGroupName=conventions.log_group_name(source.cluster), logStreamName=stream,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": f"daskfleet env follow: error: {error.message}"}],
        )
    except (ClientError, BotoCoreError, DaskfleetError) as exc:  # the failure itself is already recorded
        log.warning("could not send the error to the cluster's log group: %s", exc)
