"""The node agent's AWS source: identity and tags from IMDSv2, the spec from SSM, TLS from Secrets Manager.

Everything is read through the instance role (boto3's default credential chain) with
bounded retries. User data names only the cluster (``--source aws:<cluster>``); the role
comes from the agent's command line, and both are cross-checked against the instance's
tags so that a worker cannot boot as a scheduler by a typo.

Test overrides: botocore honours ``AWS_ENDPOINT_URL`` (a moto server in the tests), and
``DASKFLEET_IMDS_ENDPOINT`` points instance metadata at a local endpoint. The latter is
for tests only; when it is set the agent logs a warning.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..environments.published import PublishedEnvironment
from ..node.spec import load_spec_document
from ..node.supervision import Outcome
from ..scaling.defaults import DEFAULT_BOOT_FAILURE_LIMIT, DEFAULT_BOOT_FAILURE_WINDOW_S
from ..trust.tls import TlsMaterial
from .calls import BOTO_CONFIG, INSTANCE_ROLE, Deadline, call_aws, fetch_tls_secret
from ..usage.records import STREAM_PREFIX
from .cloudwatch import CloudWatchLines
from .imds import ImdsClient, ImdsError
from .nodefailures import NodeFailure, launch_versions, read_failures, repeated_failures, report_failure
from .workers import AutoScalingWorkers
from .usagerecords import read_usage_lines

log = logging.getLogger(__name__)

#: Tests only: base URL of an IMDSv2 endpoint used instead of the link-local one.
IMDS_ENDPOINT_ENV = "DASKFLEET_IMDS_ENDPOINT"
DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254"

#: No new remote call starts once one fetch (spec, TLS, DNS record) has taken this long.
DEADLINE_SECONDS = 120.0

# --- instance metadata ------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceIdentity:
    """What instance metadata says about this instance."""

    instance_id: str
    region: str
    private_ipv4: str
    tags: Mapping[str, str]
    instance_type: str = "unknown"
    purchase: str = "on-demand"


def read_instance_identity(metadata: ImdsClient, deadline: Deadline) -> InstanceIdentity:
    """Instance id, region, private IPv4 and tags through IMDSv2; never falls back to IMDSv1."""
    with _imds_step(metadata, "the instance id", deadline):
        instance_id = metadata.read("meta-data/instance-id")
    with _imds_step(metadata, "the instance identity document", deadline):
        region = json.loads(metadata.read("dynamic/instance-identity/document"))["region"]
    with _imds_step(metadata, "the private IPv4 address", deadline):
        private_ipv4 = metadata.read("meta-data/local-ipv4")
    with _imds_step(metadata, "instance tags (the launch template must enable instance_metadata_tags)", deadline):
        keys = metadata.tag_keys()
        tags = {key: value for key in (conventions.TAG_CLUSTER, conventions.TAG_ROLE)
                if key in keys and (value := metadata.tag(key)) is not None}
    with _imds_step(metadata, "the instance type and life cycle", deadline):
        instance_type = metadata.read("meta-data/instance-type")
        purchase = metadata.read("meta-data/instance-life-cycle")
    return InstanceIdentity(
        instance_id=instance_id, region=region, private_ipv4=private_ipv4, tags=tags,
        instance_type=instance_type, purchase="spot" if purchase == "spot" else "on-demand",
    )


def read_leaving_notice(metadata: ImdsClient) -> tuple[bool, str | None]:
    """(terminating, spot notice): the group's lifecycle state is ``Terminated``; a spot interruption notice."""
    terminating = metadata.read_optional("meta-data/autoscaling/target-lifecycle-state") == "Terminated"
    if terminating:
        return True, None
    text = metadata.read_optional("meta-data/spot/instance-action")
    if text is None:
        return False, None
    try:
        notice = json.loads(text)
        at = dt.datetime.fromisoformat(notice["time"].replace("Z", "+00:00")).astimezone(dt.timezone.utc)
        return False, f"{notice['action']} at {at:%H:%M:%S} UTC"
    except (ValueError, KeyError, TypeError, AttributeError):
        return False, "unreadable notice"


@contextmanager
def _imds_step(metadata: ImdsClient, what: str, deadline: Deadline) -> Iterator[None]:
    """Turns one IMDS read's failure into a one-line SOURCE_UNAVAILABLE naming what was read."""
    deadline.check(f"reading {what} from instance metadata")
    try:
        yield
    except ImdsError as exc:
        reason = exc.reason
    except (ValueError, KeyError, TypeError) as exc:  # a malformed identity document
        reason = f"unexpected response ({type(exc).__name__})"
    else:
        return
    endpoint = metadata.base.removesuffix("/latest/")
    raise DaskfleetError(
        f"instance metadata (IMDSv2) at {endpoint}: cannot read {what}: {reason}", ExitCode.SOURCE_UNAVAILABLE
    )


