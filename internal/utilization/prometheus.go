package utilization

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"k8s.io/utils/clock"
)

// DefaultQueryTimeout bounds one PromQL query when PrometheusOptions.Client is nil.
const DefaultQueryTimeout = 10 * time.Second

// PrometheusOptions configure a PrometheusSource.
type PrometheusOptions struct {
	// URL is the Prometheus server's base URL (--prometheus-url), e.g. http://prometheus:9090.
	URL string
	// Client does the queries; nil means one with DefaultQueryTimeout. Give it a timeout.
	Client *http.Client
	// Clock gives the evaluation time of the queries; nil means the real clock.
	Clock clock.PassiveClock
}

// PrometheusSource reads dcgm-exporter's series from a Prometheus server that scrapes the
// exporters, with PromQL (github.com/prometheus/client_golang/api):
//
//	avg_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE[<window>])
//	  or avg_over_time(DCGM_FI_DEV_GPU_UTIL[<window>]) / 100     (per GPU: the profiling metric wins)
//	avg_over_time(DCGM_FI_DEV_FB_USED[<window>])
//
// and groups the GPUs per pod (exported_pod/exported_namespace winning over pod/namespace, which
// then name the exporter). A GPU without a sample in the window is absent from the result, so a
// pod whose series went stale is unknown, never idle. Series that name no pod (GPUs nobody holds)
// are ignored; a GPU no one holds behind a Prometheus without honor_labels is attributed to the
// exporter pod, which is never a job.
type PrometheusSource struct {
	api   promv1.API
	clock clock.PassiveClock
}

// NewPrometheusSource returns a source querying the Prometheus at opts.URL.
func NewPrometheusSource(opts PrometheusOptions) (*PrometheusSource, error) {
	if opts.URL == "" {
		return nil, errors.New("utilization: no Prometheus URL")
	}
	c := opts.Client
	if c == nil {
		c = &http.Client{Timeout: DefaultQueryTimeout}
	}
	client, err := api.NewClient(api.Config{Address: opts.URL, Client: c})
	if err != nil {
		return nil, fmt.Errorf("utilization: Prometheus client for %q: %w", opts.URL, err)
	}
	s := &PrometheusSource{api: promv1.NewAPI(client), clock: opts.Clock}
	if s.clock == nil {
		s.clock = clock.RealClock{}
	}
	return s, nil
}

// Queries returns the PromQL queries for a window: utilisation (0-1) per GPU, and memory per GPU.
func Queries(window time.Duration) (util, memory string) {
	w := model.Duration(window).String()
	util = fmt.Sprintf("avg_over_time(%s[%s]) or avg_over_time(%s[%s]) / 100", MetricEngineActive, w, MetricGPUUtil, w)
	memory = fmt.Sprintf("avg_over_time(%s[%s])", MetricFBUsed, w)
	return util, memory
}

// Collect queries the utilisation and memory of every GPU over window and returns them per pod.
// It returns an error when Prometheus cannot be queried.
func (s *PrometheusSource) Collect(ctx context.Context, window time.Duration) (map[PodKey]Sample, error) {
	if window < time.Millisecond {
		return nil, fmt.Errorf("utilization: window must be at least 1ms, got %v", window)
	}
	now := s.clock.Now()
	utilQ, memQ := Queries(window)
	util, err := s.query(ctx, utilQ, now)
	if err != nil {
		return nil, err
	}
	mem, err := s.query(ctx, memQ, now)
	if err != nil {
		return nil, err
	}
	gpus := map[gpuKey]gpuReading{}
	add := func(v model.Vector, metric string) {
		for _, smp := range v {
			l := metricLabels(smp.Metric)
			pod, ok := podOf(l)
			if !ok {
				continue
			}
			// Several exporters (or Prometheus jobs) can report one GPU: keep one reading per GPU.
			node := l("Hostname")
			if node == "" {
				node = l("instance")
			}
			k := gpuKey{pod: pod, gpu: node + "#" + gpuOf(l)}
			r := gpus[k]
			val := float64(smp.Value)
			if metric == MetricGPUUtil { // the query already divided by 100
				val *= 100
			}
			r.add(metric, val)
			gpus[k] = r
		}
	}
	add(util, MetricGPUUtil)
	add(mem, MetricFBUsed)
	out := map[PodKey]Sample{}
	for p, r := range podReadings(gpus) {
		out[p] = Sample{Utilization: r.utilization, MemoryUsedMiB: r.memoryMiB, GPUs: r.gpus, At: now}
	}
	return out, nil
}

// query runs one instant query and returns its vector.
func (s *PrometheusSource) query(ctx context.Context, q string, at time.Time) (model.Vector, error) {
	v, _, err := s.api.Query(ctx, q, at)
	if err != nil {
		return nil, fmt.Errorf("utilization: querying Prometheus %q: %w", q, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("utilization: Prometheus answered %q with a %s, not a vector", q, v.Type())
	}
	// Drop NaN and infinite values here too (gpuReading.add ignores them as well).
	out := vec[:0]
	for _, smp := range vec {
		if f := float64(smp.Value); !math.IsNaN(f) && !math.IsInf(f, 0) {
			out = append(out, smp)
		}
	}
	return out, nil
}

// metricLabels reads a PromQL result's labels.
func metricLabels(m model.Metric) labelSet {
	return func(n string) string { return string(m[model.LabelName(n)]) }
}
