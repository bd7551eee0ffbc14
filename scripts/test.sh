#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests
# need into .tools/ (nothing system-wide), then runs the test suites and a
# bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --all-targets
bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
