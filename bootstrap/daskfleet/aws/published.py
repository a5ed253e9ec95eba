"""A cluster's published environment on AWS: archives in its bucket, the pointer in SSM Parameter Store.

Publishing uploads, with the publisher's own AWS login, only the archives the cluster's images
and bucket lack (content-addressed by hash, SSE-KMS with the cluster key), then the lock and
daskfleet's wheel, and moves the pointer last: an interrupted publish leaves the cluster on its
previous environment. The pointer's parameter versions are the history that ``rollback`` walks
back. Nodes read the same objects through their instance role (``follow``), laptops too
(``sync``), each archive verified against the lock before it is used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3.exceptions
from botocore.exceptions import BotoCoreError, ClientError

from .. import conventions
from ..environments.cache import PackageCache, UrlFetcher
from ..environments.install import InstallReport, install_lock
from ..environments.lockfile import Lock, LockedPackage, parse_lock
from ..environments.published import (
    PackageChanges, PublishedEnvironment, PublishedWheel, core_packages_touched, now_iso, package_changes, parse_published,
    plan_uploads,
)
from ..environments.wheel import WHEELS_DIR
from ..errors import DaskfleetError, ExitCode
from .calls import BOTO_CONFIG, Caller, aws_failure, call_aws, error_code
from .pointer import read_pointer
from ..node.spec import load_spec_document

_MISSING_OBJECT = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class ClusterTarget:
    """Where a cluster keeps its environments: its bucket, key, pointer, and the image's fingerprint."""

    cluster: str
    bucket: str
    image_fingerprint: str | None
    s3: Any
    ssm: Any
    caller: Caller
    #: The fleet key's ARN from the spec; None for a spec from before fleets (the key is then the cluster's alias).
    kms_key: str | None = None

    @classmethod
    def resolve(cls, session: Any, cluster: str, caller: Caller) -> ClusterTarget:
        """Read the cluster's worker spec (SSM) for its bucket and the fingerprint its image carries."""
        ssm = session.client("ssm", config=BOTO_CONFIG)
        name = conventions.spec_parameter_name(cluster, "worker")
        response = call_aws(
            ssm, "GetParameter", f"SSM parameter {name}", caller, missing=ExitCode.CONFIG,
            missing_hint=f"is {cluster!r} a deployed cluster in {ssm.meta.region_name}?", Name=name, WithDecryption=True,
        )
        spec = load_spec_document(response["Parameter"]["Value"], f"SSM parameter {name}")
        bucket = spec.get("bucket")
        if not isinstance(bucket, str) or not bucket:
            raise DaskfleetError(
                f"SSM parameter {name}: names no cluster bucket; redeploy the stack with this daskfleet (make up)",
                ExitCode.CONFIG,
            )
        key = spec.get("kms_key")
        return cls(cluster, bucket, spec.get("expected_fingerprint"), session.client("s3", config=BOTO_CONFIG), ssm, caller,
                   key if isinstance(key, str) and key else None)

    @property
    def pointer(self) -> str:
        return conventions.published_env_parameter_name(self.cluster)


