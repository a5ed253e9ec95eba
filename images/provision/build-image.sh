#!/usr/bin/env bash
# Provision a daskfleet node image on its build instance (Amazon Linux 2023, as root): the OS
# packages, a throw-away Python that performs the install, then install-env.sh.
#
#   DASKFLEET_LOCK, DASKFLEET_WHEEL, DASKFLEET_PLATFORM, DASKFLEET_FINGERPRINT: see install-env.sh
#   DASKFLEET_PROVISION   where Packer uploaded these scripts
#   DASKFLEET_ROOT        look for installed files below this directory instead of / (tests)
set -euo pipefail

die() {
  echo "build-image: error: $*" >&2
  exit 1
}

# The CloudWatch agent reads the journal (logs.logs_collected.journald, the configuration each node's
# user data gives it: daskfleet.aws.userdata) from this version on. An older one refuses that
# configuration, and the nodes would ship no logs at all.
CLOUDWATCH_AGENT_MIN_VERSION=1.300070.0
CLOUDWATCH_AGENT_VERSION_FILE=/opt/aws/amazon-cloudwatch-agent/bin/CWAGENT_VERSION

# Packer's environment_vars (daskfleet.pkr.hcl), all checked before anything is installed.
for name in DASKFLEET_LOCK DASKFLEET_WHEEL DASKFLEET_FINGERPRINT DASKFLEET_PROVISION; do
  [[ -n "${!name:-}" ]] || die "$name is not set (Packer passes environment_vars to a script only through {{ .Vars }} in its execute_command)"
done
provision="$DASKFLEET_PROVISION"
wheel="$DASKFLEET_WHEEL"
root="${DASKFLEET_ROOT:-}"
root="${root%/}"

# Whether version $1 (as the agent writes it: 1.300073.2b1889) is at least $2 (1.300070.0).
version_at_least() {
  local have want i
  IFS=. read -r -a have <<< "${1%%[!0-9.]*}"
  IFS=. read -r -a want <<< "$2"
  for i in 0 1 2; do
    if ((10#${have[i]:-0} != 10#${want[i]:-0})); then
      ((10#${have[i]:-0} > 10#${want[i]:-0}))
      return
    fi
  done
}

check_cloudwatch_agent() {
  local file="$root$CLOUDWATCH_AGENT_VERSION_FILE" version
  [[ -r "$file" ]] || die "the CloudWatch agent is not installed: $file is missing"
  version="$(tr -d '[:space:]' < "$file")"
  version_at_least "$version" "$CLOUDWATCH_AGENT_MIN_VERSION" \
    || die "amazon-cloudwatch-agent ${version:-(empty version)} is older than $CLOUDWATCH_AGENT_MIN_VERSION, the first that" \
      "reads the journal (logs.logs_collected.journald): nodes built from this image would ship no logs. Build from an" \
      "Amazon Linux 2023 release whose repository has $CLOUDWATCH_AGENT_MIN_VERSION or newer, or install AWS's own" \
      "package in images/provision/build-image.sh (CloudWatch docs: Download and install the CloudWatch agent)"
  echo "build-image: amazon-cloudwatch-agent $version reads the journal (>= $CLOUDWATCH_AGENT_MIN_VERSION)"
}

# Python 3.11 runs the installer; the CloudWatch agent ships the node's journal (its configuration
# comes with each node's user data, which names the cluster's log group).
dnf install -y python3.11 python3.11-pip amazon-cloudwatch-agent
check_cloudwatch_agent

# The installer: daskfleet's wheel and its dependencies from PyPI, in a venv removed afterwards.
bootstrap="$(mktemp -d /tmp/daskfleet-bootstrap.XXXXXX)"
trap 'rm -rf "$bootstrap"' EXIT
python3.11 -m venv "$bootstrap"
"$bootstrap/bin/pip" install --quiet --disable-pip-version-check "$wheel"

DASKFLEET_BOOTSTRAP_PYTHON="$bootstrap/bin/python" bash "$provision/install-env.sh"

systemctl daemon-reload
dnf clean all
