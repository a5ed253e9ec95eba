"""The image's build block run as Packer runs it: each provisioner's execute_command rendered and run for real.

The build instance is emulated in a temporary root: ``sudo``, ``dnf``, ``systemctl`` and
``python3.11`` are shims on the PATH (they record their calls; ``dnf`` installs a CloudWatch agent
of the version the test asks for; ``python3.11 -m venv`` makes a venv whose python is the tests'
interpreter). Everything else is real: the rendered commands, build-image.sh, install-env.sh,
the lock, the package cache and the prefix.
"""

from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
from envs.test_lock_and_install import locked
from hcl2.utils import SerializationOptions
from images.packer import packer_vars, render_execute_command, run_build

from daskfleet import conventions
from daskfleet.aws.userdata import CLOUDWATCH_AGENT_JOURNALD_MIN_VERSION, UNIT_PATH, render_unit, unit_files
from daskfleet.environments.lockfile import read_lock

from support import REPO

TEMPLATE = REPO / "images" / "daskfleet.pkr.hcl"
BUILD_SCRIPT = REPO / "images" / "provision" / "build-image.sh"
REQUIRED = ("DASKFLEET_LOCK", "DASKFLEET_WHEEL", "DASKFLEET_FINGERPRINT", "DASKFLEET_PROVISION")
AGENT_VERSION_FILE = "opt/aws/amazon-cloudwatch-agent/bin/CWAGENT_VERSION"
CURRENT_AGENT = "1.300073.2b1889"  # as the agent writes its version