class ClusterBucket:
    """The cluster bucket's environment objects: exists, read, upload (SSE-KMS with the cluster key), download."""

    def __init__(self, target: ClusterTarget):
        self.target = target
        self.client = target.s3
        self.name = target.bucket

    def _fail(self, exc: BaseException, operation: str, key: str) -> DaskfleetError:
        return aws_failure(exc, self.client, operation, f"s3://{self.name}/{key}", self.target.caller, missing=ExitCode.ENVIRONMENT)

    def has(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if error_code(exc) in _MISSING_OBJECT:
                return False
            raise self._fail(exc, "HeadObject", key) from None
        except BotoCoreError as exc:
            raise self._fail(exc, "HeadObject", key) from None
        return True

    def read(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except ClientError as exc:
            if error_code(exc) in _MISSING_OBJECT:
                return None
            raise self._fail(exc, "GetObject", key) from None
        except BotoCoreError as exc:
            raise self._fail(exc, "GetObject", key) from None

    def upload(self, key: str, path: Path, on_bytes: Callable[[int], None] = lambda _n: None) -> None:
        # The fleet's key as the spec names it; a spec from before fleets names none (its alias is the cluster's).
        encryption_key = self.target.kms_key or conventions.kms_alias(self.target.cluster)
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": encryption_key}
        try:
            self.client.upload_file(str(path), self.name, key, ExtraArgs=extra, Callback=on_bytes)
        except boto3.exceptions.S3UploadFailedError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, (ClientError, BotoCoreError)) else None
            if cause is not None:
                raise self._fail(cause, "PutObject", key) from None
            raise DaskfleetError(f"s3://{self.name}/{key}: upload failed ({exc})", ExitCode.ENVIRONMENT) from None
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "PutObject", key) from None

    def download(self, key: str, destination: Path, on_bytes: Callable[[int], None] = lambda _n: None) -> None:
        try:
            self.client.download_file(self.name, key, str(destination), Callback=on_bytes)
        except ClientError as exc:
            if error_code(exc) in _MISSING_OBJECT:
                raise DaskfleetError(f"s3://{self.name}/{key}: no such object", ExitCode.ENVIRONMENT) from None
            raise self._fail(exc, "GetObject", key) from None
        except BotoCoreError as exc:
            raise self._fail(exc, "GetObject", key) from None


class BucketFetcher:
    """Fetches a lock's archives from the cluster bucket (through the VPC's S3 endpoint on a node)."""

    def __init__(self, bucket: ClusterBucket):
        self.bucket = bucket

    def describe(self, package: LockedPackage) -> str:
        return f"s3://{self.bucket.name}/{conventions.package_object_key(package.digest)}"

    def fetch(self, package: LockedPackage, destination: Path, progress: Callable[[int], None]) -> None:
        self.bucket.download(conventions.package_object_key(package.digest), destination, progress)


# --- the pointer -------------------------------------------------------------------------------


def read_published(target: ClusterTarget) -> PublishedEnvironment | None:
    """The cluster's published environment, or None when nothing was ever published."""
    return read_pointer(target.ssm, target.cluster, target.caller)


def published_history(target: ClusterTarget) -> list[tuple[int, PublishedEnvironment]]:
    """Every version of the pointer, oldest first."""
    entries, token = [], None
    while True:
        params = {"Name": target.pointer, **({"NextToken": token} if token else {})}
        response = call_aws(
            target.ssm, "GetParameterHistory", f"SSM parameter {target.pointer}", target.caller,
            missing=ExitCode.ENVIRONMENT, missing_hint="nothing was published to this cluster yet", **params,
        )
        for entry in response.get("Parameters", []):
            entries.append((int(entry["Version"]), parse_published(entry["Value"], f"{target.pointer} version {entry['Version']}")))
        token = response.get("NextToken")
        if not token:
            return sorted(entries, key=lambda entry: entry[0])


def _point(target: ClusterTarget, published: PublishedEnvironment) -> int:
    response = call_aws(
        target.ssm, "PutParameter", f"SSM parameter {target.pointer}", target.caller, missing=ExitCode.ENVIRONMENT,
        Name=target.pointer, Value=published.to_json(), Type="String", Overwrite=True,
        Description=f"daskfleet {target.cluster}: the published environment (its versions are the history)",
    )
    return int(response["Version"])


@dataclass(frozen=True)
class Rollback:
    current: PublishedEnvironment
    restored: PublishedEnvironment
    pointer_version: int


def rollback(target: ClusterTarget, *, by: str, clock: Any = None) -> Rollback:
    """Point the cluster back at the newest earlier version whose environment differs from the current one."""
    history = published_history(target)
    current = history[-1][1]
    for _, earlier in reversed(history[:-1]):
        if earlier.fingerprints != current.fingerprints:
            restored = earlier.model_copy(update={"published_by": by, "published_at": now_iso(clock)})
            return Rollback(current, earlier, _point(target, restored))
    raise DaskfleetError(
        f"SSM parameter {target.pointer}: no earlier environment differs from the current one; nothing to roll back to",
        ExitCode.ENVIRONMENT,
    )


# --- publishing ------------------------------------------------------------------------------------


@dataclass
class PublishOutcome:
    published: PublishedEnvironment
    previous: PublishedEnvironment | None
    pointer_version: int
    changes: dict[str, PackageChanges] = field(default_factory=dict)
    core: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0
    on_images: int = 0
    already_in_bucket: int = 0


