package utilization

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	clocktesting "k8s.io/utils/clock/testing"
)

// dcgmHeader is what dcgm-exporter (3.x/4.x, default counters) prints before its series.
const dcgmHeader = `# HELP DCGM_FI_DEV_SM_CLOCK SM frequency (in MHz).
# TYPE DCGM_FI_DEV_SM_CLOCK gauge
DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-5f9c2a41-8e0b-7d4c-1f2a-93b6c0d1e7a8",pci_bus_id="00000000:07:00.0",device="nvidia0",modelName="NVIDIA A100-SXM4-40GB",Hostname="gpu-1",DCGM_FI_DRIVER_VERSION="550.54.15",container="job",namespace="lab",pod="alice-train-1"} 1410
`

// gpuLine is one series of dcgm-exporter, with DCGM_EXPORTER_KUBERNETES=true labels.
func gpuLine(metric string, gpu int, podLabels string, v string) string {
	return fmt.Sprintf(`%s{gpu="%d",UUID="GPU-5f9c2a41-8e0b-7d4c-1f2a-93b6c0d1e7a%d",pci_bus_id="00000000:0%d:00.0",device="nvidia%d",modelName="NVIDIA A100-SXM4-40GB",Hostname="gpu-1",DCGM_FI_DRIVER_VERSION="550.54.15"%s} %s`+"\n",
		metric, gpu, gpu, gpu+7, gpu, podLabels, v)
}

func typed(metric, help string, lines ...string) string {
	return fmt.Sprintf("# HELP %s %s\n# TYPE %s gauge\n", metric, help, metric) + strings.Join(lines, "")
}

const (
	alice = `,container="job",namespace="lab",pod="alice-train-1"`
	bob   = `,container="notebook",namespace="lab",pod="bob-jupyter"`
	free  = `` // a GPU no pod holds: no pod labels
)

func util(lines ...string) string {
	return typed(MetricGPUUtil, "GPU utilization (in %).", lines...)
}
func fb(lines ...string) string {
	return typed(MetricFBUsed, "Framebuffer memory used (in MiB).", lines...)
}
func active(lines ...string) string {
	return typed(MetricEngineActive, "Ratio of time the graphics engine is active.", lines...)
}

// exporter serves a body that tests can change; status != 200 simulates a broken exporter.
type exporter struct {
	mu     sync.Mutex
	body   string
	status int
}

func (e *exporter) set(body string) {
	e.mu.Lock()
	e.body, e.status = body, http.StatusOK
	e.mu.Unlock()
}

