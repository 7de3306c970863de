#!/usr/bin/env bash
# Builds Kueue's manager from the Go module proxy (sigs.k8s.io/kueue, pinned in hack/kueue/go.mod;
# no prebuilt binaries are downloaded) into bin/kueue/<version>/kueue and prints its path as the
# last line of output. Only the side-by-side benchmark (make bench-kueue) uses it.
#
# A binary already present is never rebuilt; it is also kept in the per-machine cache
# ($CVLAB_BIN_CACHE, default ~/.cache/cvlab-queue/kueue/<version>), like hack/build-k8s.sh does.
set -euo pipefail

KUEUE_VERSION=v0.17.0
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bin/kueue/$KUEUE_VERSION"
mkdir -p "$out"
cache="${CVLAB_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cvlab-queue}/kueue/$KUEUE_VERSION"
b=kueue
if [ -x "$out/$b" ]; then
  echo "have $out/$b" >&2
elif [ -x "$cache/$b" ]; then
  echo "copying $b from $cache" >&2
  cp "$cache/$b" "$out/$b.tmp" && mv "$out/$b.tmp" "$out/$b"
else
  echo "building kueue $KUEUE_VERSION from the Go module proxy (~5-10 min on 2 cores)..." >&2
  (cd "$root/hack/kueue" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    -o "$out/$b.tmp" sigs.k8s.io/kueue/cmd/kueue)
  mv "$out/$b.tmp" "$out/$b"
  if mkdir -p "$cache" 2>/dev/null; then cp "$out/$b" "$cache/$b.tmp.$$" && mv "$cache/$b.tmp.$$" "$cache/$b" || true; fi
fi
echo "$out/$b"
