#!/usr/bin/env bash
# Provision a daskfleet node image on its build instance (Amazon Linux 2023, as root): the OS
# packages, a throw-away Python that performs the install, then install-env.sh.
#
#   DASKFLEET_LOCK, DASKFLEET_WHEEL, DASKFLEET_PLATFORM, DASKFLEET_FINGERPRINT: see install-env.sh
#   DASKFLEET_PROVISION   where Packer uploaded these scripts
set -euo pipefail

provision="${DASKFLEET_PROVISION:?DASKFLEET_PROVISION: the directory holding the provisioning scripts}"
wheel="${DASKFLEET_WHEEL:?DASKFLEET_WHEEL: the daskfleet wheel}"

# Python 3.11 runs the installer; the CloudWatch agent ships the node's journal (its configuration
# comes with each node's user data, which names the cluster's log group).
dnf install -y python3.11 amazon-cloudwatch-agent

# The installer: daskfleet's wheel and its dependencies from PyPI, in a venv removed afterwards.
bootstrap="$(mktemp -d /tmp/daskfleet-bootstrap.XXXXXX)"
trap 'rm -rf "$bootstrap"' EXIT
python3.11 -m venv "$bootstrap"
"$bootstrap/bin/pip" install --quiet --disable-pip-version-check "$wheel"

DASKFLEET_BOOTSTRAP_PYTHON="$bootstrap/bin/python" bash "$provision/install-env.sh"

systemctl daemon-reload
dnf clean all
