#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl (Kubernetes v1.34.12)
# and etcd (v3.6.17) from Go modules into a cache outside the clone and prints
# the directory holding them. Idempotent: returns at once when the binaries
# are there, so CI on a fresh clone reuses an earlier run's build.
#
# The Kubernetes module cannot be `go install`ed (its go.mod has replace lines
# and requires its staging modules at v0.0.0), so a wrapper module pins each
# staging module to the matching v0.34.x release.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S=1.34.12
ETCD=3.6.17
source scripts/cache.sh
OUT=$KUMA_RS_CACHE/k8s-v$K8S-etcd-v$ETCD/bin
if [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/kube-controller-manager" ] && [ -x "$OUT/kubectl" ] && [ -x "$OUT/etcd" ]; then
  echo "$OUT"
  exit 0
fi
export PATH=/usr/local/go/bin:$PATH CGO_ENABLED=0 GOFLAGS=-buildvcs=false
W=$(mktemp -d)
trap 'rm -rf "$W" "$OUT.tmp"' EXIT
mkdir -p "$W/k8s" "$W/etcd" "$OUT.tmp"
STAGING="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
mount-utils pod-security-admission sample-apiserver"
{
  printf 'module local.test/k8s-bins\n\ngo 1.25.0\n\ngodebug default=go1.24\n\n'
  printf 'require k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S"
  for m in $STAGING; do printf '\tk8s.io/%s => k8s.io/%s v0.%s\n' "$m" "$m" "${K8S#1.}"; done
  printf ')\n'
} >"$W/k8s/go.mod"
cat >"$W/k8s/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
LDF="-s -w"
MINOR=$(echo "$K8S" | cut -d. -f2)
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $p.gitVersion=v$K8S -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean"
done
echo "building Kubernetes v$K8S and etcd v$ETCD into $OUT (about 10 minutes the first time)" >&2
(cd "$W/k8s" && go mod tidy >&2 && go build -trimpath -ldflags "$LDF" -o "$OUT.tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl >&2)
printf 'module local.test/etcd-bin\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$ETCD" >"$W/etcd/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$W/etcd/tools.go"
(cd "$W/etcd" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$OUT.tmp/etcd" go.etcd.io/etcd/server/v3 >&2)
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
"$OUT/kube-apiserver" --version >&2
echo "$OUT"
