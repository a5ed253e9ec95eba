"""A user's side of an AWS cluster: their client certificate, the scheduler's address, waking it, through their own login.

The user never copies a file: their AWS login (default credential chain or a named profile)
reads the client secret the Pulumi program issued to them, which only their IAM principal
may read.

Which user a secret belongs to, when not given: the last part of the caller's ARN from
``sts:GetCallerIdentity`` (the IAM user name, the assumed-role session name, or the
federated user name), lowercased, and cut at ``@`` when it is an e-mail address. So
``arn:aws:sts::1:assumed-role/AWSReservedSSO_DataScientist_ab12/Alice@example.com`` is
user ``alice``. Root and names that are not valid daskfleet user names need ``user=``.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import boto3
from botocore.exceptions import ProfileNotFound
from tqdm.auto import tqdm

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..trust.tls import TlsMaterial
from .calls import BOTO_CONFIG, Caller, call_aws, fetch_tls_secret

LOGIN_HINT = (
    "log in first (`aws sso login`, `aws login` or `aws configure`), or pass profile= naming a logged-in profile"
)
YOUR_IDENTITY = Caller(who="your AWS identity", login_hint=LOGIN_HINT, credentials_exit=ExitCode.CONFIG)

_ARN = re.compile(r"^arn:aws[a-z-]*:(?P<service>iam|sts)::\d{12}:(?P<kind>[a-z-]+)(?:/(?P<rest>.+))?$")


def user_from_arn(arn: str) -> str:
    """The daskfleet user name an AWS caller ARN stands for (rule in the module docstring)."""
    match = _ARN.match(arn)
    if match is None or not match["rest"] or match["kind"] not in ("user", "assumed-role", "federated-user"):
        raise DaskfleetError(
            f"your AWS identity {arn} does not name a user; pass user= with your daskfleet user name", ExitCode.CONFIG
        )
    name = match["rest"].rsplit("/", 1)[-1].lower().split("@", 1)[0]
    if not re.fullmatch(conventions.USER_NAME_PATTERN, name):
        raise DaskfleetError(
            f"your AWS identity {arn} gives user name {name!r}, which does not match "
            f"{conventions.USER_NAME_PATTERN}; pass user= with your daskfleet user name",
            ExitCode.CONFIG,
        )
    return name


def fetch_client_tls(
    cluster: str, user: str | None = None, *, region: str | None = None, profile: str | None = None
) -> TlsMaterial:
    """The CA, client certificate and key issued to ``user`` (default: derived from the caller's ARN)."""
    _check_name("cluster", cluster, conventions.CLUSTER_NAME_PATTERN)
    if user is not None:
        _check_name("user", user, conventions.USER_NAME_PATTERN)
    session = _session(region, profile)
    arn = caller_arn(session)
    caller = replace(YOUR_IDENTITY, who=f"your AWS identity {arn}")
    derived = user is None
    user = user_from_arn(arn) if derived else user
    how = f"derived from {arn}; pass user= to choose another" if derived else "as given by user="
    secrets = session.client("secretsmanager", config=BOTO_CONFIG)
    return fetch_tls_secret(
        secrets, conventions.client_tls_secret_name(cluster, user), caller,
        missing_hint=f"it would hold the client certificate of user {user!r} in cluster {cluster!r} (user {how})",
    )


def discover_scheduler_address(
    cluster: str, *, override: str | None = None, region: str | None = None, profile: str | None = None
) -> str:
    """The scheduler's ``tls://host:port``: ``override`` (e.g. a local SSM port forward) or the workers' spec."""
    if override is not None:
        return _tls_address(override)
    _check_name("cluster", cluster, conventions.CLUSTER_NAME_PATTERN)
    session = _session(region, profile)
    name = conventions.spec_parameter_name(cluster, "worker")
    response = call_aws(
        session.client("ssm", config=BOTO_CONFIG), "GetParameter", f"SSM parameter {name}", YOUR_IDENTITY,
        missing=ExitCode.SPEC_INVALID, Name=name, WithDecryption=True,
    )
    try:
        spec = json.loads(response["Parameter"]["Value"])
    except json.JSONDecodeError:
        spec = None
    address = spec.get("scheduler_address") if isinstance(spec, dict) else None
    if not isinstance(address, str) or not address:
        raise DaskfleetError(
            f"SSM parameter {name}: has no scheduler_address; pass the scheduler address explicitly",
            ExitCode.SPEC_INVALID,
        )
    return address


def caller_arn(session: Any) -> str:
    """The ARN of the AWS identity ``session`` acts as (sts:GetCallerIdentity, which needs no permission)."""
    return call_aws(session.client("sts", config=BOTO_CONFIG), "GetCallerIdentity", "", YOUR_IDENTITY,
                    missing=ExitCode.CONFIG)["Arn"]


def user_session(region: str | None, profile: str | None) -> Any:
    """A boto3 session with the user's own login (default chain or ``profile``) and a region; one clear error."""
    return _session(region, profile)


def _session(region: str | None, profile: str | None) -> Any:
    try:
        session = boto3.session.Session(region_name=region, profile_name=profile)
    except ProfileNotFound:
        raise DaskfleetError(
            f"AWS profile {profile!r} not found in your AWS configuration (see `aws configure list-profiles`)",
            ExitCode.CONFIG,
        ) from None
    if session.region_name is None:
        raise DaskfleetError(
            "no AWS region: pass region=, set AWS_REGION, or set a region in your AWS profile", ExitCode.CONFIG
        )
    return session


def _check_name(key: str, value: str, pattern: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise DaskfleetError(f"{key}: {value!r} does not match {pattern}", ExitCode.CONFIG)


def _tls_address(text: str) -> str:
    scheme, sep, rest = text.rpartition("://")
    if sep and scheme != "tls":
        raise DaskfleetError(f"scheduler address {text!r}: daskfleet schedulers only accept tls://", ExitCode.CONFIG)
    if not re.fullmatch(r"[^/\s:]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", rest):
        raise DaskfleetError(f"scheduler address {text!r}: expected host:port or tls://host:port", ExitCode.CONFIG)
    return f"tls://{rest}"



# --- waking a cluster that went idle ------------------------------------------------------------

#: How long ``connect`` waits, at most, for a sleeping cluster's scheduler to boot and answer.
WAKE_TIMEOUT_S = 600.0
WAKE_POLL_S = 5.0
IN_SERVICE = "InService"


def wake_scheduler(
    cluster: str,
    address: str,
    answers: Callable[[], str | None],
    *,
    region: str | None = None,
    profile: str | None = None,
    timeout: float = WAKE_TIMEOUT_S,
    poll_s: float = WAKE_POLL_S,
) -> bool:
    """Raise the scheduler group of an idle ``cluster`` from 0 to 1 and wait, bounded, until ``answers()`` is None.

    ``answers`` tries the scheduler once and returns why it did not answer, or None. Returns
    whether the cluster was asleep. Your AWS identity needs DescribeAutoScalingGroups and
    SetDesiredCapacity on the scheduler group (the stack's wake policy); without the first,
    nothing is woken and ``connect`` tries the scheduler as it is.
    """
    _check_name("cluster", cluster, conventions.CLUSTER_NAME_PATTERN)
    group_name = conventions.node_group_name(cluster, "scheduler")
    autoscaling = _session(region, profile).client("autoscaling", config=BOTO_CONFIG)
    try:
        group = _describe_group(autoscaling, group_name)
    except DaskfleetError as exc:
        warnings.warn(f"cannot tell whether {cluster} is asleep ({exc}); trying its scheduler as it is", stacklevel=3)
        return False
    if int(group["DesiredCapacity"]) >= 1 and _in_service(group):
        return False
    if int(group["DesiredCapacity"]) == 0:
        call_aws(
            autoscaling, "SetDesiredCapacity", f"auto scaling group {group_name}",
            replace(YOUR_IDENTITY, login_hint=f"{LOGIN_HINT}; waking needs the stack's wake policy"),
            missing=ExitCode.CONFIG, AutoScalingGroupName=group_name, DesiredCapacity=1, HonorCooldown=False,
        )
    _wait_awake(cluster, address, answers, autoscaling, group_name, timeout, poll_s)
    return True


def _wait_awake(
    cluster: str, address: str, answers: Callable[[], str | None], autoscaling: Any, group_name: str,
    timeout: float, poll_s: float,
) -> None:
    """Wait for an instance in service, then for the scheduler to answer; a progress bar meanwhile."""
    start = time.monotonic()
    deadline = start + timeout
    instance: str | None = None
    why = "not tried yet"
    states = "none"
    with tqdm(total=int(timeout), desc=f"waking {cluster}: starting its scheduler instance", unit="s",
              bar_format="{desc} [{elapsed}, at most {total}s]", leave=False) as progress:
        while time.monotonic() < deadline:
            if instance is None:
                group = _describe_group(autoscaling, group_name)
                instance = _in_service(group)
                states = ", ".join(f"{i['InstanceId']} {i['LifecycleState']}" for i in group.get("Instances", [])) or "none"
                if instance is not None:
                    progress.set_description(f"waking {cluster}: {instance} is up, waiting for its scheduler")
            if instance is not None:
                why = answers()
                if why is None:
                    return
            progress.update(int(time.monotonic() - start) - progress.n)
            time.sleep(max(0.0, min(poll_s if instance is None else 1.0, deadline - time.monotonic())))
    if instance is None:
        raise DaskfleetError(
            f"{cluster} did not wake within {timeout:g}s: its scheduler group {group_name} has no instance in service "
            f"(instances: {states}); see `aws autoscaling describe-scaling-activities --auto-scaling-group-name "
            f"{group_name}`",
            ExitCode.SCHEDULER_UNREACHABLE,
        )
    raise DaskfleetError(
        f"{cluster} did not wake within {timeout:g}s: instance {instance} of {group_name} is in service, but the "
        f"scheduler at {address} does not answer ({why}); through an SSM port forward, start it now (stack output "
        "schedulerPortForwardCommand) and connect again",
        ExitCode.SCHEDULER_UNREACHABLE,
    )


def _describe_group(autoscaling: Any, name: str) -> dict[str, Any]:
    response = call_aws(
        autoscaling, "DescribeAutoScalingGroups", f"auto scaling group {name}", YOUR_IDENTITY,
        missing=ExitCode.CONFIG, AutoScalingGroupNames=[name],
    )
    groups = response.get("AutoScalingGroups") or []
    if not groups:
        raise DaskfleetError(f"auto scaling group {name}: not found (is the cluster deployed?)", ExitCode.CONFIG)
    return groups[0]


def _in_service(group: dict[str, Any]) -> str | None:
    """The id of an instance of ``group`` in service, or None."""
    return next((i["InstanceId"] for i in group.get("Instances", []) if i["LifecycleState"] == IN_SERVICE), None)