def _stored_lock(bucket: ClusterBucket, key: str, origin: str) -> Lock | None:
    data = bucket.read(key)
    return None if data is None else parse_lock(data.decode(), Path(origin))


def _node_platforms(lock: Lock) -> list[str]:
    platforms = [platform for platform in conventions.NODE_PLATFORMS if platform in lock.platforms]
    if not platforms:
        raise DaskfleetError(
            f"{lock.path}: locked for {', '.join(lock.platforms)}, none a node platform ({', '.join(conventions.NODE_PLATFORMS)})",
            ExitCode.ENVIRONMENT,
        )
    return platforms


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def publish(
    target: ClusterTarget,
    lock_path: Path,
    *,
    cache: PackageCache,
    wheel: Path,
    wheel_version: str,
    by: str,
    env_name: str | None = None,
    on_fetch: Callable[[int], None] = lambda _n: None,
    on_upload: Callable[[int], None] = lambda _n: None,
    clock: Any = None,
) -> PublishOutcome:
    """Upload what the cluster lacks, then the lock and wheel, then move the pointer (last)."""
    bucket = ClusterBucket(target)
    lock = parse_lock(lock_path.read_text(), lock_path)
    platforms = _node_platforms(lock)
    previous = read_published(target)
    wheel_sha256 = _sha256(wheel)
    image_lock = (
        _stored_lock(bucket, conventions.image_lock_object_key(target.image_fingerprint), "the images' lock")
        if target.image_fingerprint else None
    )
    if previous is not None:
        before = _stored_lock(bucket, conventions.lock_object_key(previous.lock_sha256), "the published lock")
    else:
        before = image_lock
        previous = _record_baseline(target, bucket, image_lock, wheel, wheel_sha256, wheel_version, by, clock)
    packages = [package for platform in platforms for package in lock.for_platform(platform)]
    image_packages = [package for platform in platforms if image_lock and platform in image_lock.platforms
                      for package in image_lock.for_platform(platform)]
    rough = plan_uploads(packages, image_packages)
    present = {package.digest: bucket.has(conventions.package_object_key(package.digest)) for package in rough.to_upload}
    plan = plan_uploads(packages, image_packages, present)
    cache.ensure(plan.to_upload, UrlFetcher(), on_fetch)  # verified against the lock before any upload
    uploaded_bytes = 0
    for package in plan.to_upload:
        archive = cache.archive_path(package)
        bucket.upload(conventions.package_object_key(package.digest), archive, on_upload)
        uploaded_bytes += archive.stat().st_size
    wheel_key = conventions.wheel_object_key(wheel_sha256, wheel.name)
    if not bucket.has(wheel_key):
        bucket.upload(wheel_key, wheel, on_upload)
    lock_sha256 = _sha256(lock_path)
    lock_key = conventions.lock_object_key(lock_sha256)
    if not bucket.has(lock_key):
        bucket.upload(lock_key, lock_path, on_upload)
    changes = {
        platform: package_changes(before.for_platform(platform) if before and platform in before.platforms else [],
                                  lock.for_platform(platform))
        for platform in platforms
    }
    core = sorted({name for change in changes.values() for name in core_packages_touched(change)}) if before else []
    fingerprints = {platform: lock.fingerprint(platform, wheel_version) for platform in platforms}
    replaces = {platform: sorted({fp for fp in ([previous.fingerprints.get(platform)] if previous else [])
                                  + ([target.image_fingerprint] if target.image_fingerprint else [])
                                  if fp and fp != fingerprints[platform]})
                for platform in platforms}
    published = PublishedEnvironment(
        lock_sha256=lock_sha256, fingerprints=fingerprints,
        wheel=PublishedWheel(file_name=wheel.name, sha256=wheel_sha256, version=wheel_version),
        replaces={platform: values for platform, values in replaces.items() if values}, core_packages=core,
        env_name=env_name, published_by=by, published_at=now_iso(clock),
    )
    version = _point(target, published)
    return PublishOutcome(
        published=published, previous=previous, pointer_version=version, changes=changes, core=core,
        uploaded=[package.describe() for package in plan.to_upload], uploaded_bytes=uploaded_bytes,
        on_images=len(plan.on_images), already_in_bucket=len(plan.in_bucket),
    )


