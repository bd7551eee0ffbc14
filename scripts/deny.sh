#!/usr/bin/env bash
# cargo-deny over the workspace's dependency graph, by deny.toml: licenses,
# banned crates and sources (deterministic: they depend on Cargo.lock
# alone, so CI runs them). `scripts/deny.sh advisories` checks the RustSec
# advisories and yanked crates too; that needs GitHub and changes as
# advisories are published, so it is not part of the gating run.
# cargo-deny is built once into the tool cache, keyed by version.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cache.sh

CARGO_DENY_VERSION=0.20.2
TOOLS="$KUMA_RS_CACHE/cargo-deny-$CARGO_DENY_VERSION"
if [ ! -x "$TOOLS/bin/cargo-deny" ]; then
  echo "building cargo-deny $CARGO_DENY_VERSION into $TOOLS (once)" >&2
  rm -rf "$TOOLS.tmp"
  # Its own build directory: the workspace's is shared with the tests.
  CARGO_TARGET_DIR="$TOOLS.tmp/target" \
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --root "$TOOLS.tmp" >&2
  rm -rf "$TOOLS.tmp/target" "$TOOLS"
  mv "$TOOLS.tmp" "$TOOLS"
fi

checks=(licenses bans sources)
if [ "${1:-}" = advisories ]; then
  checks+=(advisories)
fi
"$TOOLS/bin/cargo-deny" --locked check --hide-inclusion-graph "${checks[@]}"
