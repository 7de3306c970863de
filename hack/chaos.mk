##@ Fault injection (test/chaos; see docs/reliability.md)
# Included by the Makefile. `make test` runs test/chaos at CI size with the other suites; this target
# runs the long version: more manager kills and jobs, longer outages, and the leader failover again
# with a short lease. Each test's figures are appended as JSON lines to $(CHAOS_REPORT).

CHAOS_KILLS ?= 100
CHAOS_JOBS ?= 500
CHAOS_OUTAGE_SECONDS ?= 20
CHAOS_REPORT ?= $(LOCALBIN)/chaos-report.jsonl
CHAOS_SHORT_LEASE ?= 8s,6s,1s
CHAOS_TIMEOUT ?= 90m
CHAOS_FLAGS ?=

.PHONY: test-chaos
test-chaos: ## Long fault-injection run: CHAOS_KILLS=100 manager kills under CHAOS_JOBS=500 jobs, API-server and etcd outages, leader failover (default and short lease), cluster faults; figures in $(CHAOS_REPORT).
	@assets="$${KUBEBUILDER_ASSETS:-$$(hack/build-k8s.sh etcd kube-apiserver | tail -n 1)}" && \
	echo "KUBEBUILDER_ASSETS=$$assets; figures appended to $(CHAOS_REPORT)" && \
	export KUBEBUILDER_ASSETS="$$assets" CHAOS_REPORT="$(CHAOS_REPORT)" \
		CHAOS_KILLS=$(CHAOS_KILLS) CHAOS_JOBS=$(CHAOS_JOBS) CHAOS_OUTAGE_SECONDS=$(CHAOS_OUTAGE_SECONDS) \
		CHAOS_HA_JOBS=$${CHAOS_HA_JOBS:-150} CHAOS_API_JOBS=$${CHAOS_API_JOBS:-200} \
		CHAOS_BUDGET_JOBS=$${CHAOS_BUDGET_JOBS:-120} CHAOS_WEBHOOK_JOBS=$${CHAOS_WEBHOOK_JOBS:-150} && \
	go test -count=1 -v -timeout $(CHAOS_TIMEOUT) $(CHAOS_FLAGS) ./test/chaos/ && \
	CHAOS_LEASE=$(CHAOS_SHORT_LEASE) go test -count=1 -v -timeout $(CHAOS_TIMEOUT) $(CHAOS_FLAGS) -run '^TestLeaderFailover$$' ./test/chaos/