def _record_baseline(
    target: ClusterTarget, bucket: ClusterBucket, image_lock: Lock | None, wheel: Path, wheel_sha256: str,
    wheel_version: str, by: str, clock: Any,
) -> PublishedEnvironment | None:
    """Before the first publication, the images' environment as the pointer's first version, so that
    ``rollback`` can return to it. Only when the images' lock is in the bucket and gives their fingerprint."""
    if image_lock is None or not target.image_fingerprint:
        return None
    platforms = [p for p in _node_platforms(image_lock) if image_lock.fingerprint(p, wheel_version) == target.image_fingerprint]
    if not platforms:
        return None
    data = bucket.read(conventions.image_lock_object_key(target.image_fingerprint)) or b""
    lock_sha256 = hashlib.sha256(data).hexdigest()
    key = conventions.lock_object_key(lock_sha256)
    if not bucket.has(key):
        with tempfile.NamedTemporaryFile(suffix=".yml") as copy:
            copy.write(data)
            copy.flush()
            bucket.upload(key, Path(copy.name))
    baseline = PublishedEnvironment(
        lock_sha256=lock_sha256, fingerprints={platform: target.image_fingerprint for platform in platforms},
        wheel=PublishedWheel(file_name=wheel.name, sha256=wheel_sha256, version=wheel_version),
        env_name="image", published_by=by, published_at=now_iso(clock),
    )
    _point(target, baseline)
    return baseline


# --- installing a published environment (nodes and laptops) -------------------------------------


def published_lock(target: ClusterTarget, published: PublishedEnvironment, directory: Path) -> Lock:
    """The published lock, fetched from the bucket and checked against the sha256 the pointer names."""
    bucket = ClusterBucket(target)
    key = conventions.lock_object_key(published.lock_sha256)
    data = bucket.read(key)
    if data is None:
        raise DaskfleetError(f"s3://{bucket.name}/{key}: the published lock is missing", ExitCode.ENVIRONMENT)
    if hashlib.sha256(data).hexdigest() != published.lock_sha256:
        raise DaskfleetError(f"s3://{bucket.name}/{key}: its sha256 differs from the pointer's; refusing it", ExitCode.ENVIRONMENT)
    path = directory / f"{published.lock_sha256}.yml"
    path.write_bytes(data)
    return parse_lock(data.decode(), path)


def published_wheel(target: ClusterTarget, published: PublishedEnvironment, cache: PackageCache) -> Path:
    """daskfleet's published wheel in the cache's wheels directory, fetched from the bucket and verified."""
    kept = cache.root / WHEELS_DIR / published.wheel.file_name
    if kept.is_file() and _sha256(kept) == published.wheel.sha256:
        return kept
    kept.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".wheel-", dir=kept.parent)
    os.close(handle)
    partial = Path(temporary)
    try:
        ClusterBucket(target).download(conventions.wheel_object_key(published.wheel.sha256, published.wheel.file_name), partial)
        if _sha256(partial) != published.wheel.sha256:
            raise DaskfleetError(
                f"{published.wheel.file_name}: its sha256 differs from the published one; refusing it", ExitCode.ENVIRONMENT
            )
        os.replace(partial, kept)
    finally:
        partial.unlink(missing_ok=True)
    return kept


def sync(target: ClusterTarget, prefix: Path, cache: PackageCache, *, platform: str | None = None,
         on_bytes: Callable[[int], None] = lambda _n: None) -> InstallReport:
    """Install the published lock for this laptop's platform into ``prefix``, packages from their channels."""
    published = read_published(target)
    if published is None:
        raise DaskfleetError(f"cluster {target.cluster}: no environment was published yet", ExitCode.ENVIRONMENT)
    with tempfile.TemporaryDirectory(prefix="daskfleet-sync-") as scratch:
        lock = published_lock(target, published, Path(scratch))
        wheel = published_wheel(target, published, cache)
        return install_lock(lock, prefix, platform or conventions.conda_platform(), cache, wheel=wheel, on_bytes=on_bytes)
