"""The node image: its Packer template's invariants, its scripts, and its install step run for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
from envs.test_lock_and_install import locked
from hcl2.utils import SerializationOptions

from daskfleet import conventions
from daskfleet.aws.userdata import UNIT_PATH, WORKER_ENVIRONMENT_DROPIN, render_unit, render_worker_environment
from daskfleet.environments.lockfile import read_lock
from daskfleet.node.prespawn import worker_environment

from support import REPO

TEMPLATE = REPO / "images" / "daskfleet.pkr.hcl"
INSTALL_STEP = REPO / "images" / "provision" / "install-env.sh"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    with TEMPLATE.open() as handle:
        return hcl2.load(handle, serialization_options=SerializationOptions(strip_string_quotes=True, explicit_blocks=False))


@pytest.fixture(scope="module")
def source(template) -> dict[str, Any]:
    (sources,) = template["source"]
    return sources["amazon-ebs"]["node"]


def _block(parent: dict[str, Any], name: str) -> dict[str, Any]:
    (block,) = parent[name]
    return block


def test_the_image_starts_from_a_current_aws_maintained_linux(source):
    ami = _block(source, "source_ami_filter")
    assert ami["owners"] == ["amazon"] and ami["most_recent"] is True
    assert ami["filters"]["name"].startswith("al2023-ami-2023.")  # Amazon Linux 2023 carries the SSM agent


def test_the_build_instance_is_reachable_only_through_session_manager(source, template):
    assert source["ssh_interface"] == "session_manager"
    assert source["temporary_security_group_source_cidrs"] == ["127.0.0.1/32"]
    assert "ssh_keypair_name" not in source and "security_group_id" not in source
    assert "0.0.0.0/0" not in TEMPLATE.read_text() and "::/0" not in TEMPLATE.read_text()
    statement = _block(_block(source, "temporary_iam_instance_profile_policy_document"), "Statement")
    assert all(action.startswith(("ssm:", "ssmmessages:")) for action in statement["Action"])


def test_imds_v2_is_required_on_the_builder_and_on_every_instance_of_the_image(source):
    metadata = _block(source, "metadata_options")
    assert metadata["http_tokens"] == "required" and metadata["http_put_response_hop_limit"] == 1
    assert source["imds_support"] == "v2.0"


def test_the_build_volume_and_the_ami_are_encrypted(source):
    volume = _block(source, "launch_block_device_mappings")
    assert volume["encrypted"] is True and volume["delete_on_termination"] is True
    assert source["encrypt_boot"] is True


def test_the_ami_is_tagged_as_the_program_looks_it_up(template):
    (locals_,) = template["locals"]
    tags = locals_["image_tags"]
    assert tags[conventions.TAG_ENV_FINGERPRINT] == "${var.fingerprint}"
    assert tags[conventions.TAG_ENV_NAME] == "${var.env_name}"
    assert tags[conventions.TAG_ENV_PLATFORM] == "${var.platform}"
    assert tags[conventions.TAG_GIT_COMMIT] == "${var.git_commit}"


def test_the_build_runs_the_provisioning_with_the_fingerprint_it_is_tagged_with(template):
    (build,) = template["build"]
    shell = [step["shell"] for step in build["provisioner"] if "shell" in step]
    provision = next(step for step in shell if "script" in step)
    assert provision["script"].endswith("/provision/build-image.sh")
    assert "DASKFLEET_FINGERPRINT=${var.fingerprint}" in provision["environment_vars"]
    build_script = (REPO / "images" / "provision" / "build-image.sh").read_text()
    assert "install-env.sh" in build_script and "amazon-cloudwatch-agent" in build_script


def _run_install_step(root: Path, lock: Path, wheel: Path, fingerprint: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ, "DASKFLEET_ROOT": str(root), "DASKFLEET_LOCK": str(lock), "DASKFLEET_WHEEL": str(wheel),
        "DASKFLEET_FINGERPRINT": fingerprint, "DASKFLEET_PLATFORM": "linux-64", "DASKFLEET_BOOTSTRAP_PYTHON": sys.executable,
    }
    return subprocess.run(["bash", str(INSTALL_STEP)], env=env, capture_output=True, text=True, timeout=300)


def test_the_install_step_builds_the_images_environment_for_real(home, channel, tmp_path, daskfleet_wheel):
    lock = locked(tmp_path, channel, "image", ["alpha ==1.0"])
    fingerprint = read_lock(lock).fingerprint("linux-64")
    root = tmp_path / "root"
    result = _run_install_step(root, lock, daskfleet_wheel, fingerprint)
    assert result.returncode == 0, result.stderr
    short = conventions.short_fingerprint(fingerprint)
    base = root / "opt" / "daskfleet"
    assert os.readlink(base / "env") == f"envs/{short}"
    inside = subprocess.run([str(base / "env" / "bin" / "daskfleet"), "fingerprint"], capture_output=True, text=True, timeout=60)
    assert inside.stdout.strip() == fingerprint
    # The package cache stays on the image for later delta installs, daskfleet's wheel with it.
    assert len(list((base / "pkgs" / "archives").glob("*/*.tar.bz2"))) == 3
    assert list((base / "pkgs" / "wheels").glob("daskfleet-*.whl"))
    assert (base / "locks" / f"{short}.yml").read_text() == lock.read_text()
    assert (root / UNIT_PATH.lstrip("/")).read_text() == render_unit()
    dropin = (root / WORKER_ENVIRONMENT_DROPIN.lstrip("/")).read_text()
    assert dropin == render_worker_environment(worker_environment({}))
    assert 'Environment="OMP_NUM_THREADS=1"' in dropin and 'Environment="MALLOC_TRIM_THRESHOLD_=65536"' in dropin


def test_the_install_step_stops_when_the_lock_is_not_the_environment_the_image_is_tagged_for(
    home, channel, tmp_path, daskfleet_wheel
):
    lock = locked(tmp_path, channel, "image", ["alpha ==1.0"])
    wrong = "sha256:" + "0" * 64
    result = _run_install_step(tmp_path / "root", lock, daskfleet_wheel, wrong)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "install-env: error: the lock's fingerprint for linux-64 is sha256:"
    ) and wrong in result.stderr
    assert not (tmp_path / "root" / "opt" / "daskfleet" / "env").exists()


def test_make_image_stops_with_an_install_hint_when_packer_is_missing():
    result = subprocess.run(
        ["make", "--no-print-directory", "image", "PACKER=/nonexistent/packer", "REGION=eu-west-1"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "the Packer CLI (/nonexistent/packer) is not installed; install Packer 1.10 or newer" in result.stderr
