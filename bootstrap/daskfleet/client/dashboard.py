"""``daskfleet dashboard CLUSTER``: the cluster's dashboard in a browser that holds no certificate.

The dashboard port asks every request for a certificate of the cluster (``daskfleet.trust.dashboard``). A
forwarder on 127.0.0.1 (a free port) presents the user's own certificate to it, for every page, API call and
websocket (Bokeh's, ``/eventstream``), and serves plain HTTP on loopback: the browser needs no certificate and
shows no warning, and dask-labextension can use the same URL. It answers only requests addressed to its own
loopback origin (a web page elsewhere cannot use it: the Host header of every request and the Origin of every
websocket must be the forwarder's own, which stops DNS rebinding and cross-site websocket hijacking). Its URL is
recorded (``record_path``), where ``daskfleet.connect`` finds it for ``client.dashboard_link``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any

from tornado import httputil, web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.websocket import WebSocketClosedError, WebSocketHandler, websocket_connect

from ..conventions import daskfleet_home
from ..trust import pki

logger = logging.getLogger("daskfleet.dashboard")

LOOPBACK = "127.0.0.1"
#: Under $DASKFLEET_HOME: ``<cluster>.json`` = {"url", "pid"} while a forwarder for the cluster runs.
RECORDS_DIR = "dashboards"
#: Not passed on either way: they describe one hop (RFC 9110 7.6.1), or the body tornado re-encodes.
HOP_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding",
    "upgrade", "host", "content-length", "content-encoding", "accept-encoding", "origin",
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol",
})
PROXY_TIMEOUT_S = 120.0


#: In a local cluster's state directory: its forwarder's record (``local up`` starts one, ``local down`` stops it).
LOCAL_RECORD_FILE = "dashboard.json"


def record_path(cluster: str, state_dir: Path | None = None) -> Path:
    """Where the forwarder to ``cluster`` says where it is: a local cluster's state directory, else $DASKFLEET_HOME."""
    if state_dir is not None:
        return Path(state_dir) / LOCAL_RECORD_FILE
    return daskfleet_home() / RECORDS_DIR / f"{cluster}.json"


def running_forwarder(cluster: str, state_dir: Path | None = None) -> str | None:
    """The URL of this machine's running forwarder to ``cluster``'s dashboard, or None."""
    import psutil  # noqa: PLC0415

    try:
        record = json.loads(record_path(cluster, state_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record.get("url") if psutil.pid_exists(int(record.get("pid", 0))) else None


class _Forward(WebSocketHandler):
    """Every path: an HTTP request, or a websocket upgrade, passed to the dashboard with the user's certificate."""

    def initialize(self, forwarder: DashboardForwarder) -> None:
        self.forwarder = forwarder
        self.upstream: Any = None

    def prepare(self) -> None:
        if self.request.host not in self.forwarder.own_hosts():
            raise web.HTTPError(403, f"the dashboard forwarder answers only at {self.forwarder.url}")

    def check_origin(self, origin: str) -> bool:
        return origin.rstrip("/") in self.forwarder.own_origins()

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return subprotocols[0] if subprotocols else None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await super().get(*args, **kwargs)
        else:
            await self._pass_request()

    async def post(self, *args: Any, **kwargs: Any) -> None:
        await self._pass_request()

    put = patch = delete = options = post

    def _upstream_headers(self) -> dict[str, str]:
        return {name: value for name, value in self.request.headers.get_all() if name.lower() not in HOP_HEADERS}

    async def _pass_request(self) -> None:
        body = self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None
        request = HTTPRequest(
            self.forwarder.upstream + self.request.uri, method=self.request.method, headers=self._upstream_headers(),
            body=body, allow_nonstandard_methods=True, follow_redirects=False, ssl_options=self.forwarder.context,
            request_timeout=PROXY_TIMEOUT_S, decompress_response=True,
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        if response.code == 599:
            self.set_status(502)
            self.finish(f"daskfleet dashboard forwarder: cannot reach {self.forwarder.upstream}: {response.error}\n")
            return
        self.set_status(response.code, response.reason)
        self._headers = httputil.HTTPHeaders()
        for name, value in response.headers.get_all():
            if name.lower() == "location" and value.startswith(self.forwarder.upstream):
                value = self.forwarder.url + value[len(self.forwarder.upstream):]
            if name.lower() not in HOP_HEADERS:
                self.add_header(name, value)
        if response.body and self.request.method != "HEAD":
            self.write(response.body)
        self.finish()

    async def open(self, *args: Any, **kwargs: Any) -> None:
        wanted = [p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        url = "wss://" + self.forwarder.upstream.removeprefix("https://") + self.request.uri
        request = HTTPRequest(url, headers=self._upstream_headers(), ssl_options=self.forwarder.context,
                              request_timeout=PROXY_TIMEOUT_S)
        self.upstream = await websocket_connect(request, subprotocols=wanted or None)
        asyncio.ensure_future(self._pass_messages())

    async def _pass_messages(self) -> None:
        try:
            while (message := await self.upstream.read_message()) is not None:
                await self.write_message(message, binary=isinstance(message, bytes))
        except WebSocketClosedError:
            pass
        finally:
            self.close()

    async def on_message(self, message: str | bytes) -> None:
        if self.upstream is not None:
            with contextlib.suppress(WebSocketClosedError):
                await self.upstream.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()


class DashboardForwarder:
    """Plain HTTP on 127.0.0.1 in front of ``upstream`` (``https://host:port``), presenting ``context``'s certificate."""

    def __init__(self, upstream: str, context: ssl.SSLContext, *, port: int = 0):
        self.upstream = upstream.rstrip("/")
        self.context = context
        self.port = port
        self.server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def own_hosts(self) -> set[str]:
        return {f"{LOOPBACK}:{self.port}", f"localhost:{self.port}"}

    def own_origins(self) -> set[str]:
        return {f"http://{host}" for host in self.own_hosts()}

    def start(self) -> str:
        """Listen (on the running loop's thread), and return the URL."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        app = web.Application([(r"/.*", _Forward, {"forwarder": self})], websocket_ping_interval=30)
        self.server = HTTPServer(app, xheaders=False)
        self.server.add_sockets([sock])
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def record(self, path: Path) -> Path:
        """Say where this forwarder is, for ``daskfleet.connect``'s ``dashboard_link``."""
        pki.ensure_private_dir(path.parent)
        pki.write_private(path, json.dumps({"url": self.url, "pid": os.getpid(), "upstream": self.upstream}))
        return path
