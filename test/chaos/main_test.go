// Package chaos_test checks the queue's invariants under faults: the manager killed with SIGKILL
// at random moments (mid-admission, mid-preemption), two replicas with leader election and the
// leader killed, kube-apiserver and etcd restarted under load, pods deleted and nodes lost, a job
// stored invalid by an older CRD, an exhausted API budget and a webhook that never answers.
//
// The manager runs as a real process (the binary of ./cmd) against a real kube-apiserver and etcd
// (KUBEBUILDER_ASSETS, as for the integration suites); the test process plays the scheduler and
// the kubelet (kubelet_test.go) and checks the invariants continuously from the API server's
// state (checker_test.go). `go test ./test/chaos/` runs a CI-sized version; `make test-chaos`
// (hack/chaos.mk) the long one. Environment:
//
//	CHAOS_KILLS   manager kills in TestCrashRecovery (default 20; make test-chaos: 100)
//	CHAOS_JOBS    jobs submitted in TestCrashRecovery (default 100; make test-chaos: 500)
//	CHAOS_HA_JOBS, CHAOS_API_JOBS, CHAOS_BUDGET_JOBS, CHAOS_WEBHOOK_JOBS: jobs of the other tests
//	CHAOS_OUTAGE_SECONDS how long kube-apiserver and etcd stay down (default 5)
//	CHAOS_LEASE   lease settings of TestLeaderFailover: duration,renew-deadline,retry-period
//	CHAOS_SEED    seed of the random kill schedule and load (default: the time)
//	CHAOS_REPORT  file to which each test appends its figures as JSON lines
//	CHAOS_LOGS    directory that keeps the manager logs (default: a temp dir, removed on success)
//	CHAOS_MANAGER a prebuilt manager binary (default: go build ./cmd once per run)
package chaos_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

var (
	buildOnce  sync.Once
	managerBin string
	buildErr   error
	binDir     string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// requireAssets skips the test when the control plane binaries are not available.
func requireAssets(t *testing.T) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: run `make test` or `make test-chaos`, which build kube-apiserver and etcd into bin/k8s/ and set it")
	}
}

// manager returns the manager binary, built once per run from ./cmd.
func managerBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if b := os.Getenv("CHAOS_MANAGER"); b != "" {
			managerBin = b
			return
		}
		binDir, buildErr = os.MkdirTemp("", "cvlab-chaos-bin-")
		if buildErr != nil {
			return
		}
		managerBin = filepath.Join(binDir, "manager")
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", managerBin, "./cmd")
		cmd.Dir = framework.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd: %v\n%s", err, out)
			return
		}
		fmt.Fprintf(os.Stderr, "chaos: built the manager in %s\n", time.Since(start).Round(100*time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return managerBin
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func seed(t *testing.T) int64 {
	s := time.Now().UnixNano()
	if v, err := strconv.ParseInt(os.Getenv("CHAOS_SEED"), 10, 64); err == nil {
		s = v
	}
	t.Logf("CHAOS_SEED=%d", s)
	return s
}

var reportMu sync.Mutex

// report logs a test's figures and appends them to $CHAOS_REPORT as one JSON line.
func report(t *testing.T, figures map[string]any) {
	t.Helper()
	figures["test"] = t.Name()
	figures["time"] = time.Now().UTC().Format(time.RFC3339)
	b, _ := json.Marshal(figures)
	t.Logf("figures: %s", b)
	path := os.Getenv("CHAOS_REPORT")
	if path == "" {
		return
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("CHAOS_REPORT: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\n", b)
}

func seconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}
