#!/usr/bin/env bash
# Builds OLM v0.38.0 (olm, catalog), opm (operator-registry, as OLM pins it)
# and tools/bundle-validate (operator-sdk's bundle checks as a small program:
# the module proxy does not serve operator-sdk) from Go modules into the
# cache outside the clone and prints the directory holding them. Keyed by
# OLM's version and the validator's source, so an edit rebuilds it; returns
# at once when the binaries are there. About 6 minutes the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
OLM=0.38.0
source scripts/cache.sh
KEY=$(sha256sum tools/bundle-validate/main.go | cut -c1-12)
BASE=$KUMA_RS_CACHE/olm-v$OLM-$KEY
OUT=$BASE/bin
if [ -x "$OUT/olm" ] && [ -x "$OUT/catalog" ] && [ -x "$OUT/opm" ] && [ -x "$OUT/bundle-validate" ] && [ -d "$BASE/crds" ]; then
  echo "$OUT"
  exit 0
fi
export PATH=/usr/local/go/bin:$PATH CGO_ENABLED=0 GOFLAGS=-buildvcs=false
W=$(mktemp -d)
trap 'rm -rf "$W" "$OUT.tmp" "$BASE/crds.tmp"' EXIT
mkdir -p "$W/cmd/bundle-validate" "$OUT.tmp"
printf 'module local.test/olm-bins\n\ngo 1.25.0\n\nrequire github.com/operator-framework/operator-lifecycle-manager v%s\n' "$OLM" >"$W/go.mod"
cat >"$W/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "github.com/operator-framework/operator-lifecycle-manager/cmd/catalog"
	_ "github.com/operator-framework/operator-lifecycle-manager/cmd/olm"
	_ "github.com/operator-framework/operator-registry/cmd/opm"
)
GO
cp tools/bundle-validate/main.go "$W/cmd/bundle-validate/main.go"
echo "building OLM v$OLM, opm and bundle-validate into $OUT (about 6 minutes the first time)" >&2
(cd "$W" && go mod tidy >&2 && go build -trimpath -tags containers_image_openpgp -ldflags "-s -w" -o "$OUT.tmp/" \
  github.com/operator-framework/operator-lifecycle-manager/cmd/olm \
  github.com/operator-framework/operator-lifecycle-manager/cmd/catalog \
  github.com/operator-framework/operator-registry/cmd/opm \
  ./cmd/bundle-validate >&2)
# OLM's own CRDs (deploy/chart/crds: the quickstart file lacks olmconfigs).
SRC=$(cd "$W" && go list -m -f '{{.Dir}}' github.com/operator-framework/operator-lifecycle-manager)
mkdir -p "$BASE/crds.tmp"
cp "$SRC"/deploy/chart/crds/*.yaml "$BASE/crds.tmp/"
chmod -R u+w "$BASE/crds.tmp"
rm -rf "$OUT" "$BASE/crds"
mv "$BASE/crds.tmp" "$BASE/crds"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
