#!/usr/bin/env bash
# Runs the parser/validator fuzz target for a bounded time (default 60s).
# Needs a nightly toolchain and cargo-fuzz; installs them when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "0.13.2"; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

corpus="crds/fuzz/corpus/parse_validate"
mkdir -p "$corpus"
# Seed with every example document, one file per document.
awk -v dir="$corpus" 'BEGIN{n=0; f=dir"/seed-"n".yaml"} /^---$/{n++; f=dir"/seed-"n".yaml"; next} {print > f}' \
  crds/tests/testdata/universal.yaml
awk -v dir="$corpus" 'BEGIN{n=100; f=dir"/seed-"n".yaml"} /^---$/{n++; f=dir"/seed-"n".yaml"; next} {print > f}' \
  crds/tests/testdata/kubernetes.yaml

cd crds
cargo +nightly fuzz run parse_validate "fuzz/corpus/parse_validate" -- \
  -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=4096
