"""A small IMDSv2 client: one session token (PUT), then reads that carry it; IMDSv1 is never tried.

urllib3 (already a dependency) with bounded, jittered retries and short timeouts. botocore's
``IMDSFetcher`` was the other candidate and is not used: its token and read methods are
private, it obeys ``AWS_EC2_METADATA_DISABLED`` (meant for botocore's own credential lookup),
it falls back to IMDSv1 unless told otherwise, and it turns every failure into one
"retries exceeded" error, where the agent's messages name the reason (refused, timed out,
HTTP 404).
"""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

import urllib3

TOKEN_PATH = "api/token"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
#: The longest session IMDS grants; a token is renewed a minute before it ends.
TOKEN_TTL_SECONDS = 21600
TOKEN_RENEW_MARGIN_SECONDS = 60
#: Each request: the token within 5 s, a read within 1 s; 3 retries (connection errors and
#: 429/5xx answers), jittered exponential backoff from 0.2 s: under 3 s per request at worst.
TOKEN_TIMEOUT = urllib3.Timeout(total=5.0)
READ_TIMEOUT = urllib3.Timeout(total=1.0)
RETRIES = urllib3.Retry(
    total=3, backoff_factor=0.2, backoff_jitter=0.2, status_forcelist=(429, 500, 502, 503, 504),
    allowed_methods=frozenset({"GET", "PUT"}), raise_on_status=False,
)


class ImdsError(Exception):
    """Instance metadata could not be read; ``reason`` is one line (a socket error, "timed out", "HTTP 404")."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ImdsClient:
    """Reads paths below ``<endpoint>/latest/`` with an IMDSv2 session token (thread-safe)."""

    def __init__(self, endpoint: str, *, pool: urllib3.PoolManager | None = None):
        self.base = f"{endpoint.rstrip('/')}/latest/"
        self._pool = pool or urllib3.PoolManager(retries=RETRIES)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0

    def read(self, path: str) -> str:
        """The text at ``path`` (e.g. ``meta-data/instance-id``); any failure, a 404 too, is an ImdsError."""
        text = self.read_optional(path)
        if text is None:
            raise ImdsError(f"HTTP 404: {self.base}{path}")
        return text

    def read_optional(self, path: str) -> str | None:
        """The text at ``path``, or None where instance metadata has nothing there (HTTP 404).

        A token the service no longer accepts (HTTP 401) is replaced once.
        """
        response = self._request("GET", path, headers={TOKEN_HEADER: self._session_token()}, timeout=READ_TIMEOUT)
        if response.status == 401:
            self._forget_token()
            response = self._request("GET", path, headers={TOKEN_HEADER: self._session_token()}, timeout=READ_TIMEOUT)
        if response.status == 404:
            return None
        if response.status != 200:
            raise ImdsError(f"HTTP {response.status}: {self.base}{path}")
        return response.data.decode("utf-8")

    def tag(self, key: str) -> str | None:
        """The instance tag ``key`` (the launch template must enable ``instance_metadata_tags``)."""
        return self.read_optional(f"meta-data/tags/instance/{quote(key, safe=':@')}")

    def tag_keys(self) -> list[str]:
        """The instance's tag keys; an ImdsError (HTTP 404) when tags are not exposed to instance metadata."""
        return self.read("meta-data/tags/instance/").splitlines()

    def _session_token(self) -> str:
        with self._lock:
            now = time.monotonic()
            if self._token is None or now >= self._token_expires:
                response = self._request(
                    "PUT", TOKEN_PATH, headers={TOKEN_TTL_HEADER: str(TOKEN_TTL_SECONDS)}, timeout=TOKEN_TIMEOUT
                )
                if response.status != 200:
                    raise ImdsError(f"no session token (IMDSv2) from {self.base}{TOKEN_PATH}: HTTP {response.status}")
                self._token = response.data.decode("utf-8")
                self._token_expires = now + TOKEN_TTL_SECONDS - TOKEN_RENEW_MARGIN_SECONDS
            return self._token

    def _forget_token(self) -> None:
        with self._lock:
            self._token = None

    def _request(self, method: str, path: str, *, headers: dict[str, str], timeout: urllib3.Timeout):
        try:
            return self._pool.request(method, f"{self.base}{path}", headers=headers, timeout=timeout)
        except urllib3.exceptions.HTTPError as exc:
            raise ImdsError(short_reason(exc)) from exc


def short_reason(exc: BaseException) -> str:
    """One line for a urllib3 failure: the socket error if there is one, else "timed out", else the message."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = getattr(cause, "reason", None) or cause.__cause__ or cause.__context__
    for link in chain:
        if isinstance(link, OSError) and link.strerror:
            return link.strerror
    if any(isinstance(link, (TimeoutError, urllib3.exceptions.TimeoutError)) for link in chain):
        return "timed out"
    return str(exc).splitlines()[0]
