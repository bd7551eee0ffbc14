#!/usr/bin/env bash
# Explores with the parser/validator fuzz target for SECONDS (default 60).
# Not part of CI's verdict: CI replays the committed corpus and regression
# inputs deterministically (`cargo test -p kuma-crds --test fuzz_corpus`).
#
# New interesting inputs land in crds/fuzz/corpus/parse_validate (minimise
# with `cargo +nightly fuzz cmin parse_validate` before committing). A crash
# is saved under crds/fuzz/artifacts/; minimise it with
# `cargo +nightly fuzz tmin parse_validate <file>`, commit the result under
# crds/fuzz/regressions/parse_validate/ and fix the bug.
#
# Needs a nightly toolchain and cargo-fuzz; both are installed once and kept
# in the tool cache (scripts/cache.sh), keyed by version.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cache.sh
seconds="${1:-60}"
CARGO_FUZZ_VERSION=0.13.2
TOOLS="$KUMA_RS_CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if [ ! -x "$TOOLS/bin/cargo-fuzz" ]; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS.tmp"
  rm -rf "$TOOLS" && mv "$TOOLS.tmp" "$TOOLS"
fi
export PATH="$TOOLS/bin:$PATH"

cd crds
cargo +nightly fuzz run parse_validate fuzz/corpus/parse_validate fuzz/regressions/parse_validate -- \
  -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=4096