# --- the source ---------------------------------------------------------------------------------


class AwsSource:
    """NodeSource on EC2: IMDSv2 identity and tags, SSM Parameter Store spec, Secrets Manager TLS."""

    def __init__(
        self, cluster: str, *, imds_endpoint: str | None = None, deadline_s: float = DEADLINE_SECONDS,
        vendor_transport: Any = None,
    ):
        if not re.fullmatch(conventions.CLUSTER_NAME_PATTERN, cluster):
            raise DaskfleetError(
                f"--source aws:<cluster>: cluster name {cluster!r} does not match {conventions.CLUSTER_NAME_PATTERN}",
                ExitCode.CONFIG,
            )
        self.cluster = cluster
        override = os.environ.get(IMDS_ENDPOINT_ENV)
        if imds_endpoint is None and override:
            log.warning("instance metadata endpoint overridden by %s=%s (tests only)", IMDS_ENDPOINT_ENV, override)
        self.imds_endpoint = imds_endpoint or override or DEFAULT_IMDS_ENDPOINT
        self.metadata = ImdsClient(self.imds_endpoint)
        self.deadline_s = deadline_s
        self._identity: InstanceIdentity | None = None
        self._clients: dict[str, Any] = {}
        self._terminating = False
        #: How a request reaches the vendor (daskfleet.aws.login.Transport); None: lambda:Invoke (tests inject one).
        self.vendor_transport = vendor_transport

    def describe(self) -> str:
        return f"AWS cluster {self.cluster}"

    def fetch_spec(self, role: str) -> Mapping[str, Any]:
        """The role's spec from SSM; unset ``listen_host``/``contact_host`` become the private IPv4."""
        deadline = Deadline(self.deadline_s)
        identity = self._checked_identity(role, deadline)
        name = conventions.spec_parameter_name(self.cluster, role)
        deadline.check(f"reading SSM parameter {name}")
        response = call_aws(
            self.client("ssm"), "GetParameter", f"SSM parameter {name}", INSTANCE_ROLE,
            missing=ExitCode.SPEC_INVALID, deadline=deadline, Name=name, WithDecryption=True,
        )
        log.info("read node spec from SSM parameter %s", name)
        raw = load_spec_document(response["Parameter"]["Value"], f"SSM parameter {name}")
        spec = fill_hosts(raw, identity.private_ipv4)
        if role == "worker" and spec.get("name") is None:
            spec["name"] = identity.instance_id  # the scheduler's scaler terminates exactly the workers it retires
        return spec

    def fetch_tls(self, role: str) -> TlsMaterial:
        """The role's CA, certificate and key from Secrets Manager."""
        deadline = Deadline(self.deadline_s)
        self._checked_identity(role, deadline)
        name = conventions.node_tls_secret_name(self.cluster, role)
        deadline.check(f"reading secret {name}")
        material = fetch_tls_secret(self.client("secretsmanager"), name, INSTANCE_ROLE, deadline=deadline)
        log.info("read TLS material from secret %s", name)
        return material

    def certificate_issuer(self, role: str, spec: Any) -> Any:
        """The vendor the spec names (``vendor_function``), asked with a proof of this instance's role (its
        credentials from instance metadata, through botocore's default chain); None for a stack from before vendors,
        whose node certificates are in Secrets Manager (``fetch_tls``)."""
        function = getattr(spec, "vendor_function", None)
        if not function:
            return None
        from .login import request_certificate  # noqa: PLC0415  (only nodes of a stack with a vendor)

        identity = self._checked_identity(role, Deadline(self.deadline_s))
        session = boto3.session.Session(region_name=identity.region)
        if session.get_credentials() is None:
            raise DaskfleetError(f"no credentials of this instance's role to prove to certificate vendor {function}: "
                                 f"{INSTANCE_ROLE.login_hint}", ExitCode.SOURCE_UNAVAILABLE)

        def issue(csr_pem: str) -> Any:
            vended = request_certificate(session, self.cluster, csr_pem, role=role, caller=INSTANCE_ROLE,
                                         transport=self.vendor_transport, function=function,
                                         deadline=Deadline(self.deadline_s))
            log.info("got a %s certificate from certificate vendor %s", role, function)
            return vended

        return issue

    def leaving(self) -> str | None:
        """The worker group's TERMINATING hook or a spot interruption notice, from instance metadata.

        A metadata read that fails is not a notice: it is logged and the next poll asks again.
        """
        try:
            terminating, spot_notice = read_leaving_notice(self.metadata)
        except ImdsError as exc:
            log.warning("instance metadata: cannot read the lifecycle state: %s", exc.reason)
            return None
        if terminating:
            self._terminating = True
            return "its auto scaling group is terminating it"
        if spot_notice is not None:
            return f"spot interruption notice ({spot_notice})"
        return None

    def left(self) -> None:
        """Complete the worker group's drain hook, so the instance goes now instead of at its timeout."""
        if not self._terminating:
            return
        deadline = Deadline(self.deadline_s)
        identity = self._checked_identity("worker", deadline)
        group = conventions.node_group_name(self.cluster, "worker")
        deadline.check(f"completing lifecycle hook {conventions.DRAIN_HOOK_NAME}")
        call_aws(
            self.client("autoscaling"), "CompleteLifecycleAction",
            f"lifecycle hook {conventions.DRAIN_HOOK_NAME} of {group}", INSTANCE_ROLE,
            missing=ExitCode.SOURCE_UNAVAILABLE, deadline=deadline, LifecycleHookName=conventions.DRAIN_HOOK_NAME,
            AutoScalingGroupName=group, InstanceId=identity.instance_id, LifecycleActionResult="CONTINUE",
        )
        log.info("drained; completed %s for %s", conventions.DRAIN_HOOK_NAME, identity.instance_id)

    def stopped(self, role: str, outcome: Outcome) -> None:
        """The node stops for good: its line to the cluster's log group first, then its own instance unhealthy.

        The group replaces an unhealthy instance, so a node that cannot start is not billed doing nothing;
        the scheduler's scaler and ``daskfleet status`` read the line (``failures/<instance id>``).
        A scheduler whose launch template version keeps failing is not replaced again: it stands the
        cluster down (``_stand_down``), and the next user's ``daskfleet.connect`` starts it again.
        """
        deadline = Deadline(self.deadline_s)
        try:
            identity = self._own_identity(deadline)
        except DaskfleetError as exc:
            log.warning("stopping for good, but cannot tell which instance this is: %s", exc)
            return
        this = NodeFailure(identity.instance_id, role, int(outcome.code), outcome.line, time.time())
        try:
            report_failure(self.client("logs"), self.cluster, identity.instance_id, role, outcome, deadline)
        except DaskfleetError as exc:
            log.warning("could not report the failure to the cluster's log group: %s", exc)
        if role == "scheduler" and self._stand_down(this):
            return
        try:
            call_aws(
                self.client("autoscaling"), "SetInstanceHealth", f"instance {identity.instance_id}", INSTANCE_ROLE,
                missing=ExitCode.SOURCE_UNAVAILABLE, deadline=deadline, InstanceId=identity.instance_id,
                HealthStatus="Unhealthy", ShouldRespectGracePeriod=False,
            )
        except DaskfleetError as exc:
            log.warning("could not mark this instance unhealthy: %s", exc)
            return
        log.warning("marked instance %s unhealthy: its group replaces it", identity.instance_id)

    def _stand_down(self, this: NodeFailure) -> bool:
        """After repeated failures of this scheduler's launch version: both groups to 0 instead of a replacement.

        The same limit and window as the worker group's launch hold (``scaling.defaults``); the spec
        that would set them may be what failed. Whatever cannot be read or done falls back to the
        replacement, as for the first failures.
        """
        window, limit = DEFAULT_BOOT_FAILURE_WINDOW_S, DEFAULT_BOOT_FAILURE_LIMIT
        try:
            earlier = read_failures(self.client("logs"), self.cluster, this.at - window, INSTANCE_ROLE, role=this.role)
            versions = launch_versions(self.client("ec2"), [*(f.instance for f in earlier), this.instance], INSTANCE_ROLE)
        except DaskfleetError as exc:
            log.warning("cannot read the cluster's earlier failures, so this instance is replaced: %s", exc)
            return False
        repeated = repeated_failures(earlier, versions, this, window_s=window)
        if len(repeated) < limit:
            return False
        try:
            done = AutoScalingWorkers(self.cluster, self.client).stop_scheduler()
        except DaskfleetError as exc:
            log.warning("could not stand the cluster down, so this instance is replaced: %s", exc)
            return False
        version = versions.get(this.instance, "an unknown launch template version")
        log.warning("the scheduler failed to start %d times from %s within %gs: not replacing it again; %s. Fix the "
                    "cause, then daskfleet.connect(%r) starts it", len(repeated), version, window, done, self.cluster)
        return True

    def audit_forwarder(self) -> CloudWatchLines:
        """The cluster's log group, stream ``audit/<instance id>``: the trail outlives this instance."""
        identity = self._checked_identity("scheduler", Deadline(self.deadline_s))
        return CloudWatchLines(
            self.client("logs"), conventions.log_group_name(self.cluster), f"audit/{identity.instance_id}"
        )

    def instance_kind(self) -> tuple[str, str]:
        """(instance type, purchase option) from instance metadata, for this node's price."""
        identity = self._own_identity()
        return identity.instance_type, identity.purchase

    def usage_forwarder(self) -> CloudWatchLines:
        """The cluster's log group, stream ``usage/<instance id>``: usage outlives the scheduler's instance."""
        identity = self._checked_identity("scheduler", Deadline(self.deadline_s))
        return CloudWatchLines(
            self.client("logs"), conventions.log_group_name(self.cluster), f"{STREAM_PREFIX}{identity.instance_id}"
        )

    def usage_history(self, since: float) -> list[str]:
        """Usage record lines every scheduler of the cluster wrote since ``since``, from the log group."""
        self._checked_identity("scheduler", Deadline(self.deadline_s))
        return read_usage_lines(self.client("logs"), self.cluster, since, INSTANCE_ROLE)

    def _checked_identity(self, role: str, deadline: Deadline) -> InstanceIdentity:
        if role not in conventions.NODE_ROLES:
            accepted = ", ".join(conventions.NODE_ROLES)
            raise DaskfleetError(f"role {role!r}: expected one of {accepted}", ExitCode.CONFIG)
        identity = self._own_identity(deadline)
        check_tags(identity, cluster=self.cluster, role=role)
        return identity

    def _own_identity(self, deadline: Deadline | None = None) -> InstanceIdentity:
        """This instance's identity and tags, read from instance metadata once."""
        if self._identity is None:
            self._identity = read_instance_identity(self.metadata, deadline or Deadline(self.deadline_s))
        return self._identity

    def instance_id(self) -> str:
        return self._own_identity().instance_id

    def published_environment(self) -> PublishedEnvironment | None:
        """The cluster's published-environment pointer, through the instance role."""
        from .pointer import read_pointer  # noqa: PLC0415  (schedulers poll it; workers read it once)

        identity = self._own_identity()
        check_tags(identity, cluster=self.cluster, role=identity.tags.get(conventions.TAG_ROLE, ""))
        return read_pointer(self.client("ssm"), self.cluster, INSTANCE_ROLE)

    def deny_list(self) -> str | None:
        """The cluster's deny-list parameter, through the instance role (the scheduler's may read its own)."""
        from .denylist import read_deny_list_text  # noqa: PLC0415  (schedulers only)

        return read_deny_list_text(self.client("ssm"), self.cluster, INSTANCE_ROLE)

    def environment_error(self) -> str | None:
        """What the node's environment step (``daskfleet env follow``) reported, when its install failed."""
        path = conventions.node_path(conventions.NODE_ENV_STATUS_FILE)
        try:
            status = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return status.get("error") or None

    def switch_interpreter(self) -> str | None:
        """Never: the unit's environment step (as root) installs the new environment before the agent restarts."""
        return None

    def client(self, service: str) -> Any:
        """A boto3 client in the instance's region, credentials from the default chain (the instance role).

        Only after the spec was fetched (the instance's identity gives the region).
        """
        if service not in self._clients:
            assert self._identity is not None, "identity is read before any AWS call"
            session = boto3.session.Session(region_name=self._identity.region)
            self._clients[service] = session.client(service, config=BOTO_CONFIG)
        return self._clients[service]


def check_tags(identity: InstanceIdentity, *, cluster: str, role: str) -> None:
    """The instance's cluster and role tags must say what the agent was started for."""
    for key, wanted in ((conventions.TAG_CLUSTER, cluster), (conventions.TAG_ROLE, role)):
        found = identity.tags.get(key)
        if found is None:
            raise DaskfleetError(
                f"instance {identity.instance_id} has no tag {key} (the agent was started for {wanted!r})",
                ExitCode.SPEC_INVALID,
            )
        if found != wanted:
            raise DaskfleetError(
                f"instance {identity.instance_id} is tagged {key}={found!r}, "
                f"but the agent was started for {wanted!r}",
                ExitCode.SPEC_INVALID,
            )


def fill_hosts(raw: Mapping[str, Any], private_ipv4: str) -> dict[str, Any]:
    """The spec with the instance's private IPv4 wherever it leaves listen_host or contact_host unset."""
    spec = dict(raw)
    for key in ("listen_host", "contact_host"):
        if spec.get(key) is None:
            spec[key] = private_ipv4
    return spec

