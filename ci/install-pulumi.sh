#!/usr/bin/env bash
# Install one pinned Pulumi CLI release into DEST (default ~/.pulumi-cli), verified against the
# SHA-256 checksums the release publishes, and put it on the GitHub Actions PATH when run there.
#   ci/install-pulumi.sh VERSION [DEST]
set -euo pipefail

version="${1:?usage: ci/install-pulumi.sh VERSION [DEST]}"
dest="${2:-$HOME/.pulumi-cli}"
base="https://github.com/pulumi/pulumi/releases/download/v${version}"
archive="pulumi-v${version}-linux-x64.tar.gz"
checksums="pulumi-${version}-checksums.txt"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fetch() {
  curl --fail --silent --show-error --location --retry 3 --max-time 300 --output "$work/$1" "$base/$1"
}
fetch "$archive"
fetch "$checksums"
expected="$(grep -E "[[:space:]]\*?${archive}\$" "$work/$checksums" || true)"
if [ -z "$expected" ]; then
  echo "install-pulumi: $checksums lists no checksum for $archive; not installing" >&2
  exit 1
fi
(cd "$work" && printf '%s\n' "$expected" | sha256sum --check --strict --quiet -)

mkdir -p "$dest"
tar -xzf "$work/$archive" -C "$dest" --strip-components=1
"$dest/pulumi" version
if [ -n "${GITHUB_PATH:-}" ]; then
  echo "$dest" >> "$GITHUB_PATH"
fi