func (e *exporter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r.URL.Path != "/metrics" {
		http.NotFound(w, r)
		return
	}
	if e.status != http.StatusOK {
		w.WriteHeader(e.status)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write([]byte(e.body))
}

func newExporter(t *testing.T, body string) (*exporter, string) {
	e := &exporter{body: body, status: http.StatusOK}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return e, srv.URL + "/metrics"
}

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func TestExporterSourceOneScrape(t *testing.T) {
	aliceKey := PodKey{Namespace: "lab", Name: "alice-train-1"}
	bobKey := PodKey{Namespace: "lab", Name: "bob-jupyter"}
	tests := map[string]struct {
		body string
		want map[PodKey]Sample
	}{
		"GPU_UTIL percent, memory": {
			body: dcgmHeader + util(gpuLine(MetricGPUUtil, 0, alice, "87")) + fb(gpuLine(MetricFBUsed, 0, alice, "30112")),
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.87, MemoryUsedMiB: 30112, GPUs: 1, At: t0}},
		},
		"profiling metric preferred over GPU_UTIL": {
			body: util(gpuLine(MetricGPUUtil, 0, alice, "100")) + active(gpuLine(MetricEngineActive, 0, alice, "0.25")),
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.25, MemoryUsedMiB: -1, GPUs: 1, At: t0}},
		},
		"profiling metric per GPU, fallback for the others": {
			body: util(gpuLine(MetricGPUUtil, 0, alice, "100"), gpuLine(MetricGPUUtil, 1, alice, "40")) +
				active(gpuLine(MetricEngineActive, 0, alice, "0.2")),
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.3, MemoryUsedMiB: -1, GPUs: 2, At: t0}},
		},
		"several GPUs per pod: mean utilisation, summed memory": {
			body: util(gpuLine(MetricGPUUtil, 0, alice, "90"), gpuLine(MetricGPUUtil, 1, alice, "10"), gpuLine(MetricGPUUtil, 2, bob, "0")) +
				fb(gpuLine(MetricFBUsed, 0, alice, "1000"), gpuLine(MetricFBUsed, 1, alice, "500"), gpuLine(MetricFBUsed, 2, bob, "3")),
			want: map[PodKey]Sample{
				aliceKey: {Utilization: 0.5, MemoryUsedMiB: 1500, GPUs: 2, At: t0},
				bobKey:   {Utilization: 0, MemoryUsedMiB: 3, GPUs: 1, At: t0},
			},
		},
		"exported_ labels win over the exporter's own": {
			body: util(gpuLine(MetricGPUUtil, 0, `,namespace="gpu-operator",pod="nvidia-dcgm-exporter-x7k2p",exported_namespace="lab",exported_pod="alice-train-1",exported_container="job"`, "55")),
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.55, MemoryUsedMiB: -1, GPUs: 1, At: t0}},
		},
		"exported_ labels alone": {
			body: util(gpuLine(MetricGPUUtil, 0, `,exported_namespace="lab",exported_pod="alice-train-1"`, "55")),
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.55, MemoryUsedMiB: -1, GPUs: 1, At: t0}},
		},
		"GPU held by no pod is ignored": {
			body: util(gpuLine(MetricGPUUtil, 0, free, "0"), gpuLine(MetricGPUUtil, 1, alice, "20")),
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.2, MemoryUsedMiB: -1, GPUs: 1, At: t0}},
		},
		"pod with memory but no utilisation series is absent": {
			body: util(gpuLine(MetricGPUUtil, 1, alice, "20")) + fb(gpuLine(MetricFBUsed, 0, bob, "100")),
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.2, MemoryUsedMiB: -1, GPUs: 1, At: t0}},
		},
		"NaN is unknown, not zero": {
			body: util(gpuLine(MetricGPUUtil, 0, alice, "NaN"), gpuLine(MetricGPUUtil, 1, bob, "30")),
			want: map[PodKey]Sample{bobKey: {Utilization: 0.3, MemoryUsedMiB: -1, GPUs: 1, At: t0}},
		},
		"out-of-range values are clamped": {
			body: util(gpuLine(MetricGPUUtil, 0, alice, "130")) + active(gpuLine(MetricEngineActive, 1, bob, "-0.1")),
			want: map[PodKey]Sample{
				aliceKey: {Utilization: 1, MemoryUsedMiB: -1, GPUs: 1, At: t0},
				bobKey:   {Utilization: 0, MemoryUsedMiB: -1, GPUs: 1, At: t0},
			},
		},
		"no GPU series at all": {
			body: "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 12\n",
			want: map[PodKey]Sample{},
		},
		"MIG instances count as GPUs": {
			body: active(
				`DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0",UUID="GPU-5f9c2a41-8e0b-7d4c-1f2a-93b6c0d1e7a8",device="nvidia0",modelName="NVIDIA A100-SXM4-40GB",GPU_I_PROFILE="1g.5gb",GPU_I_ID="7",Hostname="gpu-1",container="job",namespace="lab",pod="alice-train-1"} 0.5`+"\n",
				`DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0",UUID="GPU-5f9c2a41-8e0b-7d4c-1f2a-93b6c0d1e7a8",device="nvidia0",modelName="NVIDIA A100-SXM4-40GB",GPU_I_PROFILE="1g.5gb",GPU_I_ID="8",Hostname="gpu-1",container="job",namespace="lab",pod="alice-train-1"} 0.1`+"\n"),
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.3, MemoryUsedMiB: -1, GPUs: 2, At: t0}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, url := newExporter(t, tc.body)
			src, err := NewExporterSource(ExporterOptions{URLs: []string{url}, Clock: clocktesting.NewFakePassiveClock(t0)})
			if err != nil {
				t.Fatal(err)
			}
			got, err := src.Collect(context.Background(), time.Minute)
			if err != nil {
				t.Fatalf("Collect: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(approx)); diff != "" {
				t.Errorf("samples (-want +got):\n%s", diff)
			}
		})
	}
}

func approx(a, b float64) bool { d := a - b; return d < 1e-9 && d > -1e-9 }

