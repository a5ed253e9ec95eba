"""AWS calls with the node agent's failure classes: one DaskfleetError per class, never a response body.

The instance's agent (``daskfleet.aws.source``) and a user's laptop (``daskfleet.aws.user``)
make their calls through ``call_aws``; ``Caller`` says who is calling, for messages. Each call
has botocore's standard retries (jittered, at most 4 attempts); the agent's calls also pass a
``Deadline``, within which a transient failure (throttling, a server error, a reset or timed-out
connection) is tried again after a jittered backoff, so a burst of API errors at boot delays
the node rather than failing it, and the failure class comes once the time is up.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    SSOError,
    TokenRetrievalError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..errors import DaskfleetError, ExitCode
from ..trust.tls import TlsMaterial

log = logging.getLogger(__name__)

#: Each AWS call: standard-mode retries (throttling, 5xx, connection errors), at most
#: 4 attempts of at most 3 s to connect and 10 s to read, so about a minute at worst.
BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=3,
    read_timeout=10,
    user_agent_appid="daskfleet",
)
_CREDENTIAL_ERRORS: tuple[type[Exception], ...] = (
    NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, TokenRetrievalError, SSOError,
)
if hasattr(botocore.exceptions, "LoginError"):  # `aws login` sessions, botocore >= 1.41
    _CREDENTIAL_ERRORS += (botocore.exceptions.LoginError,)
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "SlowDown", "PriorRequestNotComplete",
    "ProvisionedThroughputExceededException",
})
#: Worth another try once botocore's own attempts are spent (besides any 5xx answer).
TRANSIENT_CODES = THROTTLING_CODES | frozenset({
    "InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable", "ServiceUnavailableException",
    "RequestTimeout", "RequestTimeoutException",
})
_NOT_FOUND_CODES = frozenset({"ParameterNotFound", "ResourceNotFoundException", "NoSuchHostedZone"})
_ACCESS_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
_BAD_CREDENTIAL_CODES = frozenset({
    "ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException",
    "SignatureDoesNotMatch", "InvalidSignatureException",
})


@dataclass(frozen=True)
class Caller:
    """Who makes AWS calls, for messages: an instance role, or a person at a laptop."""

    who: str
    login_hint: str
    credentials_exit: ExitCode


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits up to min(cap, base * 2**n) seconds."""

    attempts: int = 6
    base: float = 1.0
    cap: float = 20.0
    #: Waiting for a dependency to go takes longer than a throttle: attempts for STILL_IN_USE_CODES.
    in_use_attempts: int = 8

    def delay(self, attempt: int, jitter: Callable[[float, float], float] = random.uniform) -> float:
        return jitter(0, min(self.cap, self.base * 2**attempt))


INSTANCE_ROLE = Caller(
    who="this instance's role",
    login_hint="the instance needs an instance profile, and instance metadata must serve its credentials",
    credentials_exit=ExitCode.SOURCE_UNAVAILABLE,
)


def call_aws(
    client: Any, operation: str, resource: str, caller: Caller, *, missing: ExitCode, missing_hint: str = "",
    deadline: Deadline | None = None, fine: frozenset[str] = frozenset(), **params: Any,
) -> dict:
    """Call ``operation`` (e.g. ``GetParameter``) on ``client``; one DaskfleetError per failure class.

    ``resource`` names what is read, e.g. ``SSM parameter /daskfleet/x/spec/worker`` (or is
    empty); a not-found error names it, adds ``missing_hint`` and exits with ``missing``.
    With a ``deadline``, transient failures are tried again (jittered backoff) until it runs out.
    An error whose code is in ``fine`` (e.g. ``ResourceAlreadyExistsException``) returns ``{}``.
    Messages never carry a response body, so a secret value cannot end up in one.
    """
    method = getattr(client, xform_name(operation))
    attempt = 0
    while True:
        try:
            return method(**params)
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) in fine:
                return {}
            failure = aws_failure(exc, client, operation, resource, caller, missing=missing, missing_hint=missing_hint)
            transient = deadline is not None and is_transient(exc)
            wait = deadline.retry_in(attempt) if transient else None
            if wait is None:
                if transient:
                    failure = DaskfleetError(f"{failure.message} (gave up after {attempt + 1} attempt(s) within "
                                             f"{deadline.seconds:g}s)", failure.exit_code)
                raise failure from None
        log.warning("%s; trying again in %.1fs", failure.message, wait)
        time.sleep(wait)
        attempt += 1


