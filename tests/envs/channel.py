"""A conda channel built by the tests from what this machine has: no conda channel is reachable here.

What is real: the packages are real conda packages (noarch python packages converted from
wheels by whl2conda, and a ``python`` package per platform), the channel is indexed by
py-rattler, served over HTTP on 127.0.0.1, solved, locked and installed for real.

What is emulated: the ``python`` package is a stub. For linux-64 it is a virtual
environment's skeleton (``bin/python`` links to the interpreter running the tests, beside a
``pyvenv.cfg``), so an installed prefix runs; a ``.pth`` file lets that interpreter import
this checkout's tooling environment (distributed, daskfleet's dependencies), which the
prefix's own site-packages and conda-meta do not contain, so it counts in no fingerprint.
The other platforms' stubs only let locks be solved for all five platforms.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import http.server
import io
import json
import os
import platform as host_platform
import subprocess
import sys
import sysconfig
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rattler.index import index_fs

from daskfleet.conventions import ENV_PLATFORMS

PYTHON_VERSION = host_platform.python_version()
#: Tiny pure-Python projects: name -> versions, and what each depends on.
PROJECTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alpha": (("1.0", "1.1"), ("beta",)),
    "beta": (("2.0",), ()),
    "gamma": (("0.1",), ()),
}
#: Metadata alone, at a version no real package has: a lock with it changes a core package's reported version
#: (distributed reads versions from metadata) while the real module keeps working, through the tooling environment.
METADATA_ONLY = {"toolz": "0.0.1"}


def make_wheel(
    directory: Path, name: str, version: str, depends: Iterable[str] = (), payload: bytes = b"", module: bool = True,
) -> Path:
    """A minimal, valid pure-Python wheel with one module that knows its version (and ``payload``, for weight).

    ``module=False`` gives metadata alone: a distribution that says it is installed at ``version``.
    """
    dist_info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {
        **({f"{name}/__init__.py": f"__version__ = {version!r}\n".encode()} if module else {}),
        f"{dist_info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                  + "".join(f"Requires-Dist: {dependency}\n" for dependency in depends)).encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: daskfleet-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if payload:
        files[f"{name}/payload.bin"] = payload
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return wheel


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> dict:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))
    return {"_path": name, "path_type": "hardlink", "sha256": hashlib.sha256(data).hexdigest(), "size_in_bytes": len(data)}


def _link(tar: tarfile.TarFile, name: str, target: str) -> dict:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 0
    tar.addfile(info)
    return {"_path": name, "path_type": "softlink"}


def tooling_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def stub_python(subdir: str, directory: Path) -> Path:
    """The stub ``python`` package of one platform (runnable for linux-64; see the module docstring)."""
    major_minor = ".".join(PYTHON_VERSION.split(".")[:2])
    interpreter = os.path.realpath(sys.executable)
    buffer = io.BytesIO()
    paths = []
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        paths.append(_add(tar, "pyvenv.cfg", (
            f"home = {os.path.dirname(interpreter)}\ninclude-system-site-packages = false\nversion = {PYTHON_VERSION}\n"
        ).encode()))
        if subdir == "linux-64":
            paths.append(_link(tar, "bin/python", interpreter))
            paths.append(_link(tar, f"bin/python{major_minor}", "python"))
            paths.append(_add(tar, f"lib/python{major_minor}/site-packages/_daskfleet_test_tooling.pth",
                              f"import site; site.addsitedir({tooling_site_packages()!r})\n".encode()))
        index = {
            "name": "python", "version": PYTHON_VERSION, "build": "0_stub", "build_number": 0, "depends": [],
            "subdir": subdir, "license": "PSF-2.0", "timestamp": 1700000000000,
        }
        _add(tar, "info/index.json", json.dumps(index).encode())
        _add(tar, "info/paths.json", json.dumps({"paths": paths, "paths_version": 1}).encode())
        _add(tar, "info/files", ("\n".join(entry["_path"] for entry in paths) + "\n").encode())
    target = directory / subdir / f"python-{PYTHON_VERSION}-0_stub.tar.bz2"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(buffer.getvalue())
    return target


def convert(wheel: Path, noarch_dir: Path, package_format: str = "V1") -> Path:
    """whl2conda: the wheel as a noarch python conda package (V1 ``.tar.bz2`` or V2 ``.conda``)."""
    whl2conda = Path(sys.executable).with_name("whl2conda")
    subprocess.run(
        [str(whl2conda), "convert", str(wheel), "--out-dir", str(noarch_dir), "--format", package_format, "--overwrite", "--quiet"],
        check=True, capture_output=True,
    )
    name, version = wheel.name.split("-")[:2]
    return next(path for path in noarch_dir.glob(f"{name}-{version}-*") if path.name.endswith((".tar.bz2", ".conda")))


def build_channel(root: Path) -> Path:
    """The test channel at ``root``: stub pythons for all five platforms, the PROJECTS as noarch packages."""
    for subdir in ENV_PLATFORMS:
        stub_python(subdir, root)
    noarch = root / "noarch"
    noarch.mkdir(parents=True, exist_ok=True)
    for name, (versions, depends) in PROJECTS.items():
        for version in versions:
            convert(make_wheel(root.parent / "wheels", name, version, depends), noarch)
    for name, version in METADATA_ONLY.items():
        convert(make_wheel(root.parent / "wheels", name, version, module=False), noarch)
    reindex(root)
    return root


def reindex(root: Path) -> None:
    asyncio.run(index_fs(root, force=True, write_shards=False))


@dataclass
class ChannelServer:
    """Serves a directory over HTTP on 127.0.0.1 and records every path asked for.

    ``bytes_per_s`` caps each response's rate (benchmarks: a channel across the internet, not loopback).
    """

    root: Path
    requests: list[str] = field(default_factory=list)
    bytes_per_s: float | None = None

    def __enter__(self) -> ChannelServer:
        log = self.requests
        self._throttle = _Throttle(lambda: self.bytes_per_s)
        handler = functools.partial(_Handler, log, self._throttle, directory=str(self.root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def package_requests(self) -> list[str]:
        """The package archives fetched so far (not repodata), by file name."""
        return [path.rsplit("/", 1)[-1] for path in self.requests if path.endswith((".tar.bz2", ".conda", ".whl"))]


class _Throttle:
    """One rate for every connection together: a link to the channel, not a rate per download."""

    def __init__(self, rate: Callable[[], float | None]):
        self.rate = rate
        self._lock = threading.Lock()
        self._free_at = 0.0

    def wait(self, size: int) -> None:
        rate = self.rate()
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._free_at)
            self._free_at = start + size / rate
            delay = self._free_at - now
        time.sleep(delay)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, log: list[str], throttle: _Throttle, *args, **kwargs):
        self._log = log
        self._throttle = throttle
        super().__init__(*args, **kwargs)

    def copyfile(self, source, outputfile) -> None:
        while data := source.read(1 << 16):
            self._throttle.wait(len(data))
            outputfile.write(data)

    def do_GET(self) -> None:
        self._log.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the requests are recorded, not printed."""


def write_spec(directory: Path, channel_url: str, dependencies: Sequence[str], platforms: Sequence[str] = ("linux-64",)) -> Path:
    """An environment.yml in ``directory`` using the test channel."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"channels:\n  - {channel_url}/channel", "platforms:", *(f"  - {p}" for p in platforms), "dependencies:"]
    python = ".".join(map(str, sys.version_info[:2]))
    lines += [f"  - python {python}.*", *(f"  - {dependency}" for dependency in dependencies)]
    spec = directory / "environment.yml"
    spec.write_text("\n".join(lines) + "\n")
    return spec
