"""Every package an environment spec names exists on conda-forge (envs/conda-forge-names.txt), and the list can be refreshed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import rattler
import yaml

from support import REPO

NAMES_FILE = REPO / "envs" / "conda-forge-names.txt"
REFRESH = REPO / "envs" / "conda_forge_names.py"
REGISTRY = "https://github.com/conda-forge/feedstock-outputs"


def read_names(path: Path) -> tuple[dict[str, str], list[str]]:
    """(header fields, names) of a names file: ``# key: value`` lines, then one name a line."""
    fields, names = {}, []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            key, sep, value = line.lstrip("# ").partition(": ")
            if sep and key.isidentifier():
                fields[key] = value
        elif line.strip():
            names.append(line.strip())
    return fields, names


def registry_path(name: str) -> str:
    """Where feedstock-outputs registers ``name`` (scripts/shard_repo.py: first three letters or digits of "<name>.json")."""
    shard = [char for char in f"{name}.json" if char.isalnum()][:3]
    return "/".join(["outputs", *shard, f"{name}.json"])


def unknown_packages(spec: Path, names_file: Path = NAMES_FILE) -> list[str]:
    """One message per dependency of ``spec`` that is not a listed conda-forge package, saying how to fix it."""
    fields, names = read_names(names_file)
    known = set(names)
    problems = []
    for entry in yaml.safe_load(spec.read_text())["dependencies"]:
        if not isinstance(entry, str):
            problems.append(f"{spec.relative_to(spec.parents[2])}: {entry!r} is not a conda package (pip sections cannot be locked)")
            continue
        name = rattler.MatchSpec(entry).name.normalized
        if name not in known:
            problems.append(
                f"{spec.relative_to(spec.parents[2])}: {name!r} is not in {names_file.name} "
                f"(conda-forge names from feedstock-outputs, refreshed {fields.get('refreshed', '?')}; "
                f"coverage: {fields.get('coverage', '?').split('.')[0]}). If conda-forge publishes it "
                f"({REGISTRY}/blob/main/{registry_path(name)} exists), add it to envs/{names_file.name} or run "
                f"`make conda-forge-names`; otherwise depend on the package conda-forge carries instead."
            )
    return problems


@pytest.mark.parametrize("spec", sorted((REPO / "envs").glob("*/environment.yml")), ids=lambda path: path.parent.name)
def test_every_package_of_every_environment_is_on_conda_forge(spec):
    problems = unknown_packages(spec)
    assert not problems, "\n".join(problems)


def test_a_package_conda_forge_lacks_fails_naming_it_and_the_fix(tmp_path):
    spec = tmp_path / "envs" / "broken" / "environment.yml"
    spec.parent.mkdir(parents=True)
    spec.write_text(yaml.safe_dump({"channels": ["conda-forge"], "dependencies": [
        "python 3.11.*", "ec2-metadata >=2.14", "prometheus-client", {"pip": ["ec2-metadata"]}]}))
    problems = unknown_packages(spec)
    assert [problem.split(":")[1].split()[0] for problem in problems] == ["'ec2-metadata'", "'prometheus-client'", "{'pip'"]
    assert problems[0].startswith("envs/broken/environment.yml: 'ec2-metadata' is not in conda-forge-names.txt")
    assert f"{REGISTRY}/blob/main/outputs/e/c/2/ec2-metadata.json" in problems[0]
    assert "make conda-forge-names" in problems[0] and "refreshed 2026-12-02" in problems[0]


def test_the_list_says_where_it_comes_from_and_what_it_covers():
    fields, names = read_names(NAMES_FILE)
    assert fields["source"].startswith("conda-forge/feedstock-outputs")
    assert fields["refreshed"].startswith("2026-12-02") and fields["coverage"] and "make conda-forge-names" in fields["refresh"]
    assert names == sorted(set(names)) and all(name == name.lower() for name in names)
    assert {"ec2-metadata", "ec2_metadata", "prometheus-client"}.isdisjoint(names)


@pytest.fixture
def registry():
    """A feedstock-outputs.json served on 127.0.0.1; set ``registry.body`` to what it answers."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(server.body)))
            self.end_headers()
            self.wfile.write(server.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.body = b""
    server.url = f"http://127.0.0.1:{server.server_address[1]}/feedstock-outputs.json"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _refresh(url: str, out: Path, min_names: int = 3) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REFRESH), "--url", url, "--out", str(out), "--min-names", str(min_names)],
                          capture_output=True, text=True, timeout=60)


def test_the_refresh_writes_the_complete_list_the_tests_then_read(registry, tmp_path):
    registry.body = json.dumps({"python": ["python"], "numpy": ["numpy"], "_libgcc_mutex": ["_libgcc_mutex"],
                                "prometheus_client": ["prometheus_client"], "diffpy.cmi": ["diffpy.cmi"]}).encode()
    out = tmp_path / "conda-forge-names.txt"
    done = _refresh(registry.url, out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"conda-forge-names: wrote 5 names to {out}"
    fields, names = read_names(out)
    assert names == ["_libgcc_mutex", "diffpy.cmi", "numpy", "prometheus_client", "python"]
    assert fields["coverage"] == "the complete list (5 names)" and f"read as {registry.url}" in out.read_text()


@pytest.mark.parametrize("body, reason", [
    (b"<html>rate limited</html>", "not JSON"),
    (json.dumps(["python", "numpy"]).encode(), "expected a JSON object"),
    (json.dumps({"python": ["python"], "scipy": ["scipy"], "pandas": ["pandas"]}).encode(), "without numpy"),
    (json.dumps({"python": ["python"], "numpy": ["numpy"]}).encode(), "2 names; the registry has at least 3"),
])
def test_a_bad_download_leaves_the_list_as_it_was(registry, tmp_path, body, reason):
    registry.body = body
    out = tmp_path / "conda-forge-names.txt"
    out.write_text("python\n")
    done = _refresh(registry.url, out)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"conda-forge-names: error: {registry.url}: ") and reason in line
    assert out.read_text() == "python\n"


def test_an_unreachable_registry_is_one_line(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/feedstock-outputs.json"
    done = _refresh(url, tmp_path / "names.txt")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"conda-forge-names: error: cannot download {url}: ") and "refused" in line
    assert not (tmp_path / "names.txt").exists()
