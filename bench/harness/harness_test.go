package harness

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The end-to-end benchmarks at a tiny size, so that they cannot rot: `go test ./...` (make test)
// runs each once. They check that the harness measures, not how fast anything is.

func tiny(t *testing.T, jobs int) Options {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: run through `make test`, which builds the control plane")
	}
	return Options{
		Mix: Mix{Jobs: jobs, Users: 8, Seed: 3}, Nodes: 2, GPUsPerNode: 8,
		RuntimeMin: 20 * time.Millisecond, RuntimeMax: 80 * time.Millisecond, Probes: 1, Timeout: 40 * time.Second,
		Dir: t.TempDir(), Logf: t.Logf,
	}
}

func checkDrain(t *testing.T, r *Result, jobs int) {
	t.Helper()
	if r.FirstAdmissionSeconds <= 0 || r.DrainAdmissions <= 0 || r.AdmissionsPerSecond <= 0 {
		t.Errorf("no admissions measured: first %.2fs, drain %d, %.1f/s", r.FirstAdmissionSeconds, r.DrainAdmissions, r.AdmissionsPerSecond)
	}
	if r.Requests.Writes <= 0 || r.CPUSeconds <= 0 || r.PeakRSSMiB <= 0 {
		t.Errorf("no cost measured: %.2f writes/admission, %.2f CPU s, %.0f MiB", r.Requests.Writes, r.CPUSeconds, r.PeakRSSMiB)
	}
	if r.DriverErrors > 0 {
		t.Errorf("the driver's writes failed %d times, the last: %s", r.DriverErrors, r.DriverLastError)
	}
	if _, err := WriteJSON(t.TempDir(), "r.json", r); err != nil {
		t.Error(err)
	}
	var b strings.Builder
	PrintTable(&b, []*Result{r})
	t.Log("\n" + b.String())
}

func TestCvlabTiny(t *testing.T) {
	t.Parallel()
	o := tiny(t, 60)
	o.ManagerPath = filepath.Join(t.TempDir(), "manager")
	build := exec.Command("go", "build", "-o", o.ManagerPath, "./cmd")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the manager: %v\n%s", err, out)
	}
	o.ManagerArgs = []string{"--status-qps=200"}
	r, err := RunCvlab(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkDrain(t, r, 60)
	kinds := map[string]bool{}
	for _, p := range r.Probes {
		kinds[p.Kind] = true
		if p.AllSeconds < 0 || p.Waiting == 0 {
			t.Errorf("probe %s: positions not right in time (%+v)", p.Kind, p)
		}
	}
	if len(kinds) != 3 {
		t.Errorf("probes run: %v, want start, arrival and finish", kinds)
	}
	if r.Requests.PodWrites < 0.99 {
		t.Errorf("%.2f pod writes per admission, want at least the pod itself", r.Requests.PodWrites)
	}
}

func TestKueueTiny(t *testing.T) {
	t.Parallel()
	o := tiny(t, 40)
	o.KueuePath = filepath.Join(repoRoot(), "bin", "kueue", "v0.17.0", "kueue")
	if _, err := os.Stat(o.KueuePath); err != nil {
		t.Skipf("Kueue's binary is absent (%s): `make kueue` or `make bench-kueue` builds it", o.KueuePath)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is absent: Kueue's metrics certificate cannot be mounted")
	}
	list := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kueue")
	list.Dir = filepath.Join(repoRoot(), "hack", "kueue")
	out, err := list.Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Skipf("Kueue's module is not in the module cache (%v): `make kueue` fetches it", err)
	}
	o.KueueCRDs = filepath.Join(strings.TrimSpace(string(out)), "config", "components", "crd", "bases")
	o.KueueQPS = 1000
	r, err := RunKueue(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkDrain(t, r, 40)
}

func TestRequestKey(t *testing.T) {
	for path, want := range map[string]string{
		"GET /api/v1/namespaces/a/pods/p":                                    "GET|pods|",
		"GET /api/v1/namespaces/a/pods":                                      "LIST|pods|",
		"GET /api/v1/pods?watch=true":                                        "WATCH|pods|",
		"POST /api/v1/namespaces/a/pods/p/binding":                           "POST|pods|binding",
		"PATCH /apis/cvlab.epfl.ch/v1alpha1/namespaces/a/cvlabjobs/j/status": "PATCH|cvlabjobs|status",
		"POST /apis/batch/v1/namespaces/a/jobs":                              "POST|jobs|",
		"PUT /api/v1/nodes/n/status":                                         "PUT|nodes|status",
	} {
		method, rest, _ := strings.Cut(path, " ")
		u, _ := url.Parse("https://127.0.0.1" + rest)
		if got := requestKey(&http.Request{Method: method, URL: u}); got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
}

func TestFreeToNext(t *testing.T) {
	tl := &Timeline{}
	t0 := time.Now()
	tl.created(t0, 1) // before matching: no sample
	tl.startMatching()
	tl.freed(t0, 2)
	tl.freed(t0.Add(time.Second), 2)
	tl.created(t0.Add(1500*time.Millisecond), 3) // needs the 3rd freed GPU, freed at 1 s
	tl.created(t0.Add(2*time.Second), 2)         // only one GPU left: no sample
	if len(tl.FreeToNext) != 1 || tl.FreeToNext[0] != 500*time.Millisecond {
		t.Errorf("FreeToNext = %v, want [500ms]", tl.FreeToNext)
	}
}