func TestExporterSourceWindow(t *testing.T) {
	aliceKey := PodKey{Namespace: "lab", Name: "alice-train-1"}
	type step struct {
		advance time.Duration
		body    string // "" keeps the exporter's body; "down" breaks it
		want    map[PodKey]Sample
		wantErr bool
	}
	a := func(v string) string { return util(gpuLine(MetricGPUUtil, 0, alice, v)) }
	tests := map[string]struct {
		window time.Duration
		steps  []step
	}{
		"mean over the window, older scrapes drop out": {
			window: 3 * time.Minute,
			steps: []step{
				{body: a("90"), want: map[PodKey]Sample{aliceKey: {Utilization: 0.9, MemoryUsedMiB: -1, GPUs: 1, At: t0}}},
				{advance: time.Minute, body: a("30"), want: map[PodKey]Sample{aliceKey: {Utilization: 0.6, MemoryUsedMiB: -1, GPUs: 1, At: t0.Add(time.Minute)}}},
				{advance: time.Minute, body: a("0"), want: map[PodKey]Sample{aliceKey: {Utilization: 0.4, MemoryUsedMiB: -1, GPUs: 1, At: t0.Add(2 * time.Minute)}}},
				// t0+4m: the window [t0+1m, t0+4m] holds 30, 0, 0.
				{advance: 2 * time.Minute, body: a("0"), want: map[PodKey]Sample{aliceKey: {Utilization: 0.1, MemoryUsedMiB: -1, GPUs: 1, At: t0.Add(4 * time.Minute)}}},
			},
		},
		"pod missing for a scrape: recent history, then unknown after two windows": {
			window: time.Minute,
			steps: []step{
				{body: a("50"), want: map[PodKey]Sample{aliceKey: {Utilization: 0.5, MemoryUsedMiB: -1, GPUs: 1, At: t0}}},
				{advance: 30 * time.Second, body: util(gpuLine(MetricGPUUtil, 0, free, "50")), want: map[PodKey]Sample{aliceKey: {Utilization: 0.5, MemoryUsedMiB: -1, GPUs: 1, At: t0}}},
				{advance: 60 * time.Second, want: map[PodKey]Sample{aliceKey: {Utilization: 0.5, MemoryUsedMiB: -1, GPUs: 1, At: t0}}},
				{advance: 31 * time.Second, want: map[PodKey]Sample{}},
			},
		},
		"exporter down: error, then fresh data only after it is back": {
			window: time.Minute,
			steps: []step{
				{body: a("80"), want: map[PodKey]Sample{aliceKey: {Utilization: 0.8, MemoryUsedMiB: -1, GPUs: 1, At: t0}}},
				{advance: 10 * time.Second, body: "down", wantErr: true},
				{advance: 10 * time.Second, body: a("20"), want: map[PodKey]Sample{aliceKey: {Utilization: 0.5, MemoryUsedMiB: -1, GPUs: 1, At: t0.Add(20 * time.Second)}}},
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e, url := newExporter(t, "")
			clk := clocktesting.NewFakePassiveClock(t0)
			src, err := NewExporterSource(ExporterOptions{URLs: []string{url}, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				clk.SetTime(clk.Now().Add(s.advance))
				switch s.body {
				case "":
				case "down":
					e.mu.Lock()
					e.status = http.StatusServiceUnavailable
					e.mu.Unlock()
				default:
					e.set(s.body)
				}
				got, err := src.Collect(context.Background(), tc.window)
				if (err != nil) != s.wantErr {
					t.Fatalf("step %d: error %v, want error %v", i, err, s.wantErr)
				}
				if s.wantErr {
					if got != nil {
						t.Errorf("step %d: samples %v with an error", i, got)
					}
					continue
				}
				if diff := cmp.Diff(s.want, got, cmp.Comparer(approx)); diff != "" {
					t.Errorf("step %d: samples (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestExporterSourceHistoryBounded(t *testing.T) {
	_, url := newExporter(t, util(gpuLine(MetricGPUUtil, 0, alice, "10")))
	clk := clocktesting.NewFakePassiveClock(t0)
	src, err := NewExporterSource(ExporterOptions{URLs: []string{url}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 * maxHistory {
		clk.SetTime(clk.Now().Add(time.Second))
		if _, err := src.Collect(context.Background(), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(src.history[PodKey{Namespace: "lab", Name: "alice-train-1"}]); n != maxHistory {
		t.Errorf("history holds %d scrapes, want %d", n, maxHistory)
	}
}

func TestExporterSourcePods(t *testing.T) {
	aliceKey := PodKey{Namespace: "lab", Name: "alice-train-1"}
	// One server plays every exporter pod: the pod IP is 127.0.0.1 and the port is the server's.
	e := &exporter{status: http.StatusOK, body: util(
		gpuLine(MetricGPUUtil, 0, alice, "40"),
		// The exporter's own pod, as a Prometheus-style relabelling could leave it: not a job.
		gpuLine(MetricGPUUtil, 1, `,namespace="gpu-operator",pod="nvidia-dcgm-exporter-x7k2p"`, "0"))}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	portN := srv.Listener.Addr().(*net.TCPAddr).Port
	sel := labels.SelectorFromSet(labels.Set{"app.kubernetes.io/name": "dcgm-exporter"})
	pod := func(name, ip string, phase corev1.PodPhase) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "gpu-operator", Name: name},
			Status: corev1.PodStatus{Phase: phase, PodIP: ip}}
	}
	tests := map[string]struct {
		pods     []corev1.Pod
		listErr  error
		urls     []string
		want     map[PodKey]Sample
		wantErr  bool
		wantSeen bool // OnError called
	}{
		"running exporter pod scraped at its IP": {
			pods: []corev1.Pod{pod("nvidia-dcgm-exporter-x7k2p", "127.0.0.1", corev1.PodRunning), pod("nvidia-dcgm-exporter-pending", "", corev1.PodPending)},
			want: map[PodKey]Sample{aliceKey: {Utilization: 0.4, MemoryUsedMiB: -1, GPUs: 1, At: t0}},
		},
		"no exporter pod: error": {
			wantErr: true,
		},
		"lister fails but a static URL works: data, error reported": {
			listErr: errors.New("cache not synced"),
			urls:    []string{srv.URL + "/metrics"},
			// A static URL does not say which pod it is: the exporter's own series stay (harmless:
			// an exporter pod is never a job).
			want: map[PodKey]Sample{
				aliceKey: {Utilization: 0.4, MemoryUsedMiB: -1, GPUs: 1, At: t0},
				{Namespace: "gpu-operator", Name: "nvidia-dcgm-exporter-x7k2p"}: {Utilization: 0, MemoryUsedMiB: -1, GPUs: 1, At: t0},
			},
			wantSeen: true,
		},
		"one exporter down, the other read: its pods known, error reported": {
			pods:     []corev1.Pod{pod("nvidia-dcgm-exporter-x7k2p", "127.0.0.1", corev1.PodRunning)},
			urls:     []string{"http://127.0.0.1:1/metrics"},
			want:     map[PodKey]Sample{aliceKey: {Utilization: 0.4, MemoryUsedMiB: -1, GPUs: 1, At: t0}},
			wantSeen: true,
		},
		"every exporter down: error": {
			urls:    []string{"http://127.0.0.1:1/metrics"},
			wantErr: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var seen error
			lister := PodListerFunc(func(_ context.Context, s labels.Selector) ([]corev1.Pod, error) {
				if s.String() != sel.String() {
					t.Errorf("listed with selector %q, want %q", s, sel)
				}
				return tc.pods, tc.listErr
			})
			urls := tc.urls
			src, err := NewExporterSource(ExporterOptions{Selector: sel, Pods: lister, Port: portN, URLs: urls,
				Client: &http.Client{Timeout: 2 * time.Second}, Clock: clocktesting.NewFakePassiveClock(t0),
				OnError: func(err error) { seen = err }})
			if err != nil {
				t.Fatal(err)
			}
			got, err := src.Collect(context.Background(), time.Minute)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if (seen != nil) != tc.wantSeen {
				t.Errorf("OnError got %v, want called %v", seen, tc.wantSeen)
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

func TestExporterSourceOneExporterDownForgetsItsPods(t *testing.T) {
	// Two exporters; the second goes down: its pod becomes unknown at once, the other stays.
	_, url1 := newExporter(t, util(gpuLine(MetricGPUUtil, 0, alice, "40")))
	e2, url2 := newExporter(t, util(gpuLine(MetricGPUUtil, 0, bob, "0")))
	clk := clocktesting.NewFakePassiveClock(t0)
	var seen error
	src, err := NewExporterSource(ExporterOptions{URLs: []string{url1, url2}, Clock: clk, OnError: func(err error) { seen = err }})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := src.Collect(context.Background(), time.Minute); err != nil || len(got) != 2 {
		t.Fatalf("first scrape: %v, %v", got, err)
	}
	e2.mu.Lock()
	e2.status = http.StatusInternalServerError
	e2.mu.Unlock()
	clk.SetTime(t0.Add(10 * time.Second))
	got, err := src.Collect(context.Background(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := map[PodKey]Sample{{Namespace: "lab", Name: "alice-train-1"}: {Utilization: 0.4, MemoryUsedMiB: -1, GPUs: 1, At: t0.Add(10 * time.Second)}}
	if diff := cmp.Diff(want, got, cmp.Comparer(approx)); diff != "" {
		t.Errorf("samples (-want +got):\n%s", diff)
	}
	if seen == nil || !strings.Contains(seen.Error(), "500") {
		t.Errorf("OnError got %v, want the 500", seen)
	}
}

func TestNewExporterSourceErrors(t *testing.T) {
	tests := map[string]ExporterOptions{
		"nothing to scrape":         {},
		"selector without a lister": {Selector: labels.SelectorFromSet(labels.Set{"a": "b"})},
	}
	for name, opts := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := NewExporterSource(opts); err == nil {
				t.Error("no error")
			}
		})
	}
}
