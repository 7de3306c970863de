#!/usr/bin/env bash
# A local cluster for cvlab-queue with fake GPU nodes: etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager and kwok on 127.0.0.1, and the operator (bin/manager) on top. Every binary
# is built from Go modules (hack/build-k8s.sh, `go install` of kwok, `go build` of the manager); no
# container runtime, no downloads of prebuilt binaries. It installs config/default (but the manager's
# Deployment: the operator runs as its service account) and gives the demo's people client
# certificates and kubeconfig contexts: alice and bob (lab members), root (a queue admin). See
# docs/local-cluster.md.
#
#   hack/local-cluster.sh [up]     build, start, wait in the foreground; Ctrl-C stops everything
#   hack/local-cluster.sh up --detach   (or DETACH=1) return once the cluster is ready
#   hack/local-cluster.sh stop     stop a (detached) cluster of this state dir
#   hack/local-cluster.sh status   which components run
#   hack/local-cluster.sh env      print `export KUBECONFIG=...` (eval "$(hack/local-cluster.sh env)")
#   hack/local-cluster.sh build    only build the binaries
#   hack/local-cluster.sh clean    stop, then delete the state dir
#
# Environment:
#   LOCAL_DIR        state dir (default .local): certificates, kubeconfigs, etcd data, logs, pids.
#                    Kept between runs, so that a second `up` resumes the cluster.
#   NODES, GPUS_PER_NODE   fake nodes gpu-node-1..NODES with that many nvidia.com/gpu (default 4, 8)
#   NODE_FILE        instead, a file of nodes, one `name gpus [cpu] [memory]` per line; `#` starts a
#                    comment (example: hack/kwok/nodes-lab.txt, 3x8 + 1x6 GPUs)
#   GPU_CAPACITY     --gpu-capacity of the operator: an upper bound on the GPUs it hands out (the
#                    lab's share). Default "off": the operator reads the capacity from the nodes.
#   MANAGER_ARGS     extra flags of the operator, e.g. "--max-head-wait=5m --zap-log-level=debug"
#   API_PORT ETCD_PORT ETCD_PEER_PORT SCHEDULER_PORT CONTROLLER_MANAGER_PORT MANAGER_PROBE_PORT
#   DASHBOARD_PORT   loopback ports (defaults 16443 12379 12380 20259 20257 18081 15336; the last
#                    one is the operator's dashboard, when the operator has --dashboard-bind-address)
#   FAKE_DCGM_PORT   loopback port of the fake dcgm-exporter (cmd/fake-dcgm-exporter, default 19400):
#                    the GPUs' utilisation that the pods' annotation cvlab.epfl.ch/simulated-utilization
#                    says, read by the operator through --dcgm-exporter-url
#   MAIL_SMTP_PORT MAIL_WEB_PORT  loopback ports of the mail catcher (cmd/mailcatcher, defaults 11025,
#                    18025): the operator's email notifications land there, readable in its web inbox
#   IDLE_ARGS        the operator's idle settings (default short ones for the demo:
#                    "--idle-after=2m --idle-grace=1m --utilization-interval=15s"; MANAGER_ARGS win)
#   READY_TIMEOUT    seconds to wait for each component (default 120)
#   STOP_WITH_PID    with --detach: a watchdog stops the cluster when that process exits (the e2e
#                    suite passes its own pid, so that a killed test run leaves nothing behind)
set -euo pipefail

K8S_VERSION=v1.37.2
KWOK_VERSION=v0.8.0
root=$(cd "$(dirname "$0")/.." && pwd)
k8sbin="$root/bin/k8s/$K8S_VERSION"
KUBECTL="$k8sbin/kubectl"
KWOK="$root/bin/kwok"
MANAGER="$root/bin/manager"
FAKE_DCGM="$root/bin/fake-dcgm-exporter"
MAILCATCHER="$root/bin/mailcatcher"

LOCAL_DIR=$(realpath -m -s "${LOCAL_DIR:-$root/.local}") # absolute, symlinks kept as given
pki="$LOCAL_DIR/pki"
logs="$LOCAL_DIR/logs"
run="$LOCAL_DIR/run"

