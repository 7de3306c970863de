##@ Benchmarks (hack/bench.mk; bench/README.md, docs/performance.md)
# make bench        the engine's micro-benchmarks, then the end-to-end benchmark of the manager on a
#                   real kube-apiserver + etcd (BENCH_JOBS jobs of 200 users, 32 nodes x 8 GPUs)
# make bench-kueue  the same job mix on Kueue v0.17.0 (built from the Go module proxy into bin/),
#                   at client QPS 1000 (5,000 jobs) and at Kueue's default 50 (2,000 jobs), beside cvlab-queue
# Results: a table on stdout, JSON under $(BENCH_OUT). Never part of CI; `go test ./bench/...`
# runs each once at a tiny size.

BENCH_OUT ?= $(CURDIR)/bench/out
BENCH_JOBS ?= 1000,2000,5000,10000,20000
# Kueue at client QPS 1000 with BENCH_KUEUE_JOBS jobs, and at its shipped QPS 50 with
# BENCH_KUEUE_QPS50_JOBS (at 50 QPS its Workloads alone take minutes to create: of 5,000 jobs it had
# admitted 2,476 after 9.5 minutes); cvlab-queue at both sizes.
BENCH_KUEUE_JOBS ?= 5000
BENCH_KUEUE_QPS50_JOBS ?= 2000
# The manager's client and the position writer sized for 5,000+ waiting jobs (see docs/performance.md).
BENCH_MANAGER_ARGS ?= --status-qps=500 --kube-api-qps=1000 --kube-api-burst=2000
BENCH_FLAGS ?=
BENCH_ENGINE_COUNT ?= 6
KUEUE_VERSION ?= v0.17.0
KUEUE_BIN ?= $(LOCALBIN)/kueue/$(KUEUE_VERSION)/kueue

.PHONY: bench
bench: bench-engine bench-simulate bench-e2e ## Engine micro-benchmarks, the simulator, then the end-to-end benchmark (BENCH_JOBS=1000,5000,20000).

.PHONY: bench-engine
bench-engine: ## The engine's micro-benchmarks (1k/10k/100k jobs, one job arriving or finishing), into $(BENCH_OUT)/engine.txt.
	@mkdir -p $(BENCH_OUT)
	go test -run '^$$' -bench . -benchmem -count $(BENCH_ENGINE_COUNT) ./internal/queue/ | tee $(BENCH_OUT)/engine.txt

.PHONY: bench-simulate
bench-simulate: ## The simulator: a generated month of a 30-GPU, 25-person lab (~20k jobs); a 330-job prediction. Into $(BENCH_OUT)/simulate.txt.
	@mkdir -p $(BENCH_OUT)
	go test -run '^$$' -bench 'SimulateLab30Days|Predict300' -benchmem -count 3 ./internal/simulate/ | tee $(BENCH_OUT)/simulate.txt

.PHONY: bench-manager
bench-manager:
	@mkdir -p $(LOCALBIN)/bench
	go build -o $(LOCALBIN)/bench/manager ./cmd

.PHONY: bench-e2e
bench-e2e: bench-manager ## End-to-end: control plane, the manager as a process, the load driver; JSON in $(BENCH_OUT).
	@assets="$${KUBEBUILDER_ASSETS:-$$(hack/build-k8s.sh etcd kube-apiserver | tail -n 1)}" && \
	KUBEBUILDER_ASSETS="$$assets" go run ./bench/cmd/loadgen -system cvlab -jobs $(BENCH_JOBS) -out $(BENCH_OUT) \
		-manager $(LOCALBIN)/bench/manager -manager-args "$(BENCH_MANAGER_ARGS)" $(BENCH_FLAGS)

.PHONY: kueue
kueue: ## Build Kueue's manager from the Go module proxy into bin/kueue/<version>/ (cached).
	@hack/build-kueue.sh

.PHONY: bench-kueue
bench-kueue: bench-manager kueue ## The same mix on Kueue (client QPS 1000 at 5k jobs, QPS 50 at 2k) and on cvlab-queue, side by side.
	@assets="$${KUBEBUILDER_ASSETS:-$$(hack/build-k8s.sh etcd kube-apiserver | tail -n 1)}" && \
	crds="$$(cd hack/kueue && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)/config/components/crd/bases" && \
	KUBEBUILDER_ASSETS="$$assets" go run ./bench/cmd/loadgen -system kueue -jobs $(BENCH_KUEUE_JOBS) -out $(BENCH_OUT) \
		-kueue $(KUEUE_BIN) -kueue-crds "$$crds" -kueue-qps 1000 -tag -qps1000 $(BENCH_FLAGS) && \
	KUBEBUILDER_ASSETS="$$assets" go run ./bench/cmd/loadgen -system kueue -jobs $(BENCH_KUEUE_QPS50_JOBS) -out $(BENCH_OUT) -timeout 20m \
		-kueue $(KUEUE_BIN) -kueue-crds "$$crds" -kueue-qps 50 -tag -qps50 $(BENCH_FLAGS) && \
	KUBEBUILDER_ASSETS="$$assets" go run ./bench/cmd/loadgen -system cvlab -jobs $(BENCH_KUEUE_JOBS),$(BENCH_KUEUE_QPS50_JOBS) -out $(BENCH_OUT) \
		-manager $(LOCALBIN)/bench/manager -manager-args "$(BENCH_MANAGER_ARGS)" $(BENCH_FLAGS) && \
	go run ./bench/cmd/loadgen -compare $(BENCH_OUT) -jobs $(BENCH_KUEUE_JOBS),$(BENCH_KUEUE_QPS50_JOBS)