def is_transient(exc: BaseException) -> bool:
    """Throttling, a server error, or a connection that failed or timed out: another try may succeed."""
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return error_code(exc) in TRANSIENT_CODES or status >= 500
    return isinstance(exc, (BotoConnectionError, HTTPClientError))


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError (``ThrottlingException``, ``InvalidVpcID.NotFound``...), else ``""``."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return ""


def aws_failure(
    exc: BaseException, client: Any, operation: str, resource: str, caller: Caller, *, missing: ExitCode,
    missing_hint: str = "",
) -> DaskfleetError:
    """The one-line DaskfleetError for ``exc`` raised by ``operation`` on ``client``, by failure class.

    Re-raises what is not an AWS failure (a bug stays a bug).
    """
    action = f"{client.meta.service_model.signing_name}:{operation}"
    where = f"{action} on {resource}" if resource else action
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in _NOT_FOUND_CODES:
            hint = f"; {missing_hint}" if missing_hint else ""
            region = client.meta.region_name
            return DaskfleetError(f"{resource}: not found ({action} in {region}){hint}", missing)
        # botocore reports an unparseable error body by its HTTP status; a bare 403 is a denial.
        if code in _ACCESS_DENIED_CODES or code == "403":
            return DaskfleetError(f"{where}: access denied to {caller.who}", ExitCode.SOURCE_UNAVAILABLE)
        if code in _BAD_CREDENTIAL_CODES:
            return DaskfleetError(
                f"{where}: AWS rejected the credentials of {caller.who} ({code}); {caller.login_hint}",
                caller.credentials_exit,
            )
        detail = exc.response.get("Error", {}).get("Message", "")
        detail = f": {detail.splitlines()[0]}" if detail else ""
        return DaskfleetError(f"{where} failed: {code}{detail}", ExitCode.SOURCE_UNAVAILABLE)
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return DaskfleetError(
            f"{where}: no usable AWS credentials ({type(exc).__name__}); {caller.login_hint}",
            caller.credentials_exit,
        )
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return DaskfleetError(
            f"{where}: cannot reach {client.meta.endpoint_url} ({type(exc).__name__})", ExitCode.SOURCE_UNAVAILABLE
        )
    if isinstance(exc, NoRegionError):
        return DaskfleetError(
            f"{where}: no AWS region configured (pass region=, set AWS_REGION, or set one in your profile)",
            ExitCode.CONFIG,
        )
    raise exc


def fetch_tls_secret(
    client: Any, name: str, caller: Caller, *, missing_hint: str = "", deadline: Deadline | None = None,
) -> TlsMaterial:
    """TLS material from the Secrets Manager secret ``name`` (a JSON document: ca, cert, key)."""
    response = call_aws(
        client, "GetSecretValue", f"secret {name}", caller,
        missing=ExitCode.CERT_UNREADABLE, missing_hint=missing_hint, deadline=deadline, SecretId=name,
    )
    text = response.get("SecretString")
    if text is None:
        raise DaskfleetError(f"secret {name}: holds no text value", ExitCode.CERT_UNREADABLE)
    return TlsMaterial.from_secret_json(text, f"secret {name}")


class _NoResponseBodies(logging.Filter):
    """Drops botocore.parsers' DEBUG records: they carry whole response bodies, secret values included."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_BODY_LOGGER = logging.getLogger("botocore.parsers")
if not any(isinstance(existing, _NoResponseBodies) for existing in _BODY_LOGGER.filters):
    _BODY_LOGGER.addFilter(_NoResponseBodies())


class Deadline:
    """A budget for one fetch: no new remote call starts after it has run out; transient failures retry within it."""

    def __init__(self, seconds: float, backoff: Backoff = Backoff(base=0.5, cap=10.0)):
        self.seconds = seconds
        self.backoff = backoff
        self._end = time.monotonic() + seconds

    def retry_in(self, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` (jittered), or None when that would pass the deadline."""
        wait = self.backoff.delay(attempt)
        return wait if time.monotonic() + wait < self._end else None

    def check(self, step: str) -> None:
        if time.monotonic() > self._end:
            raise DaskfleetError(
                f"AWS source: gave up after {self.seconds:g} s, before {step}", ExitCode.SOURCE_UNAVAILABLE
            )
