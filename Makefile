# cvlab job queue operator.
#   make test       unit tests + envtest suites on a real kube-apiserver and etcd built from Go modules
#   make run-local  the whole product on a local cluster (see README)

K8S_VERSION ?= v1.37.2
LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
CONTROLLER_TOOLS_VERSION ?= v0.23.0
ENVTEST_ASSETS ?= $(LOCALBIN)/k8s/$(K8S_VERSION)
IMG ?= cvlab-queue:dev
GO_TEST_FLAGS ?=

.PHONY: all
all: build

##@ Development

.PHONY: generate
generate: controller-gen ## Generate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: manifests
manifests: controller-gen ## Generate CRDs and RBAC.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: fmt
fmt:
	go fmt ./...

.PHONY: vet
vet:
	go vet ./...

.PHONY: envtest
envtest: ## Build kube-apiserver and etcd from the Go module proxy into bin/k8s/<version>/ (cached); prints the directory.
	@hack/build-k8s.sh etcd kube-apiserver

.PHONY: test
test: vet test-unit test-e2e ## Everything: unit tests, envtest suites, and the e2e suite on a local cluster.

.PHONY: test-unit
test-unit: ## Unit tests and envtest suites (builds the test control plane once); one package at a time, so that the heavy suites (chaos, benchmarks) do not starve the others on 2 cores.
	@assets="$${KUBEBUILDER_ASSETS:-$$(hack/build-k8s.sh etcd kube-apiserver | tail -n 1)}" && \
	echo "KUBEBUILDER_ASSETS=$$assets" && \
	KUBEBUILDER_ASSETS="$$assets" go test -count=1 -p 1 $(GO_TEST_FLAGS) ./...

.PHONY: verify-generated
verify-generated: generate manifests ## Fail when generated files differ from what is committed.
	@git diff --exit-code -- api config || { echo "generated files are stale: run 'make generate manifests' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- api config | grep '^??')" || { echo "untracked generated files:" >&2; git status --porcelain -- api config >&2; exit 1; }

##@ Build

.PHONY: build
build: generate ## The manager and the kubectl plugin (bin/kubectl-cvlab: put bin/ on PATH for `kubectl cvlab`).
	go build -o $(LOCALBIN)/manager ./cmd
	go build -o $(LOCALBIN)/kubectl-cvlab ./cmd/kubectl-cvlab

.PHONY: run
run: manifests generate ## Run the manager against the cluster in KUBECONFIG.
	go run ./cmd $(RUN_ARGS)

.PHONY: docker-build
docker-build:
	docker build -t $(IMG) .

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

# The local cluster (make run-local, clean-local, test-e2e, demo, deploy, undeploy).
include hack/local.mk

# Fault injection (make test-chaos) and benchmarks (make bench, make bench-kueue).
include hack/chaos.mk
include hack/bench.mk

# PrometheusSource against a real Prometheus built from Go modules (make test-prometheus).
include hack/prometheus.mk
