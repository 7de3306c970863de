package utilization

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clocktesting "k8s.io/utils/clock/testing"
)

// These tests answer the Prometheus HTTP API (/api/v1/query) from an httptest server with
// responses shaped like a real Prometheus 3.x's; they do not run a real Prometheus (see
// prometheus_real_test.go and `make test-prometheus` for that).

// promSeries renders one result of an instant vector query, as Prometheus does: the labels of a
// dcgm-exporter series scraped through a ServiceMonitor without honor_labels (the exporter's pod
// in pod/namespace, the GPU holder's in exported_pod/exported_namespace), without __name__ (the
// functions drop it).
func promSeries(gpu int, holder, value string) string {
	return fmt.Sprintf(`{"metric":{"DCGM_FI_DRIVER_VERSION":"550.54.15","Hostname":"gpu-1","UUID":"GPU-5f9c2a41-8e0b-7d4c-1f2a-93b6c0d1e7a%d","container":"nvidia-dcgm-exporter","device":"nvidia%d","endpoint":"gpu-metrics","gpu":"%d","instance":"10.244.1.17:9400","job":"nvidia-dcgm-exporter","modelName":"NVIDIA A100-SXM4-40GB","namespace":"gpu-operator","pci_bus_id":"00000000:0%d:00.0","pod":"nvidia-dcgm-exporter-x7k2p","service":"nvidia-dcgm-exporter"%s},"value":[1796637600,"%s"]}`,
		gpu, gpu, gpu, gpu+7, holder, value)
}

const (
	promAlice = `,"exported_container":"job","exported_namespace":"lab","exported_pod":"alice-train-1"`
	promBob   = `,"exported_container":"notebook","exported_namespace":"lab","exported_pod":"bob-jupyter"`
)

func vectorResponse(results ...string) string {
	return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(results, ",") + `]}}`
}

// fakePrometheus answers /api/v1/query with a response per query (by prefix: "avg_over_time(DCGM_FI_PROF"
// for utilisation, "avg_over_time(DCGM_FI_DEV_FB" for memory).
type fakePrometheus struct {
	util, memory string
	status       int // != 0: answer every query with this status and a Prometheus error body
	queries      []string
}

func (f *fakePrometheus) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.Form.Get("query")
	f.queries = append(f.queries, q)
	w.Header().Set("Content-Type", "application/json")
	if f.status != 0 {
		w.WriteHeader(f.status)
		_, _ = w.Write([]byte(`{"status":"error","errorType":"unavailable","error":"TSDB not ready"}`))
		return
	}
	switch {
	case strings.HasPrefix(q, "avg_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE"):
		_, _ = w.Write([]byte(f.util))
	case strings.HasPrefix(q, "avg_over_time(DCGM_FI_DEV_FB_USED"):
		_, _ = w.Write([]byte(f.memory))
	default:
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"status":"error","errorType":"bad_data","error":"unexpected query"}`))
	}
}

func TestQueries(t *testing.T) {
	u, m := Queries(5 * time.Minute)
	if want := "avg_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE[5m]) or avg_over_time(DCGM_FI_DEV_GPU_UTIL[5m]) / 100"; u != want {
		t.Errorf("utilisation query %q, want %q", u, want)
	}
	if want := "avg_over_time(DCGM_FI_DEV_FB_USED[5m])"; m != want {
		t.Errorf("memory query %q, want %q", m, want)
	}
}

func TestPrometheusSource(t *testing.T) {
	aliceKey := PodKey{Namespace: "lab", Name: "alice-train-1"}
	bobKey := PodKey{Namespace: "lab", Name: "bob-jupyter"}
	empty := vectorResponse()
	tests := map[string]struct {
		prom    fakePrometheus
		want    map[PodKey]Sample
		wantErr bool
	}{
		"one GPU each, exported_ labels": {
			prom: fakePrometheus{
				util:   vectorResponse(promSeries(0, promAlice, "0.87"), promSeries(1, promBob, "0.01")),
				memory: vectorResponse(promSeries(0, promAlice, "30112"), promSeries(1, promBob, "611.5")),
			},
			want: map[PodKey]Sample{
				aliceKey: {Utilization: 0.87, MemoryUsedMiB: 30112, GPUs: 1, At: t0},
				bobKey:   {Utilization: 0.01, MemoryUsedMiB: 612, GPUs: 1, At: t0},
			},
		},
		"several GPUs per pod": {
			prom: fakePrometheus{
				util:   vectorResponse(promSeries(0, promAlice, "0.9"), promSeries(1, promAlice, "0.3")),
				memory: vectorResponse(promSeries(0, promAlice, "100"), promSeries(1, promAlice, "200")),
			},
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.6, MemoryUsedMiB: 300, GPUs: 2, At: t0}},
		},
		"honor_labels: pod and namespace are the holder's": {
			prom: fakePrometheus{
				util:   vectorResponse(`{"metric":{"Hostname":"gpu-1","UUID":"GPU-5f9c2a41-8e0b-7d4c-1f2a-93b6c0d1e7a0","gpu":"0","instance":"10.244.1.17:9400","job":"dcgm","namespace":"lab","pod":"alice-train-1","container":"job"},"value":[1796637600,"0.42"]}`),
				memory: empty,
			},
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.42, MemoryUsedMiB: -1, GPUs: 1, At: t0}},
		},
		"stale or missing series: pod absent, memory alone is not enough": {
			prom: fakePrometheus{
				util:   vectorResponse(promSeries(0, promAlice, "0.5")),
				memory: vectorResponse(promSeries(0, promAlice, "10"), promSeries(1, promBob, "20")),
			},
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.5, MemoryUsedMiB: 10, GPUs: 1, At: t0}},
		},
		"NaN is unknown": {
			prom: fakePrometheus{
				util:   vectorResponse(promSeries(0, promAlice, "NaN"), promSeries(1, promBob, "0")),
				memory: empty,
			},
			want: map[PodKey]Sample{bobKey: {Utilization: 0, MemoryUsedMiB: -1, GPUs: 1, At: t0}},
		},
		"empty result: nothing known, no error": {
			prom: fakePrometheus{util: empty, memory: empty},
			want: map[PodKey]Sample{},
		},
		"Prometheus unavailable: error": {
			prom:    fakePrometheus{status: http.StatusServiceUnavailable},
			wantErr: true,
		},
		"not a vector: error": {
			prom:    fakePrometheus{util: `{"status":"success","data":{"resultType":"scalar","result":[1796637600,"1"]}}`, memory: empty},
			wantErr: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(&tc.prom)
			t.Cleanup(srv.Close)
			src, err := NewPrometheusSource(PrometheusOptions{URL: srv.URL, Clock: clocktesting.NewFakePassiveClock(t0)})
			if err != nil {
				t.Fatal(err)
			}
			got, err := src.Collect(context.Background(), 5*time.Minute)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(approx)); diff != "" {
				t.Errorf("samples (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrometheusSourceDown(t *testing.T) {
	src, err := NewPrometheusSource(PrometheusOptions{URL: "http://127.0.0.1:1", Client: &http.Client{Timeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := src.Collect(context.Background(), time.Minute); err == nil {
		t.Errorf("no error, samples %v", got)
	}
}
