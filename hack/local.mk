##@ Local cluster (hack/local-cluster.sh; see docs/local-cluster.md)
# Included by the Makefile. The local cluster runs etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager and kwok (fake GPU nodes) on 127.0.0.1, and the operator on top; its
# state is in $(LOCAL_DIR). NODES, GPUS_PER_NODE, NODE_FILE, GPU_CAPACITY, MANAGER_ARGS and the
# *_PORT variables are passed to the script through the environment.

LOCAL_DIR ?= $(CURDIR)/.local
export LOCAL_DIR
KUBECTL ?= $(ENVTEST_ASSETS)/kubectl
E2E_FLAGS ?=
E2E_ARGS ?=

.PHONY: run-local
run-local: ## The whole product on a local cluster with fake GPU nodes and people (contexts alice, bob, root); Ctrl-C stops it, run again to resume.
	@hack/local-cluster.sh up

.PHONY: run-local-detached
run-local-detached: ## Like run-local, but returns once the cluster is ready (stop with make stop-local).
	@hack/local-cluster.sh up --detach

.PHONY: stop-local
stop-local: ## Stop a detached local cluster, keeping its state.
	@hack/local-cluster.sh stop

.PHONY: clean-local
clean-local: ## Stop the local cluster and delete its state ($(LOCAL_DIR)).
	@hack/local-cluster.sh clean

.PHONY: local-binaries
local-binaries: ## Build the local cluster's binaries (Kubernetes, kwok, manager) without starting it.
	@hack/local-cluster.sh build

.PHONY: test-e2e
test-e2e: local-binaries ## End-to-end suite on its own local cluster (temp dir, free ports); E2E_FLAGS=-v E2E_ARGS=-ginkgo.v for details.
	go test -tags e2e -count=1 $(E2E_FLAGS) ./test/e2e/... $(E2E_ARGS)

.PHONY: demo
demo: ## Flood the local cluster of $(LOCAL_DIR) (never $$KUBECONFIG) with a lab-like mix of jobs in namespace cvlab-demo.
	@hack/demo.sh

.PHONY: demo-clean
demo-clean: ## Delete the demo's jobs (namespace cvlab-demo).
	@hack/demo.sh clean

.PHONY: kubectl
kubectl: $(KUBECTL)
$(KUBECTL):
	@hack/build-k8s.sh kubectl >/dev/null

.PHONY: deploy
deploy: kubectl ## Install CRD, RBAC and the manager Deployment (kubectl apply -k config/default) into $KUBECONFIG's cluster.
	$(KUBECTL) apply -k config/default

.PHONY: undeploy
undeploy: kubectl ## Remove what deploy installed.
	$(KUBECTL) delete -k config/default --ignore-not-found
