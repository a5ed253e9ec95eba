"""A fault-injecting proxy in front of the moto server: AWS API calls fail the ways they fail in real life.

Point ``AWS_ENDPOINT_URL`` at ``proxy.url``. Each request is forwarded to moto unless a fault is due
for its operation (``GetParameter``, ``PutLogEvents``...):

- ``plan[operation]`` is a sequence consumed one entry per request (``None`` forwards);
- else, with ``share`` > 0, that fraction of requests (seeded, so runs repeat) gets a fault from ``kinds``;
- else ``outage`` (a set of operations, or ``{"*"}``) fails every such request with ``outage_fault``.

Faults: ``"throttle"`` (HTTP 400 ``ThrottlingException`` in the request's protocol: JSON or query XML),
``"500"`` and ``"503"`` (server errors), ``"reset"`` (the connection is reset before any answer) and
``"slow"`` (answered after ``slow_s`` seconds). ``emulate`` answers operations moto lacks (e.g.
``CompleteLifecycleAction``) and records their parameters in ``emulated``; ``log`` records
(operation, fault or "ok") for every request.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

FAULTS = ("throttle", "500", "503", "reset", "slow")
QUERY_NAMESPACE = {"autoscaling": "http://autoscaling.amazonaws.com/doc/2011-01-01/"}


class FaultProxy:
    """Forwards to ``target`` (moto) from a thread; a context manager."""

    def __init__(self, target: str, *, share: float = 0.0, kinds: tuple[str, ...] = ("throttle", "503", "reset"),
                 slow_s: float = 2.0, seed: int = 10):
        parts = urlsplit(target)
        self.target = (parts.hostname, parts.port)
        self.share, self.kinds, self.slow_s = share, kinds, slow_s
        self.random = random.Random(seed)
        self.plan: dict[str, deque] = defaultdict(deque)
        self.outage: set[str] = set()
        self.outage_fault = "503"
        self.emulate: dict[str, str] = {}
        self.emulated: list[tuple[str, dict[str, str]]] = []
        self.log: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def schedule(self, operation: str, *faults: str | None) -> None:
        """The next requests of ``operation`` get these faults, in order (``None``: forwarded)."""
        with self._lock:
            self.plan[operation].extend(faults)

    def served(self, operation: str | None = None, fault: str | None = None) -> int:
        """How many requests (of ``operation``) got ``fault`` (None: any fault; "ok": forwarded)."""
        with self._lock:
            return sum(1 for op, got in self.log if operation in (None, op)
                       and (got == fault if fault else got != "ok"))

    def fault_for(self, operation: str) -> str | None:
        with self._lock:
            if self.plan.get(operation):
                fault = self.plan[operation].popleft()
            elif self.share and self.random.random() < self.share:
                fault = self.random.choice(self.kinds)
            elif operation in self.outage or "*" in self.outage:
                fault = self.outage_fault
            else:
                fault = None
            self.log.append((operation, fault or "ok"))
            return fault


def describe_request(headers, body: bytes) -> tuple[str, str, dict[str, str]]:
    """(service, operation, parameters) of a signed AWS request, JSON or query protocol."""
    credential = headers.get("Authorization", "").partition("Credential=")[2].split(",")[0].split("/")
    service = credential[3] if len(credential) > 3 else ""
    target = headers.get("X-Amz-Target")
    if target:
        return service, target.rsplit(".", 1)[-1], {}
    params = dict(parse_qsl(body.decode(errors="replace")))
    return service, params.get("Action", "?"), params


def error_body(service: str, json_protocol: bool, code: str, message: str) -> tuple[str, bytes]:
    if json_protocol:
        return "application/x-amz-json-1.1", json.dumps({"__type": code, "message": message}).encode()
    namespace = QUERY_NAMESPACE.get(service, "")
    xml = (f'<ErrorResponse xmlns="{namespace}"><Error><Type>Sender</Type><Code>{code}</Code>'
           f"<Message>{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>")
    return "text/xml", xml.encode()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self._handle()

        def do_GET(self) -> None:
            self._handle()

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            service, operation, params = describe_request(self.headers, body)
            json_protocol = "X-Amz-Target" in self.headers
            fault = proxy.fault_for(operation)
            if fault == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if fault == "throttle":
                return self._reply(400, *error_body(service, json_protocol, "ThrottlingException", "Rate exceeded"))
            if fault in ("500", "503"):
                return self._reply(int(fault), *error_body(service, json_protocol, "ServiceUnavailable",
                                                           "Service is unavailable"))
            if fault == "slow":
                time.sleep(proxy.slow_s)
            if operation in proxy.emulate:
                proxy.emulated.append((operation, params))
                return self._reply(200, "text/xml", proxy.emulate[operation].encode())
            self._forward(body)

        def _forward(self, body: bytes) -> None:
            connection = http.client.HTTPConnection(*proxy.target, timeout=60)
            headers = {key: value for key, value in self.headers.items() if key.lower() != "connection"}
            connection.request(self.command, self.path, body=body, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            connection.close()

        def _reply(self, status: int, content_type: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def finish(self) -> None:
            try:
                super().finish()
            except OSError:
                pass

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    return Handler


def complete_lifecycle_action_response() -> str:
    """moto has no CompleteLifecycleAction: what AWS answers to it."""
    return (f'<CompleteLifecycleActionResponse xmlns="{QUERY_NAMESPACE["autoscaling"]}"><CompleteLifecycleActionResult/>'
            "<ResponseMetadata><RequestId>fault-proxy</RequestId></ResponseMetadata></CompleteLifecycleActionResponse>")
