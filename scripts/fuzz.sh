#!/usr/bin/env bash
# Explores with every fuzz target for SECONDS each (default 60): the
# parser/validator (crds/fuzz, parse_validate), kuma-dp's DNS proxy
# (kuma-dp/fuzz, dns_reply), how kuma-dp trusts the control plane's
# certificate (kuma-dp/fuzz, cp_certificate) and the ADS stream state
# machines under any sequence of requests and snapshots (xds/fuzz,
# ads_sequence), the /bootstrap request (xds/fuzz, bootstrap_request) and
# MeshProxyPatch modifications (xds/fuzz, proxy_patch), the
# transparent proxy's config file (kumactl/fuzz, transparent_proxy_config),
# REST requests through the real router (operator/fuzz, api_request),
# dataplane and user token verification (operator/fuzz, token_verify) and
# AdmissionReviews through the webhook router, with the injected Pod's
# conversion to a Dataplane (webhook/fuzz, admission_review).
# Not part of CI's verdict: CI replays the committed corpora
# and regression inputs deterministically (`cargo test -p kuma-crds --test
# fuzz_corpus`, `-p kuma-dp --test fuzz_corpus`, `-p kuma-xds --test
# fuzz_corpus`, `-p kumactl --test fuzz_corpus`, `-p kuma-operator --test
# fuzz_corpus`, `-p kuma-webhook --test fuzz_corpus`).
#
# New interesting inputs land in <crate>/fuzz/corpus/<target> (minimise
# with `cargo +nightly fuzz cmin <target>` before committing). A crash is
# saved under <crate>/fuzz/artifacts/; minimise it with
# `cargo +nightly fuzz tmin <target> <file>`, commit the result under
# <crate>/fuzz/regressions/<target>/ and fix the bug.
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

for target in operator:api_request:8192 operator:token_verify:4096 webhook:admission_review:8192 crds:parse_validate:8192 kuma-dp:dns_reply:4096 kuma-dp:cp_certificate:4096 xds:ads_sequence:4096 xds:bootstrap_request:8192 xds:proxy_patch:8192 kumactl:transparent_proxy_config:8192; do
  IFS=: read -r crate name max_len <<<"$target"
  (cd "$crate" && cargo +nightly fuzz run "$name" "fuzz/corpus/$name" "fuzz/regressions/$name" -- \
    -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=4096)
done