API_PORT=${API_PORT:-16443}
ETCD_PORT=${ETCD_PORT:-12379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-12380}
SCHEDULER_PORT=${SCHEDULER_PORT:-20259}
CONTROLLER_MANAGER_PORT=${CONTROLLER_MANAGER_PORT:-20257}
MANAGER_PROBE_PORT=${MANAGER_PROBE_PORT:-18081}
DASHBOARD_PORT=${DASHBOARD_PORT:-15336}
FAKE_DCGM_PORT=${FAKE_DCGM_PORT:-19400}
MAIL_SMTP_PORT=${MAIL_SMTP_PORT:-11025}
MAIL_WEB_PORT=${MAIL_WEB_PORT:-18025}
IDLE_ARGS=${IDLE_ARGS---idle-after=2m --idle-grace=1m --utilization-interval=15s}
NODES=${NODES:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
NODE_FILE=${NODE_FILE:-}
READY_TIMEOUT=${READY_TIMEOUT:-120}
MANAGER_ARGS=${MANAGER_ARGS:-}

STOP_WITH_PID=${STOP_WITH_PID:-}

# Components in start order; they are stopped in the reverse order. The watchdog only runs with
# STOP_WITH_PID in detached mode.
components=(etcd kube-apiserver kwok kube-scheduler kube-controller-manager fake-dcgm-exporter mailcatcher manager watchdog)

log() { printf '[local-cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Processes. Each component runs in its own session (setsid), so that a Ctrl-C reaches only this
# script, which then stops them in order; its pid is kept in $run/<name>.pid. A pid is only ever
# signalled while its command line still names this state dir, so a recycled pid is never hit.

pid_of() { # prints the pid of a running component of this state dir, or fails
  local f="$run/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  is_ours "$pid" || return 1
  echo "$pid"
}

is_ours() { # a live (not zombie) process whose command line contains $LOCAL_DIR
  local pid=$1 state
  [ -r "/proc/$pid/cmdline" ] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ] || return 1
  { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$LOCAL_DIR" # it may end meanwhile
}

start() { # start NAME CMD...: runs CMD in its own session, logs to $logs/NAME.log
  local name=$1
  shift
  mkdir -p "$logs" "$run"
  echo "=== $(date -u +%FT%TZ) $*" >>"$logs/$name.log"
  setsid "$@" >>"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$run/$name.pid"
}

stop_one() { # SIGTERM, then SIGKILL after 20 s
  local name=$1 pid i
  pid=$(pid_of "$name") || { rm -f "$run/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    is_ours "$pid" || break
    sleep 0.1
  done
  if is_ours "$pid"; then
    log "$name (pid $pid) did not stop in 20 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do is_ours "$pid" || break; sleep 0.1; done
  fi
  wait "$pid" 2>/dev/null || true # reaps it when it is our child
  rm -f "$run/$name.pid"
}

stop_all() {
  local i n=0
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    if pid_of "${components[i]}" >/dev/null; then
      n=$((n + 1))
      log "stopping ${components[i]}"
    fi
    stop_one "${components[i]}"
  done
  [ $n -eq 0 ] || log "stopped (state kept in $LOCAL_DIR)"
}

running() { # names of running components
  local c
  for c in "${components[@]}"; do
    if pid_of "$c" >/dev/null; then echo "$c"; fi
  done
}

# ---------------------------------------------------------------------------------------------
# Build.

build() {
  local b k8s_bins=(etcd kube-apiserver kube-scheduler kube-controller-manager kubectl) missing=()
  for b in "${k8s_bins[@]}"; do [ -x "$k8sbin/$b" ] || missing+=("$b"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "building ${missing[*]} from the Go module proxy (the first time: ~15 min on 2 cores)"
    "$root/hack/build-k8s.sh" "${k8s_bins[@]}" >/dev/null
  fi
  if ! { [ -x "$KWOK" ] && "$KWOK" --version 2>/dev/null | grep -qF " $KWOK_VERSION "; }; then
    local cache="${CVLAB_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cvlab-queue/k8s}/kwok-$KWOK_VERSION"
    if [ -x "$cache/kwok" ]; then
      log "copying kwok from $cache"
      cp "$cache/kwok" "$KWOK.tmp" && mv "$KWOK.tmp" "$KWOK"
    else
      log "building kwok $KWOK_VERSION from the Go module proxy (~2 min)"
      local tmp
      tmp=$(mktemp -d)
      GOBIN="$tmp" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
      mv "$tmp/kwok" "$KWOK"
      rmdir "$tmp"
      if mkdir -p "$cache" 2>/dev/null && cp "$KWOK" "$cache/kwok.tmp.$$"; then
        mv "$cache/kwok.tmp.$$" "$cache/kwok" || true
      fi
    fi
  fi
  log "building the operator (bin/manager)"
  (cd "$root" && go build -o "$MANAGER" ./cmd)
  log "building the fake dcgm-exporter (bin/fake-dcgm-exporter)"
  (cd "$root" && go build -o "$FAKE_DCGM" ./cmd/fake-dcgm-exporter)
  log "building the mail catcher (bin/mailcatcher)"
  (cd "$root" && go build -o "$MAILCATCHER" ./cmd/mailcatcher)
}

# ---------------------------------------------------------------------------------------------
# Certificates and kubeconfigs. Each certificate is created once (a second `up` keeps it, and a
# state dir of an older script gets only what it lacks); kubeconfigs are rewritten on every start
# because the port may change.

# The operator authenticates as config/default's service account, with a token of it (see
# operator_kubeconfig): the policies (params operatorUsernames) and the shipped RBAC know it by it.
operator_ns=cvlab-queue-system
operator_sa=cvlab-queue-controller-manager
operator_user=system:serviceaccount:$operator_ns:$operator_sa
# The demo's people (docs/local-cluster.md#people-alice-bob-and-root), one "name CN groups" per
# line: lab members alice and bob, and root, a queue admin (cvlab-admins is the operator's default
# --admin-groups).
people="alice alice cvlab-users
bob bob cvlab-users
root root cvlab-admins"
demo_namespace=default
# Their lab directory entries (docs/security.md#the-lab-directory), "name entry" per line: the
# clusterUser of the samples config/samples/gpu-job.yaml and jupyter-2gpu-job.yaml.
# Their email (notifications) goes to the local mail catcher.
directory="alice name=alice uid=123456 groupName=cvlab gid=11166 email=alice@cvlab.local
bob name=bob uid=123457 groupName=cvlab gid=11166 email=bob@cvlab.local"

ca() { # ca NAME CN: a self-signed CA
  [ -f "$pki/$1.crt" ] && return 0
  log "generating the CA $1 in $pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/$1.key.tmp" -out "$pki/$1.crt.tmp" -days 3650 \
    -subj "/CN=$2" 2>/dev/null
  chmod 600 "$pki/$1.key.tmp"
  mv "$pki/$1.key.tmp" "$pki/$1.key" && mv "$pki/$1.crt.tmp" "$pki/$1.crt"
}

issue() { # issue CA NAME CN GROUPS EXTENSIONS: a certificate signed by CA; GROUPS (O=) comma-separated
  local ca=$1 name=$2 cn=$3 groups=$4 ext=$5 subj="" g
  [ -f "$pki/$name.crt" ] && return 0
  log "issuing $pki/$name.crt: CN=$cn${groups:+, O=$groups}"
  for g in ${groups//,/ }; do subj="$subj/O=$g"; done
  subj="$subj/CN=$cn"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "$subj" 2>/dev/null
  chmod 600 "$pki/$name.key"
  printf '%s\n' "$ext" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -CAcreateserial \
    -CAserial "$pki/$ca.srl" -days 3650 -extfile "$pki/$name.ext" -out "$pki/$name.crt.tmp" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
  mv "$pki/$name.crt.tmp" "$pki/$name.crt"
}

certs() {
  command -v openssl >/dev/null || die "openssl is required to generate the cluster's certificates"
  mkdir -p "$pki"
  local client="keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  ca ca cvlab-local-ca
  issue ca apiserver kube-apiserver "" "keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue ca admin cvlab-admin system:masters "$client"
  issue ca kube-scheduler system:kube-scheduler "" "$client"
  issue ca kube-controller-manager system:kube-controller-manager "" "$client"
  issue ca kwok kwok-controller system:masters "$client"
  local name cn groups
  while read -r name cn groups; do issue ca "$name" "$cn" "$groups" "$client"; done <<<"$people"
  # The aggregation layer's front proxy (also silences the controllers' requestheader warnings).
  ca front-proxy-ca cvlab-local-front-proxy-ca
  issue front-proxy-ca front-proxy-client front-proxy-client "" "$client"
  # The service-account token signing key pair.
  if [ ! -f "$pki/sa.pub" ]; then
    openssl genrsa -out "$pki/sa.key.tmp" 2048 2>/dev/null
    chmod 600 "$pki/sa.key.tmp"
    openssl rsa -in "$pki/sa.key.tmp" -pubout -out "$pki/sa.pub.tmp" 2>/dev/null
    mv "$pki/sa.key.tmp" "$pki/sa.key" && mv "$pki/sa.pub.tmp" "$pki/sa.pub"
  fi
}

# kubeconfig CERT FILE [PERSON...]: a kubeconfig whose context cvlab-local (the current one) uses
# the certificate CERT, with one more context per PERSON, named after it and using its certificate.
kubeconfig() {
  local cert=$1 file=$2 p
  shift 2
  {
    cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cvlab-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
EOF
    for p in "$cert" "$@"; do
      cat <<EOF
- name: $p
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$p.crt")
    client-key-data: $(base64 -w0 <"$pki/$p.key")
EOF
    done
    echo "contexts:"
    echo "- {name: cvlab-local, context: {cluster: cvlab-local, user: $cert}}"
    for p in "$@"; do echo "- {name: $p, context: {cluster: cvlab-local, user: $p}}"; done
    echo "current-context: cvlab-local"
  } >"$file.tmp"
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

# The operator's kubeconfig, with a new token of its service account (TokenRequest, valid a year),
# what the pod of the manager's Deployment would mount: it acts with exactly that identity (the
# username and the groups system:serviceaccounts and system:serviceaccounts:cvlab-queue-system).
operator_kubeconfig() { # operator_kubeconfig FILE
  local file=$1 token
  token=$(k create token "$operator_sa" -n "$operator_ns" --duration=8760h)
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cvlab-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- {name: $operator_sa, user: {token: $token}}
contexts:
- {name: cvlab-local, context: {cluster: cvlab-local, user: $operator_sa}}
current-context: cvlab-local
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

# ---------------------------------------------------------------------------------------------
# Nodes: "name gpus [cpu] [memory]" lines.

node_list() {
  if [ -n "$NODE_FILE" ]; then
    [ -r "$NODE_FILE" ] || die "NODE_FILE $NODE_FILE cannot be read"
    sed -e 's/#.*//' "$NODE_FILE" | awk 'NF > 0 { print $1, $2, ($3 == "" ? "64" : $3), ($4 == "" ? "512Gi" : $4) }'
  else
    local i
    for ((i = 1; i <= NODES; i++)); do echo "gpu-node-$i $GPUS_PER_NODE 64 512Gi"; done
  fi
}

nodes_yaml() {
  local name gpus cpu mem
  while read -r name gpus cpu mem; do
    [[ "$gpus" =~ ^[0-9]+$ ]] || die "node $name: GPUs must be a number, got '$gpus'"
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    cvlab.epfl.ch/local-node: "true"
status:
  capacity: &resources {cpu: "$cpu", memory: "$mem", pods: "110", nvidia.com/gpu: "$gpus"}
  allocatable: *resources
EOF
  done < <(node_list)
}

# The PVCs of config/samples (pv-cvlabdata1, pv-cvlabdata2 in namespace default), pre-bound to
# hostPath volumes that nothing ever mounts: the scheduler needs bound claims to place the pods.
volumes_yaml() {
  local n
  for n in 1 2; do
    cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: cvlabdata$n
  labels: {cvlab.epfl.ch/local-volume: "true"}
spec:
  capacity: {storage: 100Ti}
  accessModes: [ReadWriteMany, ReadOnlyMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: /cvlabdata$n}
  claimRef: {namespace: default, name: pv-cvlabdata$n}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: pv-cvlabdata$n
  namespace: default
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: cvlabdata$n
  resources:
    requests: {storage: 100Ti}
EOF
  done
}

# What `kubectl apply -k config/default` installs (the CRD; the operator's service account, roles
# and bindings; the admission policies and their params; the ClusterRoles for people), without
# the manager's Deployment and Service: here the operator is bin/manager, a process that
# authenticates as that service account (operator_kubeconfig), so the local cluster runs it with
# exactly the shipped RBAC and under the shipped policies.
install_yaml() {
  "$KUBECTL" kustomize "$root/config/default" | awk '
    function flush() { if (doc != "" && !skip) printf "---\n%s", doc; doc = ""; skip = 0 }
    /^---$/ { flush(); next }
    /^kind: (Deployment|Service)$/ { skip = 1 }
    { doc = doc $0 "\n" }
    END { flush() }'
}

# The demo's people, set up as docs/security.md says a lab is: the group cvlab-users has cvlab-user
# in the demo namespace (where the samples' volumes are), cvlab-admins has cvlab-admin everywhere.
people_yaml() {
  cat <<EOF
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: cvlab-users, namespace: $demo_namespace}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cvlab-user}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: cvlab-users}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: cvlab-admins}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cvlab-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: cvlab-admins}
EOF
}

# Adds the people's entries to the lab directory that config/default installed, leaving the keys
# already there as they are (a second `up`, an entry edited by hand); without a directory, nothing.
directory_entries() {
  local cm=cvlab-queue-lab-directory keys name entry
  keys=$(k get configmap -n "$operator_ns" "$cm" -o go-template='{{range $k, $v := .data}}{{$k}} {{end}}' 2>/dev/null) || return 0
  while read -r name entry; do
    [[ " $keys" == *" $name "* ]] && continue
    k patch configmap -n "$operator_ns" "$cm" --type=merge -p "{\"data\":{\"$name\":\"$entry\"}}" >/dev/null
  done <<<"$directory"
}

# ---------------------------------------------------------------------------------------------
# Readiness.

k() { "$KUBECTL" --kubeconfig "$LOCAL_DIR/kubeconfig" "$@"; }

wait_for() { # wait_for WHAT COMPONENT CMD...: polls CMD until it succeeds
  local what=$1 comp=$2 deadline=$((SECONDS + READY_TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ -n "$comp" ] && ! pid_of "$comp" >/dev/null; then
      log "$comp exited; the end of $logs/$comp.log:"
      tail -n 30 "$logs/$comp.log" >&2 || true
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${READY_TIMEOUT}s waiting for $what${comp:+; the end of $logs/$comp.log:}"
      [ -z "$comp" ] || tail -n 30 "$logs/$comp.log" >&2 || true
      return 1
    fi
    sleep 0.3
  done
}

https_ok() { curl -sfk --max-time 2 "https://127.0.0.1:$1$2"; }
http_ok() { curl -sf --max-time 2 "http://127.0.0.1:$1$2"; }

nodes_ready() { # every node of the list exists, is Ready and has no taint
  local want have
  want=$(node_list | awk '{print $1}' | sort | tr '\n' ' ')
  have=$(k get nodes -l cvlab.epfl.ch/local-node=true -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{" "}{.spec.taints}{"\n"}{end}' |
    awk '$2 == "True" && NF == 2 {print $1}' | sort | tr '\n' ' ')
  [ "$want" = "$have" ]
}

# The policies act a moment after they are created, and root is a queue admin once the operator
# has written its --admin-groups into their params: the cluster is ready when the README's demo
# works.
dry_run_job() { # dry_run_job CONTEXT USER: a job of USER created as CONTEXT, dry run; prints the answer
  k --context "$1" create --dry-run=server -o name -f - 2>&1 <<EOF
apiVersion: cvlab.epfl.ch/v1alpha1
kind: CvlabJob
metadata: {name: readiness-probe, namespace: $demo_namespace}
spec: {user: $2, image: busybox, command: ["true"]}
EOF
}

policies_act() { # alice cannot submit as bob
  local out
  ! out=$(dry_run_job alice bob) && grep -qF "'cvlab-queue-job-owner'" <<<"$out"
}

admins_act() { # the operator wrote --admin-groups; when they hold root's group, root submits as bob
  local written
  written=$(k get configmap -n "$operator_ns" cvlab-queue-admission-params \
    -o jsonpath='{.metadata.managedFields[?(@.manager=="cvlab-queue-admin-groups")].manager} ,{.data.adminGroups},') || return 1
  [[ "$written" == "cvlab-queue-admin-groups ,"* ]] || return 1
  [[ "$written" == *,cvlab-admins,* ]] || return 0
  dry_run_job root bob
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------

up() {
  local detach=${DETACH:-}
  while [ $# -gt 0 ]; do
    case "$1" in
      --detach | -d) detach=1 ;;
      *) die "unknown flag $1" ;;
    esac
    shift
  done
  local t0=$SECONDS busy
  busy=$(running | tr '\n' ' ')
  [ -z "$busy" ] || die "already running from $LOCAL_DIR: $busy(stop it with 'hack/local-cluster.sh stop' or 'make clean-local')"
  local p
  for p in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$SCHEDULER_PORT" "$CONTROLLER_MANAGER_PORT" "$MANAGER_PROBE_PORT" "$DASHBOARD_PORT" "$FAKE_DCGM_PORT"; do
    port_free "$p" || die "port 127.0.0.1:$p is in use (set API_PORT, ETCD_PORT, ... to other ports)"
  done
  node_list >/dev/null
  local total
  total=$(node_list | awk '{s += $2} END {print s + 0}')
  local capacity=${GPU_CAPACITY:-off}

  build
  mkdir -p "$LOCAL_DIR"
  certs
  touch "$LOCAL_DIR/.cvlab-local-cluster" # marks the dir as ours, for `clean`
  # shellcheck disable=SC2046 # the people's names
  kubeconfig admin "$LOCAL_DIR/kubeconfig" $(awk '{print $1}' <<<"$people")
  local c
  for c in kube-scheduler kube-controller-manager kwok; do kubeconfig "$c" "$LOCAL_DIR/$c.kubeconfig"; done

  # From here on, a failure or a signal stops whatever was started.
  trap 'trap "" INT TERM; stop_all' EXIT
  trap 'log "interrupted"; exit 130' INT TERM

  log "starting etcd (127.0.0.1:$ETCD_PORT, data in $LOCAL_DIR/etcd)"
  start etcd "$k8sbin/etcd" --name=local --data-dir="$LOCAL_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="local=http://127.0.0.1:$ETCD_PEER_PORT" --log-level=warn
  wait_for "etcd" etcd http_ok "$ETCD_PORT" /health

  log "starting kube-apiserver (https://127.0.0.1:$API_PORT)"
  start kube-apiserver "$k8sbin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --secure-port="$API_PORT" --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --cert-dir="$pki/apiserver-generated"
  wait_for "kube-apiserver /readyz" kube-apiserver https_ok "$API_PORT" /readyz

  log "starting kwok (fake nodes annotated kwok.x-k8s.io/node=fake, stages hack/kwok/stages.yaml)"
  start kwok "$KWOK" --kubeconfig="$LOCAL_DIR/kwok.kubeconfig" --config="$root/hack/kwok/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.244.0.0/16 --node-ip=10.0.0.1

  log "starting kube-scheduler and kube-controller-manager"
  start kube-scheduler "$k8sbin/kube-scheduler" --kubeconfig="$LOCAL_DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$LOCAL_DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$LOCAL_DIR/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$pki/kube-scheduler" \
    --leader-elect=false
  start kube-controller-manager "$k8sbin/kube-controller-manager" \
    --kubeconfig="$LOCAL_DIR/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$LOCAL_DIR/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$LOCAL_DIR/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT" --cert-dir="$pki/kube-controller-manager" \
    --leader-elect=false --controllers='*' --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range=10.96.0.0/16 --node-monitor-period=2s

  log "installing config/default but the manager's Deployment (CRD, RBAC, admission policies, roles), the fake nodes and the samples' volumes"
  install_yaml | k apply -f - >/dev/null
  # What older versions of this script bound to the operator's former certificate user.
  k delete clusterrolebinding/cvlab-queue-manager-local clusterrole/manager-role --ignore-not-found >/dev/null
  nodes_yaml >"$LOCAL_DIR/nodes.yaml"
  k apply -f "$LOCAL_DIR/nodes.yaml" >/dev/null
  local name gpus cpu mem
  while read -r name gpus cpu mem; do # status of nodes that already existed (resume, other sizes)
    k patch node "$name" --subresource=status --type=merge \
      -p "{\"status\":{\"capacity\":{\"cpu\":\"$cpu\",\"memory\":\"$mem\",\"pods\":\"110\",\"nvidia.com/gpu\":\"$gpus\"},\"allocatable\":{\"cpu\":\"$cpu\",\"memory\":\"$mem\",\"pods\":\"110\",\"nvidia.com/gpu\":\"$gpus\"}}}" >/dev/null
  done < <(node_list)
  local stale
  stale=$(comm -23 <(k get nodes -l cvlab.epfl.ch/local-node=true -o name | sed 's|^node/||' | sort) <(node_list | awk '{print $1}' | sort))
  if [ -n "$stale" ]; then
    log "deleting nodes no longer listed: $(tr '\n' ' ' <<<"$stale")"
    # shellcheck disable=SC2086
    k delete node $stale >/dev/null
  fi
  wait_for "namespace default" kube-apiserver k get namespace default
  volumes_yaml | k apply -f - >/dev/null
  log "demo people $(awk '{printf "%s%s (%s)", (NR > 1 ? ", " : ""), $1, $3}' <<<"$people"): cvlab-user in namespace $demo_namespace (queue-enforced), cvlab-admin"
  people_yaml | k apply -f - >/dev/null
  k label namespace "$demo_namespace" cvlab.epfl.ch/queue-enforced=true --overwrite >/dev/null
  directory_entries

  wait_for "kube-scheduler /healthz" kube-scheduler https_ok "$SCHEDULER_PORT" /healthz
  wait_for "kube-controller-manager /healthz" kube-controller-manager https_ok "$CONTROLLER_MANAGER_PORT" /healthz
  wait_for "nodes Ready without taints" kwok nodes_ready
  wait_for "CRD cvlabjobs.cvlab.epfl.ch established" "" \
    k wait --for=condition=Established crd/cvlabjobs.cvlab.epfl.ch --timeout=5s

  log "starting the fake dcgm-exporter (http://127.0.0.1:$FAKE_DCGM_PORT/metrics, annotation cvlab.epfl.ch/simulated-utilization)"
  start fake-dcgm-exporter "$FAKE_DCGM" --kubeconfig="$LOCAL_DIR/kubeconfig" --bind-address="127.0.0.1:$FAKE_DCGM_PORT"
  wait_for "fake dcgm-exporter /health" fake-dcgm-exporter http_ok "$FAKE_DCGM_PORT" /health

  log "starting the mail catcher (SMTP 127.0.0.1:$MAIL_SMTP_PORT, inbox http://127.0.0.1:$MAIL_WEB_PORT/)"
  # Its inbox lives in the state dir: kept across runs, and the path marks the process as this
  # cluster's (is_ours).
  start mailcatcher "$MAILCATCHER" --smtp-addr="127.0.0.1:$MAIL_SMTP_PORT" --http-addr="127.0.0.1:$MAIL_WEB_PORT" --store="$LOCAL_DIR/mail.jsonl"
  wait_for "mail catcher /healthz" mailcatcher http_ok "$MAIL_WEB_PORT" /healthz

  local manager_args=(--kubeconfig="$LOCAL_DIR/manager.kubeconfig"
    --health-probe-bind-address="127.0.0.1:$MANAGER_PROBE_PORT" --metrics-bind-address=0)
  [ "$capacity" = off ] || manager_args+=(--gpu-capacity="$capacity")
  # Flags of newer operators, passed only when this build has them (every listener on loopback).
  # The help is read whole first: grep -q on a pipe would stop reading at the first match and
  # the manager, still writing, would die of SIGPIPE, failing the pipeline (pipefail).
  local help f n dashboard=""
  help=$("$MANAGER" --help 2>&1 || true)
  if grep -q -- '-dashboard-bind-address' <<<"$help"; then
    manager_args+=(--dashboard-bind-address="127.0.0.1:$DASHBOARD_PORT")
    dashboard="http://127.0.0.1:$DASHBOARD_PORT/"
  fi
  if grep -q -- '-dcgm-exporter-url' <<<"$help"; then
    manager_args+=(--dcgm-exporter-url="http://127.0.0.1:$FAKE_DCGM_PORT/metrics")
  else
    log "this operator has no --dcgm-exporter-url: the fake dcgm-exporter runs unread"
  fi
  if grep -q -- '-smtp-url' <<<"$help"; then
    manager_args+=(--smtp-url="smtp://127.0.0.1:$MAIL_SMTP_PORT" --smtp-starttls=none
      --smtp-from="cvlab-queue <cvlab-queue@cvlab.local>" --notify-group-window=10s)
    if [ -n "$dashboard" ]; then manager_args+=(--dashboard-url="$dashboard"); fi
  fi
  for f in $IDLE_ARGS; do # each idle flag only when this operator has it
    n=${f%%=*}
    n=${n#-}
    n=${n#-}
    if grep -qE -- "^ +--?$n( |$)" <<<"$help"; then manager_args+=("$f"); fi
  done
  # shellcheck disable=SC2206 # MANAGER_ARGS is a list of flags
  manager_args+=($MANAGER_ARGS)
  log "starting the operator as $operator_user (bin/manager ${manager_args[*]})"
  operator_kubeconfig "$LOCAL_DIR/manager.kubeconfig"
  start manager env POD_NAMESPACE="$operator_ns" "$MANAGER" "${manager_args[@]}"
  wait_for "operator /readyz" manager http_ok "$MANAGER_PROBE_PORT" /readyz
  wait_for "the admission policies refusing alice a job as bob" manager policies_act
  wait_for "the operator's --admin-groups in the policies' params" manager admins_act

  local n
  n=$(node_list | wc -l)
  cat <<EOF

Local cluster ready in $((SECONDS - t0)) s: $n fake nodes, $total GPUs (operator --gpu-capacity=$capacity; off = from the nodes), state in $LOCAL_DIR
  export KUBECONFIG=$LOCAL_DIR/kubeconfig
  alias kubectl=$KUBECTL
  kubectl --context alice apply -f config/samples/gpu-job.yaml          # alice's job, as alice
  kubectl --context alice apply -f config/samples/jupyter-2gpu-job.yaml # bob's job, as alice: refused
  kubectl --context root apply -f config/samples/jupyter-2gpu-job.yaml  # a queue admin submits for bob
  kubectl get cvlabjobs -w
  kubectl describe cvj alice-train
Contexts: cvlab-local (cluster admin, the default), alice and bob (cvlab-user in namespace $demo_namespace), root (queue admin)
${dashboard:+Dashboard: $dashboard
}Fake dcgm-exporter: http://127.0.0.1:$FAKE_DCGM_PORT/metrics (docs/local-cluster.md#gpu-utilisation-the-fake-dcgm-exporter)
Mail (alice's and bob's notifications): http://127.0.0.1:$MAIL_WEB_PORT/
Logs: $logs/*.log
EOF
  if [ -n "$detach" ]; then
    if [ -n "$STOP_WITH_PID" ]; then
      start watchdog "$root/hack/local-cluster.sh" watch "$STOP_WITH_PID" "$LOCAL_DIR"
      echo "A watchdog stops the cluster when process $STOP_WITH_PID exits."
    fi
    echo "Detached; stop with: LOCAL_DIR=$LOCAL_DIR hack/local-cluster.sh stop"
    trap - EXIT INT TERM
    return 0
  fi
  echo "Ctrl-C stops everything; 'make run-local' again resumes with the same jobs."
  # Wait for a signal or for a component to exit.
  local pids=() pid
  for c in "${components[@]}"; do
    if pid=$(pid_of "$c"); then pids+=("$pid"); fi
  done
  set +e
  wait -n "${pids[@]}"
  set -e
  for c in "${components[@]}"; do
    if [ "$c" != watchdog ] && ! pid_of "$c" >/dev/null; then
      log "$c exited; the end of $logs/$c.log:"
      tail -n 20 "$logs/$c.log" >&2 || true
    fi
  done
  exit 1
}

cmd=${1:-up}
[ $# -eq 0 ] || shift
case "$cmd" in
  up) up "$@" ;;
  stop) stop_all ;;
  status)
    r=$(running)
    if [ -z "$r" ]; then echo "not running ($LOCAL_DIR)"; exit 1; fi
    for c in $r; do echo "$c pid $(pid_of "$c")"; done
    ;;
  env) echo "export KUBECONFIG=$LOCAL_DIR/kubeconfig" ;;
  watch) # internal: watch PID LOCAL_DIR; stops the cluster once PID has exited
    watched=$1
    trap 'exit 0' TERM INT
    while [ -e "/proc/$watched" ] && [ "$(awk '{print $3}' "/proc/$watched/stat" 2>/dev/null)" != Z ]; do
      sleep 1 &
      wait $! || true
    done
    log "process $watched exited: stopping the cluster"
    rm -f "$run/watchdog.pid"
    stop_all
    ;;
  build) build ;;
  clean)
    stop_all
    if [ ! -e "$LOCAL_DIR" ]; then
      log "nothing to remove: $LOCAL_DIR does not exist"
    elif [ -e "$LOCAL_DIR/.cvlab-local-cluster" ] || [ -z "$(ls -A "$LOCAL_DIR")" ]; then
      rm -rf "$LOCAL_DIR"
      log "removed $LOCAL_DIR"
    else
      die "$LOCAL_DIR was not made by this script; not removing it"
    fi
    ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
  *) die "unknown command $cmd (up, stop, status, env, build, clean)" ;;
esac
