//go:build prometheus

// This test runs a real Prometheus server (built from the Go module proxy by
// hack/build-prometheus.sh) scraping an httptest dcgm-exporter, and reads it through
// PrometheusSource. It is behind the `prometheus` build tag because building Prometheus takes
// minutes: run it with `make test-prometheus`, which builds the binary and sets CVLAB_PROMETHEUS.
// Without the binary it fails; it never skips.

package utilization

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

func TestPrometheusSourceRealPrometheus(t *testing.T) {
	bin := os.Getenv("CVLAB_PROMETHEUS")
	if bin == "" {
		t.Fatal("CVLAB_PROMETHEUS is not set: run `make test-prometheus` (it builds Prometheus with hack/build-prometheus.sh)")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("Prometheus binary: %v", err)
	}

	// The exporter: alice's pod with GPU_UTIL only, bob's with the profiling metric too (it wins).
	e := &exporter{status: 200}
	withAlice := dcgmHeader +
		util(gpuLine(MetricGPUUtil, 0, alice, "80"), gpuLine(MetricGPUUtil, 1, bob, "100"), gpuLine(MetricGPUUtil, 2, free, "0")) +
		active(gpuLine(MetricEngineActive, 1, bob, "0.1")) +
		fb(gpuLine(MetricFBUsed, 0, alice, "30112"), gpuLine(MetricFBUsed, 1, bob, "512"))
	withoutAlice := util(gpuLine(MetricGPUUtil, 1, bob, "100"), gpuLine(MetricGPUUtil, 2, free, "0")) +
		active(gpuLine(MetricEngineActive, 1, bob, "0.1")) + fb(gpuLine(MetricFBUsed, 1, bob, "512"))
	e.set(withAlice)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: nvidia-dcgm-exporter
    static_configs:
      - targets: [%q]
        labels: {namespace: gpu-operator, pod: nvidia-dcgm-exporter-x7k2p}
`, strings.TrimPrefix(srv.URL, "http://"))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus output:\n%s", logs.String())
		}
	})

	src, err := NewPrometheusSource(PrometheusOptions{URL: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	aliceKey := PodKey{Namespace: "lab", Name: "alice-train-1"}
	bobKey := PodKey{Namespace: "lab", Name: "bob-jupyter"}
	// The real Prometheus runs on the real clock: poll its answers (an external process), bounded.
	await := func(what string, ok func(map[PodKey]Sample) bool, window time.Duration) map[PodKey]Sample {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		var got map[PodKey]Sample
		var err error
		for time.Now().Before(deadline) {
			got, err = src.Collect(context.Background(), window)
			if err == nil && ok(got) {
				return got
			}
			<-tick.C
		}
		t.Fatalf("%s: last answer %v, error %v", what, got, err)
		return nil
	}
	got := await("both pods measured", func(m map[PodKey]Sample) bool {
		_, a := m[aliceKey]
		_, b := m[bobKey]
		return a && b
	}, time.Minute)
	if a := got[aliceKey]; !approx(a.Utilization, 0.8) || a.MemoryUsedMiB != 30112 || a.GPUs != 1 {
		t.Errorf("alice: %+v, want utilisation 0.8 (GPU_UTIL/100), 30112 MiB, 1 GPU", a)
	}
	if b := got[bobKey]; !approx(b.Utilization, 0.1) || b.MemoryUsedMiB != 512 || b.GPUs != 1 {
		t.Errorf("bob: %+v, want utilisation 0.1 (the profiling metric), 512 MiB, 1 GPU", b)
	}
	// The GPU no one holds carries only the target's pod label: it is attributed to the exporter
	// pod, which is never a job (see PrometheusSource).
	if len(got) != 3 {
		t.Errorf("got %d pods, want alice, bob and the exporter pod: %v", len(got), got)
	}

	// Alice's series vanish: with a short window she becomes unknown, bob stays.
	e.set(withoutAlice)
	await("alice absent once her series are older than the window", func(m map[PodKey]Sample) bool {
		_, a := m[aliceKey]
		_, b := m[bobKey]
		return !a && b
	}, 3*time.Second)
}
