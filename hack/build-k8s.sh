#!/usr/bin/env bash
# Builds Kubernetes control-plane binaries from the Go module proxy (no downloads of prebuilt
# binaries), into bin/k8s/<version>/, and prints that directory as the last line of output.
#
#   hack/build-k8s.sh [binary ...]    binaries: etcd kube-apiserver kube-scheduler
#                                     kube-controller-manager kubectl (default: etcd kube-apiserver)
#
# A binary already present is never rebuilt. Built binaries are also kept in a per-machine cache
# ($CVLAB_BIN_CACHE, default ~/.cache/cvlab-queue/k8s/<version>) so that a fresh clone, such as
# CI's, copies them instead of building again. The Kubernetes binaries carry version ldflags so that
# the server reports v1.37.2 (clients that parse the server version reject v0.0.0-master).
set -euo pipefail

K8S_VERSION=v1.37.2
K8S_MAJOR=1
K8S_MINOR=37
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bin/k8s/$K8S_VERSION"
mkdir -p "$out"
cache="${CVLAB_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cvlab-queue/k8s}/$K8S_VERSION"

bins=("$@")
[ ${#bins[@]} -gt 0 ] || bins=(etcd kube-apiserver)

vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=$K8S_MAJOR -X $vpkg.gitMinor=$K8S_MINOR"
ldflags="$ldflags -X $vpkg.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"

for b in "${bins[@]}"; do
  if [ -x "$out/$b" ]; then
    echo "have $out/$b" >&2
    continue
  fi
  if [ -x "$cache/$b" ]; then
    echo "copying $b from $cache" >&2
    cp "$cache/$b" "$out/$b.tmp" && mv "$out/$b.tmp" "$out/$b"
    continue
  fi
  echo "building $b (first build of kube-apiserver takes ~10 min on 2 cores)..." >&2
  case "$b" in
    etcd)
      (cd "$root/hack/etcd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/$b.tmp" go.etcd.io/etcd/server/v3) ;;
    kube-apiserver|kube-scheduler|kube-controller-manager|kubectl)
      (cd "$root/hack/k8s" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b") ;;
    *) echo "unknown binary: $b" >&2; exit 2 ;;
  esac
  mv "$out/$b.tmp" "$out/$b"
  if mkdir -p "$cache" 2>/dev/null; then cp "$out/$b" "$cache/$b.tmp.$$" && mv "$cache/$b.tmp.$$" "$cache/$b" || true; fi
done
echo "$out"
