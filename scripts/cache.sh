# Sourced by the scripts: where slow tool builds are kept between runs,
# outside the clone (CI clones afresh every time), keyed by version below.
KUMA_RS_CACHE="${KUMA_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kuma-rs}"
export KUMA_RS_CACHE
mkdir -p "$KUMA_RS_CACHE"
