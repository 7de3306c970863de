#!/usr/bin/env bash
# Floods the local cluster (make run-local) with a lab-like mix of CvlabJobs, so that the fair-share
# queue, the positions and the ranks are visible at once: 20 users with 1-4 jobs each, 1-4 GPUs per
# job, a few priorities, simulated runtimes of 30 s to 5 min, a few long jobs (20-40 min) and a few
# that fail. Everything goes into one namespace with one `kubectl apply`.
#
#   hack/demo.sh          create the jobs (make demo)
#   hack/demo.sh print    print the YAML only
#   hack/demo.sh clean    delete the namespace with the jobs (make demo-clean)
#
# Environment: SEED (default: random; the same seed gives the same jobs), DEMO_NAMESPACE (default
# cvlab-demo), DEMO_KUBECONFIG (default $LOCAL_DIR/kubeconfig, i.e. the local cluster: the demo
# never follows $KUBECONFIG, so that it cannot flood a real cluster by accident).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
LOCAL_DIR=${LOCAL_DIR:-$root/.local}
KUBECTL="$root/bin/k8s/v1.37.2/kubectl"
ns=${DEMO_NAMESPACE:-cvlab-demo}
kubeconfig=${DEMO_KUBECONFIG:-$LOCAL_DIR/kubeconfig}
seed=${SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$seed

users=(alice bob carol dave erin frank grace heidi ivan judy ken laura mallory nina oscar peggy quentin rupert sybil trent)
kinds=(train eval sweep jupyter finetune ablation)

pick() { # pick W1 W2 ...: an index chosen with the given weights
  local total=0 w r i=0
  for w in "$@"; do total=$((total + w)); done
  r=$((RANDOM % total))
  for w in "$@"; do
    if [ $r -lt "$w" ]; then echo $i; return; fi
    r=$((r - w))
    i=$((i + 1))
  done
}

jobs_yaml() {
  local u user n j kind gpus prio runtime extra
  for u in "${!users[@]}"; do
    user=${users[u]}
    n=$(($(pick 30 35 20 15) + 1)) # 1-4 jobs
    for ((j = 1; j <= n; j++)); do
      kind=${kinds[RANDOM % ${#kinds[@]}]}
      gpus=$(($(pick 40 35 10 15) + 1)) # 1-4 GPUs
      prio=$(( $(pick 70 15 10 5) )); prio=$(( (prio == 3) ? -1 : prio )) # 0 mostly, some 1, 2, -1
      if [ $((RANDOM % 10)) -eq 0 ]; then
        runtime="$((20 + RANDOM % 21))m" # a long job
      else
        runtime="$((30 + RANDOM % 271))s" # 30 s - 5 min
      fi
      extra=""
      if [ $((RANDOM % 15)) -eq 0 ]; then
        extra=$'\n'"    cvlab.epfl.ch/simulated-result: Failed"
      fi
      cat <<EOF
---
apiVersion: cvlab.epfl.ch/v1alpha1
kind: CvlabJob
metadata:
  name: $user-$kind-$j
  namespace: $ns
spec:
  user: $user
  priority: $prio
  gpus: $gpus
  image: ic-registry.epfl.ch/cvlab/lis/lab-base:gpu
  command: ["python", "/cvlabdata2/home/$user/$kind.py"]
  resources:
    requests: {cpu: "$((gpus * 4))", memory: $((gpus * 16))Gi}
  podAnnotations:
    cvlab.epfl.ch/simulated-runtime: $runtime$extra
EOF
    done
  done
}

k() { "$KUBECTL" --kubeconfig "$kubeconfig" "$@"; }

case "${1:-apply}" in
  print) jobs_yaml ;;
  clean)
    k delete namespace "$ns" --ignore-not-found
    ;;
  apply)
    [ -x "$KUBECTL" ] || "$root/hack/build-k8s.sh" kubectl >/dev/null
    [ -f "$kubeconfig" ] || { echo "no local cluster ($kubeconfig is missing): start it with 'make run-local'" >&2; exit 1; }
    k get --raw /readyz >/dev/null 2>&1 || { echo "the local cluster is not running: start it with 'make run-local'" >&2; exit 1; }
    yaml=$(jobs_yaml)
    n=$(grep -c '^kind: CvlabJob' <<<"$yaml")
    gpus=$(awk '/^  gpus:/ {s += $2} END {print s}' <<<"$yaml")
    capacity=$(k get nodes -o jsonpath='{range .items[*]}{.status.allocatable.nvidia\.com/gpu}{"\n"}{end}' | awk '{s += $1} END {print s + 0}')
    k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
    k apply -f - <<<"$yaml" >/dev/null
    echo "Created $n jobs of ${#users[@]} users in namespace $ns, asking for $gpus GPUs in all; the nodes have $capacity (SEED=$seed)."
    # Show the queue once every job has been given a phase.
    for ((i = 0; i < 100; i++)); do
      if ! k get cvlabjobs -n "$ns" -o jsonpath='{range .items[*]}{.status.phase}{"|"}{"\n"}{end}' | grep -qx '|'; then break; fi
      sleep 0.2
    done
    k get cvlabjobs -n "$ns" -o wide --sort-by=.status.rank | head -n 40
    cat <<EOF
...
Watch it:   $KUBECTL --kubeconfig $kubeconfig get cvj -n $ns -w
In order:   $KUBECTL --kubeconfig $kubeconfig get cvj -n $ns -o wide --sort-by=.status.rank
Clean up:   make demo-clean
EOF
    ;;
  *) echo "usage: $0 [apply|print|clean]" >&2; exit 2 ;;
esac
