"""AWS calls for operators' commands: the standard credential chain and endpoint, throttling retried with backoff.

boto3 already honours ``AWS_ENDPOINT_URL`` (and the per-service ``AWS_ENDPOINT_URL_<SERVICE>``),
``AWS_PROFILE``, ``AWS_REGION`` and the rest of the default credential chain; ``OpsApi`` only adds
a longer, visible retry on throttling (a janitor run makes many calls in a burst) and on
resources still held by one being deleted, and turns "already gone" into ``Gone``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound
from botocore.parsers import ResponseParserError

from ..aws.calls import THROTTLING_CODES, Backoff, Caller, aws_failure, error_code
from ..errors import DaskfleetError, ExitCode

OPERATOR = Caller(
    who="your AWS identity",
    login_hint="log in first (`aws sso login`, `aws configure`, or a role for CI), or pass --profile",
    credentials_exit=ExitCode.CONFIG,
)
#: botocore's own retries stay short: OpsApi retries throttling itself, where it can be seen and tested.
OPS_BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=30, user_agent_appid="daskfleet-ops",
)
#: A dependency is still being released (instances terminating, a NAT gateway deleting): worth waiting for.
STILL_IN_USE_CODES = frozenset({
    "DependencyViolation", "ResourceInUse", "ResourceInUseException", "ScalingActivityInProgress",
    "InvalidIPAddress.InUse", "VolumeInUse", "ConcurrentModificationException", "ConflictException",
})
GONE_CODES = frozenset({
    "NoSuchEntity", "NoSuchBucket", "NoSuchHostedZone", "ResourceNotFoundException", "ParameterNotFound",
    "NotFoundException", "InvalidAllocationID.NotFound", "NatGatewayNotFound", "InvalidVpcEndpointId.NotFound",
})


class Gone(Exception):
    """The resource no longer exists: deleting it has nothing left to do."""


def open_session(region: str | None, profile: str | None) -> Any:
    """A boto3 session from the default chain (or ``profile``); a region is required."""
    try:
        session = boto3.session.Session(region_name=region, profile_name=profile)
    except ProfileNotFound:
        raise DaskfleetError(f"--profile: AWS profile {profile!r} not found in your AWS configuration", ExitCode.CONFIG) from None
    if session.region_name is None:
        raise DaskfleetError("no AWS region: pass --region, or set AWS_REGION or a region in your profile", ExitCode.CONFIG)
    return session


class OpsApi:
    """Makes AWS calls for one region: clients by service, each call retried on throttling with backoff."""

    def __init__(
        self, session: Any, *, backoff: Backoff = Backoff(), sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.session = session
        self.region = session.region_name
        self.backoff = backoff
        self.sleep = sleep
        self._clients: dict[str, Any] = {}
        #: Every retry taken: (operation, error code, seconds waited); shown by --verbose, read by tests.
        self.retries: list[tuple[str, str, float]] = []

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.make_client(service)
        return self._clients[service]

    def make_client(self, service: str) -> Any:
        # Cost Explorer, Budgets, IAM and Route 53 answer from us-east-1 whatever the cluster's region.
        region = "us-east-1" if service in ("ce", "budgets") else self.region
        return self.session.client(service, region_name=region, config=OPS_BOTO_CONFIG)

    def call(self, service: str, operation: str, resource: str = "", **params: Any) -> dict:
        """``operation`` on ``service``; raises Gone when the resource does not exist, DaskfleetError on failure."""
        client = self.client(service)
        method = getattr(client, xform_name(operation))
        attempt = 0
        while True:
            try:
                return method(**params)
            except ClientError as exc:
                code = error_code(exc)
                if code in GONE_CODES or code.endswith(".NotFound") or _gone_message(exc):
                    raise Gone(resource or operation) from None
                limit = self.backoff.attempts if code in THROTTLING_CODES else (
                    self.backoff.in_use_attempts if code in STILL_IN_USE_CODES else 0)
                if attempt + 1 >= limit:
                    raise _failure(exc, client, operation, resource) from None
            except (BotoCoreError, ResponseParserError) as exc:
                raise _failure(exc, client, operation, resource) from None
            wait = self.backoff.delay(attempt)
            self.retries.append((operation, code, wait))
            self.sleep(wait)
            attempt += 1

    def pages(self, service: str, operation: str, key: str, **params: Any) -> list[Any]:
        """Every item under ``key`` across the pages of a paginated listing, each page retried like ``call``."""
        items: list[Any] = []
        token_in, token_out = _TOKENS.get((service, operation), ("NextToken", "NextToken"))
        while True:
            page = self.call(service, operation, **params)
            items += page.get(key, [])
            token = page.get(token_out)
            if not token:
                return items
            params = {**params, token_in: token}


#: Listings whose page tokens are not NextToken -> NextToken: (request key, response key).
_TOKENS: dict[tuple[str, str], tuple[str, str]] = {
    ("iam", "ListRoles"): ("Marker", "Marker"),
    ("iam", "ListInstanceProfiles"): ("Marker", "Marker"),
    ("iam", "ListRolePolicies"): ("Marker", "Marker"),
    ("iam", "ListAttachedRolePolicies"): ("Marker", "Marker"),
    ("route53", "ListHostedZones"): ("Marker", "NextMarker"),
    ("kms", "ListKeys"): ("Marker", "NextMarker"),
    ("kms", "ListAliases"): ("Marker", "NextMarker"),
    ("resourcegroupstaggingapi", "GetResources"): ("PaginationToken", "PaginationToken"),
    ("s3", "ListBuckets"): ("ContinuationToken", "ContinuationToken"),
}


def _failure(exc: Exception, client: Any, operation: str, resource: str) -> DaskfleetError:
    """One line per failure class; an answer botocore cannot even parse (an endpoint without the API) says so."""
    try:
        return aws_failure(exc, client, operation, resource, OPERATOR, missing=ExitCode.SOURCE_UNAVAILABLE)
    except (BotoCoreError, ResponseParserError):
        action = f"{client.meta.service_model.signing_name}:{operation}"
        first = (str(exc).splitlines() or [""])[0]
        return DaskfleetError(f"{action}{f' on {resource}' if resource else ''} failed: {type(exc).__name__}: {first}",
                              ExitCode.SOURCE_UNAVAILABLE)


def _gone_message(exc: ClientError) -> bool:
    """Services that report a missing resource only in words (auto scaling's ValidationError)."""
    error = exc.response.get("Error", {})
    message = str(error.get("Message", "")).lower()
    return error.get("Code") == "ValidationError" and ("not found" in message or "does not exist" in message)
