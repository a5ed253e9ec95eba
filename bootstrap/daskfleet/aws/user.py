"""A user's side of an AWS cluster: their client certificate and the scheduler's address, through their own login.

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
from dataclasses import replace
from typing import Any

import boto3
from botocore.exceptions import ProfileNotFound

from .. import conventions
from ..errors import DaskfleetError, ExitCode
from ..security.tls import TlsMaterial
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
    identity = call_aws(
        session.client("sts", config=BOTO_CONFIG), "GetCallerIdentity", "", YOUR_IDENTITY,
        missing=ExitCode.CONFIG,
    )
    arn = identity["Arn"]
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

