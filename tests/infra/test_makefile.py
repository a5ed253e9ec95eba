"""make preview/up/down wrap the Pulumi CLI, and say how to install it where it is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.program import INFRA_DIR

REPO = INFRA_DIR.parent


def make(*args: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": path}, stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def path_without_pulumi(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("make", "sh", "bash"):
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    return str(tools)


@pytest.mark.parametrize("target", ["preview", "up", "down"])
def test_without_the_pulumi_cli_the_target_stops_with_one_line_saying_how_to_install_it(path_without_pulumi, target):
    result = make(target, "STACK=dev", path=path_without_pulumi)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Pulumi CLI" in lines[0] and "https://www.pulumi.com/docs/install/" in lines[0] and f"make {target}" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""


POLICY_PACK = ["--policy-pack", str(INFRA_DIR / "policy")]


@pytest.mark.parametrize(
    ("target", "arguments"),
    [("preview", ["preview", *POLICY_PACK]), ("up", ["up", *POLICY_PACK]), ("down", ["destroy"])],
)
def test_the_targets_run_pulumi_on_the_infra_project_and_the_chosen_stack(tmp_path, target, arguments):
    fake = tmp_path / "pulumi"
    fake.write_text(f"#!{sys.executable}\nimport sys\nprint('PULUMI', *sys.argv[1:])\n")
    fake.chmod(0o755)
    result = make("-n", target, "STACK=team-a", f"PULUMI={fake}", path=os.environ["PATH"])
    assert result.returncode == 0, result.stderr
    run = [line for line in result.stdout.splitlines() if str(fake) in line]
    assert run and run[-1].split(str(fake), 1)[1].split() == ["-C", "infra", *arguments, "--stack", "team-a"]
    if "--policy-pack" in arguments:  # the pack's own directory, which the CLI loads as a pack
        assert (Path(POLICY_PACK[1]) / "PulumiPolicy.yaml").is_file()
