##@ Real Prometheus (hack/prometheus.mk)
# make test-prometheus  builds Prometheus from the Go module proxy (hack/build-prometheus.sh, cached in
#                       bin/prometheus and ~/.cache/cvlab-queue; ~10 min the first time on 2 cores) and
#                       runs internal/utilization's PrometheusSource against it, scraping an httptest
#                       dcgm-exporter. Not part of `make test` (build time); the unit tests of
#                       PrometheusSource answer the HTTP API from an httptest server instead.

.PHONY: test-prometheus
test-prometheus: ## PrometheusSource against a real Prometheus built from Go modules.
	@bin="$${CVLAB_PROMETHEUS:-$$(hack/build-prometheus.sh | tail -n 1)}" && \
	echo "CVLAB_PROMETHEUS=$$bin" && \
	CVLAB_PROMETHEUS="$$bin" go test -count=1 -tags prometheus -run TestPrometheusSourceRealPrometheus -v ./internal/utilization