SHIMS = {
    # Runs its command as the caller (the tests are root already). Like sudo without -E it starts from a
    # fresh environment; it keeps PATH either way, so the command finds these shims (sudo's secure_path
    # finds the real programs on the instance).
    "sudo": """#!/bin/sh
echo "sudo $*" >> "$SHIM_LOG"
keep=no
while [ $# -gt 0 ]; do
  case "$1" in
    -E) keep=yes; shift ;;
    -*) echo "sudo shim: unsupported option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ "$keep" = yes ] && exec "$@"
exec env -i PATH="$PATH" HOME=/root SHIM_LOG="$SHIM_LOG" "$@"
""",
    "dnf": """#!/bin/sh
echo "dnf $*" >> "$SHIM_LOG"
case " $* " in
  *" amazon-cloudwatch-agent "*)
    [ -n "$SHIM_AGENT_VERSION" ] || exit 0
    mkdir -p "$DASKFLEET_ROOT/opt/aws/amazon-cloudwatch-agent/bin"
    echo "$SHIM_AGENT_VERSION" > "$DASKFLEET_ROOT/opt/aws/amazon-cloudwatch-agent/bin/CWAGENT_VERSION" ;;
esac
""",
    "systemctl": """#!/bin/sh
echo "systemctl $*" >> "$SHIM_LOG"
""",
    "python3.11": """#!/bin/sh
echo "python3.11 $*" >> "$SHIM_LOG"
[ -z "$SHIM_STOP_AT_VENV" ] || { echo "python3.11 shim: stopping here" >&2; exit 97; }
[ "$1" = -m ] && [ "$2" = venv ] && [ $# -eq 3 ] || { echo "python3.11 shim: unsupported: $*" >&2; exit 2; }
mkdir -p "$3/bin"
printf '#!/bin/sh\\nexec "%s" "$@"\\n' "$SHIM_PYTHON" > "$3/bin/python"
printf '#!/bin/sh\\necho "pip $*" >> "%s"\\nfor last; do :; done\\n[ -f "$last" ]\\n' "$SHIM_LOG" > "$3/bin/pip"
chmod +x "$3/bin/python" "$3/bin/pip"
""",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    with TEMPLATE.open() as handle:
        return hcl2.load(handle, serialization_options=SerializationOptions(strip_string_quotes=True, explicit_blocks=False))


@pytest.fixture
def build(template) -> dict[str, Any]:
    """The template's build block, a copy each test may change."""
    (block,) = copy.deepcopy(template["build"])
    return block


class Instance:
    """A build instance in ``tmp``: its root, Packer's staging directory and the login session's environment."""

    def __init__(self, tmp: Path, lock: Path, wheel: Path, fingerprint: str, agent_version: str | None = CURRENT_AGENT):
        self.tmp, self.root, self.log = tmp, tmp / "root", tmp / "calls.log"
        self.root.mkdir(parents=True)
        shims = tmp / "shims"
        shims.mkdir()
        for name, text in SHIMS.items():
            (shims / name).write_text(text)
            (shims / name).chmod(0o755)
        self.values = {
            "local.staging": str(tmp / "daskfleet-image"), "path.root": str(REPO / "images"),
            "var.lock_file": str(lock), "var.wheel_file": str(wheel), "var.platform": "linux-64",
            "var.fingerprint": fingerprint,
        }
        self.env = {  # ec2-user's session over Session Manager, plus the shims' settings and the test root
            "PATH": f"{shims}{os.pathsep}/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp / "home"), "USER": "ec2-user",
            "SHIM_LOG": str(self.log), "SHIM_PYTHON": sys.executable, "SHIM_AGENT_VERSION": agent_version or "",
            "DASKFLEET_ROOT": str(self.root), "DASKFLEET_HOME": os.environ.get("DASKFLEET_HOME", str(tmp / "dfhome")),
        }

    def run(self, build: dict[str, Any]):
        return run_build(build, self.values, self.tmp / "remote", self.env)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def _placeholders(tmp_path: Path) -> tuple[Path, Path]:
    lock, wheel = tmp_path / "conda-lock.yml", tmp_path / "daskfleet-0.1.0-py3-none-any.whl"
    lock.write_text("version: 1\n")
    wheel.write_bytes(b"")
    return lock, wheel


def _last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_packers_vars_are_sorted_single_quoted_and_carry_packers_own():
    rendered = packer_vars(["B=it's", "A=x y"], "node", "amazon-ebs")
    assert rendered == "A='x y' B='it'\"'\"'s' PACKER_BUILDER_TYPE='amazon-ebs' PACKER_BUILD_NAME='node' "
    assert render_execute_command("sudo -E env {{ .Vars }} bash '{{.Path}}'", "A='1' ", "/tmp/s.sh") == \
        "sudo -E env A='1'  bash '/tmp/s.sh'"


def test_the_build_block_gives_the_image_its_environment(build, home, channel, tmp_path, daskfleet_wheel):
    lock = locked(tmp_path, channel, "image", ["alpha ==1.0"])
    fingerprint = read_lock(lock).fingerprint("linux-64")
    instance = Instance(tmp_path / "instance", lock, daskfleet_wheel, fingerprint)

    run = instance.run(build)
    assert [result.returncode for result in run.results] == [0, 0], run.last.stderr
    assert run.commands[1].startswith("sudo -E env DASKFLEET_FINGERPRINT='sha256:")
    assert f"build-image: amazon-cloudwatch-agent {CURRENT_AGENT} reads the journal" in run.last.stdout

    staging = instance.values["local.staging"]
    calls = instance.calls()
    assert calls[0].startswith("sudo -E env DASKFLEET_FINGERPRINT=")
    assert calls[1] == "dnf install -y python3.11 python3.11-pip amazon-cloudwatch-agent"
    assert f"pip install --quiet --disable-pip-version-check {staging}/{daskfleet_wheel.name}" in calls
    assert calls[-2:] == ["systemctl daemon-reload", "dnf clean all"]

    short = conventions.short_fingerprint(fingerprint)
    base = instance.root / "opt" / "daskfleet"
    assert os.readlink(base / "env") == f"envs/{short}"
    # The package cache stays on the image for later delta installs, daskfleet's wheel with it.
    assert len(list((base / "pkgs" / "archives").glob("*/*.tar.bz2"))) == 3
    assert list((base / "pkgs" / "wheels").glob("daskfleet-*.whl"))
    assert (base / "locks" / f"{short}.yml").read_text() == lock.read_text()
    for path, text in unit_files().items():  # the template and the worker's memory drop-in
        assert (instance.root / path.lstrip("/")).read_text() == text, path
    assert (instance.root / UNIT_PATH.lstrip("/")).read_text() == render_unit()


@pytest.mark.parametrize("missing", REQUIRED)
def test_a_variable_the_provisioner_does_not_pass_stops_the_build_naming_it(build, tmp_path, missing):
    lock, wheel = _placeholders(tmp_path)
    (step,) = [step["shell"] for step in build["provisioner"] if "script" in step.get("shell", {})]
    step["environment_vars"] = [entry for entry in step["environment_vars"] if not entry.startswith(f"{missing}=")]
    instance = Instance(tmp_path / "instance", lock, wheel, "sha256:" + "0" * 64)

    run = instance.run(build)
    assert run.last.returncode == 1
    assert _last_line(run.last) == (f"build-image: error: {missing} is not set (Packer passes environment_vars to a "
                                    "script only through {{ .Vars }} in its execute_command)")
    assert not [call for call in instance.calls() if call.startswith("dnf")]  # nothing installed


def test_the_old_execute_command_reached_the_script_without_its_variables(build, tmp_path):
    lock, wheel = _placeholders(tmp_path)
    (step,) = [step["shell"] for step in build["provisioner"] if "script" in step.get("shell", {})]
    step["execute_command"] = "sudo -E bash '{{ .Path }}'"
    run = Instance(tmp_path / "instance", lock, wheel, "sha256:" + "0" * 64).run(build)
    assert run.last.returncode == 1 and _last_line(run.last).startswith("build-image: error: DASKFLEET_LOCK is not set")


@pytest.mark.parametrize("version", ["1.300069.1b1600", "1.247360.0", "Unknown", None])
def test_a_cloudwatch_agent_that_cannot_read_the_journal_stops_the_build(build, tmp_path, version):
    lock, wheel = _placeholders(tmp_path)
    instance = Instance(tmp_path / "instance", lock, wheel, "sha256:" + "0" * 64, agent_version=version)
    run = instance.run(build)
    assert run.last.returncode == 1
    line = _last_line(run.last)
    if version is None:
        assert line == f"build-image: error: the CloudWatch agent is not installed: {instance.root}/{AGENT_VERSION_FILE} is missing"
    else:
        assert line.startswith(f"build-image: error: amazon-cloudwatch-agent {version} is older than 1.300070.0, the first "
                               "that reads the journal (logs.logs_collected.journald): nodes built from this image would "
                               "ship no logs.")
    assert not [call for call in instance.calls() if call.startswith(("python3.11", "pip"))]  # stopped before the install


@pytest.mark.parametrize("version", ["1.300070.0", "1.300070.0b1500", "1.300071.0", "2.0.0"])
def test_a_cloudwatch_agent_that_reads_the_journal_lets_the_build_go_on(build, tmp_path, version):
    lock, wheel = _placeholders(tmp_path)
    instance = Instance(tmp_path / "instance", lock, wheel, "sha256:" + "0" * 64, agent_version=version)
    instance.env["SHIM_STOP_AT_VENV"] = "1"
    run = instance.run(build)
    assert run.last.returncode == 97, run.last.stderr  # the next step after the check: the installer's venv
    assert f"build-image: amazon-cloudwatch-agent {version} reads the journal (>= 1.300070.0)" in run.last.stdout


def test_the_images_minimum_agent_is_the_one_user_data_relies_on():
    (declared,) = re.findall(r"^CLOUDWATCH_AGENT_MIN_VERSION=(\S+)$", BUILD_SCRIPT.read_text(), re.MULTILINE)
    assert declared == CLOUDWATCH_AGENT_JOURNALD_MIN_VERSION
