#!/usr/bin/env bash
# Builds the Prometheus server from the Go module proxy (no downloads of prebuilt binaries), into
# bin/prometheus/<version>/prometheus, and prints that path as the last line of output. Used by the
# real-Prometheus test of internal/utilization (make test-prometheus).
#
# The web UI's React assets are not needed: without the `builtinassets` build tag Prometheus
# compiles without them (the UI pages are then unavailable; the HTTP API, which is all we use,
# works).
#
# A binary already present is never rebuilt. It is also kept in a per-machine cache
# ($CVLAB_BIN_CACHE, default ~/.cache/cvlab-queue/prometheus/<version>) so that a fresh clone, such
# as CI's, copies it instead of building again.
set -euo pipefail

PROM_VERSION=v0.316.0 # Go module version of Prometheus v3.16.0 (hack/prometheus/go.mod)
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bin/prometheus/$PROM_VERSION"
mkdir -p "$out"
cache="${CVLAB_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cvlab-queue}/prometheus/$PROM_VERSION"
b=prometheus

if [ -x "$out/$b" ]; then
  echo "have $out/$b" >&2
elif [ -x "$cache/$b" ]; then
  echo "copying $b from $cache" >&2
  cp "$cache/$b" "$out/$b.tmp" && mv "$out/$b.tmp" "$out/$b"
else
  echo "building $b (first build takes ~10 min on 2 cores)..." >&2
  (cd "$root/hack/prometheus" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$b.tmp" github.com/prometheus/prometheus/cmd/prometheus)
  mv "$out/$b.tmp" "$out/$b"
  if mkdir -p "$cache" 2>/dev/null; then cp "$out/$b" "$cache/$b.tmp.$$" && mv "$cache/$b.tmp.$$" "$cache/$b" || true; fi
fi
echo "$out/$b"
