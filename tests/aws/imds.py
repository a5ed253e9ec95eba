"""A local IMDSv2 endpoint for tests: the instance metadata an EC2 node would see, on 127.0.0.1.

Like the real service, it issues session tokens on ``PUT /latest/api/token`` (the TTL header
is required) and refuses every read without a valid token (HTTP 401). It serves the
instance id, private IPv4, region and availability zone, the identity document, instance
tags (``meta-data/tags/instance/``) and user data. Reusable by any test that boots a node
through ``daskfleet.aws.source``: point ``DASKFLEET_IMDS_ENDPOINT`` at ``server.url``.

Fault switches: ``issue_tokens=False`` is an IMDSv1-only endpoint (token PUT refused),
``tags_enabled=False`` is a launch template without ``instance_metadata_tags``,
``delay_s`` slows every response, and ``unavailable_for`` answers that many next requests
with HTTP 503. ``requests`` records (method, path, had_valid_token).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL = 21600


class ImdsServer:
    """An instance's metadata, served over IMDSv2 from a thread; use as a context manager."""

    def __init__(
        self,
        *,
        instance_id: str = "i-0123456789abcdef0",
        region: str = "us-east-1",
        private_ipv4: str = "10.0.1.23",
        tags: dict[str, str] | None = None,
        user_data: bytes | None = None,
        account_id: str = "123456789012",
        issue_tokens: bool = True,
        tags_enabled: bool = True,
        delay_s: float = 0.0,
        instance_type: str = "m7i.xlarge",
        life_cycle: str = "on-demand",
    ):
        self.instance_type = instance_type
        self.life_cycle = life_cycle
        self.instance_id = instance_id
        self.region = region
        self.private_ipv4 = private_ipv4
        self.tags = dict(tags or {})
        self.user_data = user_data
        self.account_id = account_id
        self.issue_tokens = issue_tokens
        self.tags_enabled = tags_enabled
        self.delay_s = delay_s
        self.unavailable_for = 0
        #: Further metadata paths (below /latest/), e.g. "meta-data/autoscaling/target-lifecycle-state".
        self.extra: dict[str, str] = {}
        self.requests: list[tuple[str, str, bool]] = []
        self._tokens: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="imds", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ImdsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ImdsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the endpoint answers ---------------------------------------------------------

    def issue_token(self, ttl_header: str | None) -> tuple[int, bytes]:
        if not self.issue_tokens:
            return 403, b"IMDSv2 is not available on this endpoint"
        try:
            ttl = int(ttl_header or "")
        except ValueError:
            return 400, b"missing or invalid token TTL header"
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return 400, b"token TTL out of range"
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl
        return 200, token.encode()

    def token_is_valid(self, token: str | None) -> bool:
        with self._lock:
            expires = self._tokens.get(token or "")
        return expires is not None and time.monotonic() < expires

    def document(self) -> dict:
        return {
            "accountId": self.account_id,
            "architecture": "x86_64",
            "availabilityZone": f"{self.region}a",
            "imageId": "ami-0123456789abcdef0",
            "instanceId": self.instance_id,
            "instanceType": "m7i.large",
            "pendingTime": "2026-01-01T00:00:00Z",
            "privateIp": self.private_ipv4,
            "region": self.region,
            "version": "2017-09-30",
        }

    def read(self, path: str) -> tuple[int, bytes]:
        """The body for a GET of ``path`` (below ``/latest/``), or a 404."""
        simple = {
            "meta-data/instance-id": self.instance_id,
            "meta-data/instance-type": self.instance_type,
            "meta-data/instance-life-cycle": self.life_cycle,
            "meta-data/local-ipv4": self.private_ipv4,
            "meta-data/placement/region": self.region,
            "meta-data/placement/availability-zone": f"{self.region}a",
            "dynamic/instance-identity/document": json.dumps(self.document()),
        }
        if path in simple:
            return 200, simple[path].encode()
        if path in self.extra:
            return 200, self.extra[path].encode()
        if path.rstrip("/") == "user-data":
            return (200, self.user_data) if self.user_data is not None else (404, b"")
        if path.startswith("meta-data/tags/instance") and self.tags_enabled:
            key = path.removeprefix("meta-data/tags/instance").strip("/")
            if not key:
                return 200, "\n".join(self.tags).encode()
            if key in self.tags:
                return 200, self.tags[key].encode()
        return 404, b""


def _handler_for(imds: ImdsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            self._pause()
            path = unquote(self.path)
            imds.requests.append(("PUT", path, False))
            if self._unavailable():
                return self._reply(503, b"")
            if path != "/latest/api/token":
                return self._reply(404, b"")
            self._reply(*imds.issue_token(self.headers.get(TOKEN_TTL_HEADER)))

        def do_GET(self) -> None:
            self._pause()
            path = unquote(self.path)
            valid = imds.token_is_valid(self.headers.get(TOKEN_HEADER))
            imds.requests.append(("GET", path, valid))
            if self._unavailable():
                return self._reply(503, b"")
            if not valid:
                return self._reply(401, b"")
            if not path.startswith("/latest/"):
                return self._reply(404, b"")
            self._reply(*imds.read(path.removeprefix("/latest/")))

        def _unavailable(self) -> bool:
            with imds._lock:
                if imds.unavailable_for <= 0:
                    return False
                imds.unavailable_for -= 1
                return True

        def _pause(self) -> None:
            if imds.delay_s:
                time.sleep(imds.delay_s)

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    return Handler
