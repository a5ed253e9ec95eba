#!/usr/bin/env bash
# Install one platform of a conda-lock file as a node's environment, keep its package cache, and
# install the agent's systemd unit. The image is built only if the installed environment's own
# `daskfleet fingerprint` equals the fingerprint it is tagged with.
#
#   DASKFLEET_LOCK              the conda-lock file
#   DASKFLEET_WHEEL             daskfleet's wheel, installed after the lock
#   DASKFLEET_FINGERPRINT       the fingerprint the image is built (and tagged) for
#   DASKFLEET_PLATFORM          conda platform (default: this machine's, from uname -m)
#   DASKFLEET_BOOTSTRAP_PYTHON  a Python with daskfleet installed, which performs the install
#   DASKFLEET_ROOT              install below this directory instead of / (tests)
set -euo pipefail

die() {
  echo "install-env: error: $*" >&2
  exit 1
}

lock="${DASKFLEET_LOCK:?DASKFLEET_LOCK: the conda-lock file to install}"
wheel="${DASKFLEET_WHEEL:?DASKFLEET_WHEEL: the daskfleet wheel}"
expected="${DASKFLEET_FINGERPRINT:?DASKFLEET_FINGERPRINT: the fingerprint the image is built for}"
python="${DASKFLEET_BOOTSTRAP_PYTHON:?DASKFLEET_BOOTSTRAP_PYTHON: a Python with daskfleet installed}"
root="${DASKFLEET_ROOT:-/}"
root="${root%/}"

case "${DASKFLEET_PLATFORM:-$(uname -m)}" in
  x86_64 | linux-64) platform=linux-64 ;;
  aarch64 | linux-aarch64) platform=linux-aarch64 ;;
  *) die "unsupported platform ${DASKFLEET_PLATFORM:-$(uname -m)} (linux-64 or linux-aarch64)" ;;
esac

locked="$("$python" -m daskfleet env fingerprint --lock "$lock" --platform "$platform")"
[[ "$locked" == "$expected" ]] || die "the lock's fingerprint for $platform is $locked, the image is built for $expected"

short="${expected#sha256:}"
short="${short:0:16}"
base="$root/opt/daskfleet"
prefix="$base/envs/$short"

"$python" -m daskfleet env install "$lock" --prefix "$prefix" --platform "$platform" --cache "$base/pkgs" --wheel "$wheel"
install -d -m 0755 "$base/locks"
install -m 0644 "$lock" "$base/locks/$short.yml"
ln -sfn "envs/$short" "$base/env"

actual="$("$base/env/bin/daskfleet" fingerprint)"
[[ "$actual" == "$expected" ]] || die "the image's environment reports fingerprint $actual, not $expected"

# The agent's unit and the worker's drop-ins (memory bounds, the nanny's environment), rendered by the agent the image carries.
"$base/env/bin/python" - "$root/" <<'PY'
import sys
from pathlib import Path
from daskfleet.aws.userdata import unit_files
for path, text in unit_files().items():
    target = Path(sys.argv[1]) / path.lstrip("/")
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(0o644)
PY

echo "install-env: $prefix holds $expected ($platform); $base/env links to it"
