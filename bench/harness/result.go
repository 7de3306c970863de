package harness

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Options configure one run.
type Options struct {
	Mix
	Nodes, GPUsPerNode int
	// RuntimeMin and RuntimeMax bound the random runtime of a pod once the queue drains.
	RuntimeMin, RuntimeMax time.Duration
	// Probes is how many times each position probe (a job arriving, a job finishing) runs.
	Probes int
	// Timeout bounds each phase.
	Timeout time.Duration
	// Dir holds the run's files (kubeconfig, logs).
	Dir string
	// ManagerPath is the cvlab-queue manager binary; ManagerArgs are extra flags, ManagerEnv
	// extra environment variables (NAME=value, such as GOMEMLIMIT), recorded with the flags.
	ManagerPath string
	ManagerArgs []string
	ManagerEnv  []string
	// KueuePath is Kueue's manager binary, KueueCRDs its CRD directory, KueueQPS its client QPS
	// (burst twice that).
	KueuePath, KueueCRDs string
	KueueQPS             int
	// Logf reports progress; may be nil.
	Logf func(format string, args ...any)
}

func (o *Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

// Probe is one position probe: the time until the waiting jobs' queuePosition and rank are all
// what internal/queue says, after one change.
type Probe struct {
	// Kind is "start" (from the manager's start, all jobs new), "arrival" or "finish".
	Kind string `json:"kind"`
	// Waiting is the number of waiting jobs whose position and rank are checked.
	Waiting int `json:"waiting"`
	// Changed is how many of them had a different position or rank before the change.
	Changed int `json:"changed"`
	// First100Seconds: until the first 100 positions are right; AllSeconds: all of them. -1 if
	// not within the timeout.
	First100Seconds float64 `json:"first100Seconds"`
	AllSeconds      float64 `json:"allSeconds"`
}

// Requests are a system's API requests during the drain, per admission.
type Requests struct {
	// ByMethod is the system's own client-go count (rest_client_requests_total{method}).
	ByMethod map[string]float64 `json:"byMethod"`
	// ByResource is the apiserver's count (apiserver_request_total{verb,resource,subresource})
	// less the driver's own requests.
	ByResource map[string]float64 `json:"byResource"`
	// Per admission: pod writes, job status writes (Kueue: workloads and their status), event
	// writes, other writes (Kueue: Job updates, queue status), reads (GET, LIST, WATCH).
	PodWrites    float64 `json:"podWritesPerAdmission"`
	StatusWrites float64 `json:"statusWritesPerAdmission"`
	EventWrites  float64 `json:"eventWritesPerAdmission"`
	OtherWrites  float64 `json:"otherWritesPerAdmission"`
	Reads        float64 `json:"readsPerAdmission"`
	// Writes is every write per admission.
	Writes float64 `json:"writesPerAdmission"`
	// PositionWrites are the status writes that only moved a waiting job's place in the queue,
	// per admission, from the manager's own cvlab_status_writes_total{kind="position"} (cvlab-queue
	// only); WritesBesidesPositions is Writes less them.
	PositionWrites         float64 `json:"positionWritesPerAdmission"`
	WritesBesidesPositions float64 `json:"writesBesidesPositionsPerAdmission"`
}

// Result is one run's measurements.
type Result struct {
	System      string    `json:"system"`
	Jobs        int       `json:"jobs"`
	Users       int       `json:"users"`
	Nodes       int       `json:"nodes"`
	GPUsPerNode int       `json:"gpusPerNode"`
	Flags       []string  `json:"flags"`
	Machine     Machine   `json:"machine"`
	Started     time.Time `json:"started"`

	SubmitSeconds float64 `json:"submitSeconds"`
	// FirstAdmissionSeconds is from the system's process start to its first pod, with every job
	// waiting.
	FirstAdmissionSeconds float64 `json:"firstAdmissionSeconds"`
	// Probes are the position probes (cvlab only: Kueue does not publish positions on objects).
	Probes []Probe `json:"probes,omitempty"`

	// The drain: every pod runs RuntimeMin..RuntimeMax, the queue stays saturated until its last
	// admission.
	DrainAdmissions     int     `json:"drainAdmissions"`
	DrainSeconds        float64 `json:"drainSeconds"`
	AdmissionsPerSecond float64 `json:"admissionsPerSecond"`
	// FreeToNext: from the moment the GPUs a new pod needs were freed (pod Succeeded) to its
	// creation, first freed first taken, in milliseconds.
	FreeToNextSamples int     `json:"freeToNextSamples"`
	FreeToNextP50ms   float64 `json:"freeToNextP50ms"`
	FreeToNextP99ms   float64 `json:"freeToNextP99ms"`
	FreeToNextMaxms   float64 `json:"freeToNextMaxms"`

	Requests Requests `json:"requests"`
	// APIServerWritesPerSecond is every write the apiserver served during the drain (the driver's
	// included), per second.
	APIServerWritesPerSecond float64 `json:"apiserverWritesPerSecond"`
	// SystemWritesPerSecond is the system's own writes per second during the drain.
	SystemWritesPerSecond float64 `json:"systemWritesPerSecond"`

	CPUSeconds      float64 `json:"cpuSeconds"`
	CPUSecondsDrain float64 `json:"cpuSecondsDrain"`
	// CPUMsPerAdmission is the system's CPU during the drain per admission.
	CPUMsPerAdmission   float64 `json:"cpuMsPerAdmission"`
	PeakRSSMiB          float64 `json:"peakRSSMiB"`
	APIServerCPUSeconds float64 `json:"apiserverCPUSecondsDrain"`
	// Decisions and DecisionMeanMs: the manager's decisions during the drain and their mean
	// duration (observe, decide, act, record), from cvlab_decision_duration_seconds.
	Decisions      int     `json:"decisionsDrain,omitempty"`
	DecisionMeanMs float64 `json:"decisionMeanMsDrain,omitempty"`

	DriverErrors    int64    `json:"driverErrors"`
	DriverLastError string   `json:"driverLastError,omitempty"`
	Notes           []string `json:"notes,omitempty"`
}

// Machine describes where a run ran.
type Machine struct {
	NProc      int     `json:"nproc"`
	CPUModel   string  `json:"cpuModel"`
	LoadStart  string  `json:"loadAvgStart"`
	LoadEnd    string  `json:"loadAvgEnd"`
	GoVersion  string  `json:"goVersion"`
	MemTotalGB float64 `json:"memTotalGiB"`
}

// ReadMachine reads nproc, the CPU model and the load average.
func ReadMachine() Machine {
	m := Machine{NProc: runtime.NumCPU(), LoadStart: LoadAvg(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			m.MemTotalGB = math.Round(kb/1024/1024*10) / 10
		}
	}
	return m
}

// LoadAvg is /proc/loadavg's 1, 5 and 15 minute averages.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// percentile of sorted durations, in milliseconds.
func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return float64(s[max(min(i, len(s)-1), 0)]) / float64(time.Millisecond)
}

// WriteJSON writes results to dir/name.
func WriteJSON(dir, name string, v any) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, append(b, '\n'), 0o644)
}

func fmtSec(s float64) string {
	if s < 0 {
		return "timeout"
	}
	return fmt.Sprintf("%.2f", s)
}

// worstProbe is the largest time of a kind of probe (-1 wins: a timeout).
func worstProbe(ps []Probe, kind string, all bool) (float64, bool) {
	worst, found := 0.0, false
	for _, p := range ps {
		if p.Kind != kind {
			continue
		}
		v := p.First100Seconds
		if all {
			v = p.AllSeconds
		}
		if !found || v < 0 || (worst >= 0 && v > worst) {
			worst = v
		}
		found = true
	}
	return worst, found
}

// PrintTable prints results side by side, one column per run.
func PrintTable(w io.Writer, rs []*Result) {
	if len(rs) == 0 {
		return
	}
	row := func(name string, f func(r *Result) string) {
		fmt.Fprintf(w, "%-44s", name)
		for _, r := range rs {
			fmt.Fprintf(w, " %16s", f(r))
		}
		fmt.Fprintln(w)
	}
	row("system / jobs", func(r *Result) string { return fmt.Sprintf("%s %d", r.System, r.Jobs) })
	row("submit all jobs (s)", func(r *Result) string { return fmt.Sprintf("%.1f", r.SubmitSeconds) })
	row("first admission after start (s)", func(r *Result) string { return fmtSec(r.FirstAdmissionSeconds) })
	row("admissions/s while saturated", func(r *Result) string { return fmt.Sprintf("%.1f", r.AdmissionsPerSecond) })
	row("free -> next pod p50 (ms)", func(r *Result) string { return fmt.Sprintf("%.0f", r.FreeToNextP50ms) })
	row("free -> next pod p99 (ms)", func(r *Result) string { return fmt.Sprintf("%.0f", r.FreeToNextP99ms) })
	for _, kind := range []string{"start", "arrival", "finish"} {
		for _, all := range []bool{false, true} {
			label := "first 100"
			if all {
				label = "all"
			}
			row(fmt.Sprintf("positions right after %s, %s (s)", kind, label), func(r *Result) string {
				v, ok := worstProbe(r.Probes, kind, all)
				if !ok {
					return "-"
				}
				return fmtSec(v)
			})
		}
	}
	row("pod writes / admission", func(r *Result) string { return fmt.Sprintf("%.2f", r.Requests.PodWrites) })
	row("status writes / admission", func(r *Result) string { return fmt.Sprintf("%.2f", r.Requests.StatusWrites) })
	row("event writes / admission", func(r *Result) string { return fmt.Sprintf("%.2f", r.Requests.EventWrites) })
	row("other writes / admission", func(r *Result) string { return fmt.Sprintf("%.2f", r.Requests.OtherWrites) })
	row("of the status writes: position updates / admission", func(r *Result) string { return fmt.Sprintf("%.2f", r.Requests.PositionWrites) })
	row("all writes / admission", func(r *Result) string { return fmt.Sprintf("%.2f", r.Requests.Writes) })
	row("writes besides position updates / admission", func(r *Result) string { return fmt.Sprintf("%.2f", r.Requests.WritesBesidesPositions) })
	row("reads / admission", func(r *Result) string { return fmt.Sprintf("%.2f", r.Requests.Reads) })
	row("system writes/s (drain)", func(r *Result) string { return fmt.Sprintf("%.0f", r.SystemWritesPerSecond) })
	row("apiserver writes/s, all clients (drain)", func(r *Result) string { return fmt.Sprintf("%.0f", r.APIServerWritesPerSecond) })
	row("CPU s (whole run)", func(r *Result) string { return fmt.Sprintf("%.1f", r.CPUSeconds) })
	row("CPU ms / admission (drain)", func(r *Result) string { return fmt.Sprintf("%.1f", r.CPUMsPerAdmission) })
	row("peak RSS (MiB)", func(r *Result) string { return fmt.Sprintf("%.0f", r.PeakRSSMiB) })
	row("apiserver CPU s (drain)", func(r *Result) string { return fmt.Sprintf("%.1f", r.APIServerCPUSeconds) })
	row("decisions in drain / mean ms", func(r *Result) string {
		if r.Decisions == 0 {
			return "-"
		}
		return fmt.Sprintf("%d / %.0f", r.Decisions, r.DecisionMeanMs)
	})
	row("load average at start", func(r *Result) string { return r.Machine.LoadStart })
}

// Compare prints the results in dir for the given sizes (comma-separated) side by side: cvlab-queue
// first, then Kueue, with the ratios of the main figures (cvlab-queue's over each Kueue run's).
func Compare(w io.Writer, dir, sizes string) error {
	var rs []*Result
	for _, n := range strings.Split(sizes, ",") {
		n = strings.TrimSpace(n)
		files, _ := filepath.Glob(filepath.Join(dir, "*-"+n+"*.json"))
		slices.Sort(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			var r Result
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			if strconv.Itoa(r.Jobs) != n {
				continue
			}
			if len(r.Flags) > 0 && r.System == "kueue" {
				r.System = "kueue/" + strings.TrimPrefix(r.Flags[0], "clientConnection.")
			}
			rs = append(rs, &r)
		}
	}
	slices.SortStableFunc(rs, func(a, b *Result) int { return strings.Compare(a.System, b.System) })
	if len(rs) == 0 {
		return fmt.Errorf("no results for %s in %s", sizes, dir)
	}
	PrintTable(w, rs)
	for _, c := range rs {
		if c.System != "cvlab-queue" {
			continue
		}
		for _, k := range rs {
			if !strings.HasPrefix(k.System, "kueue") || k.Jobs != c.Jobs {
				continue
			}
			ratio := func(a, b float64) string {
				if b == 0 {
					return "-"
				}
				return fmt.Sprintf("%.1fx", a/b)
			}
			fmt.Fprintf(w, "\ncvlab-queue / %s at %d jobs: admissions/s %s, p99 free->next %s, writes/admission %s, CPU ms/admission %s, peak RSS %s\n",
				k.System, c.Jobs, ratio(c.AdmissionsPerSecond, k.AdmissionsPerSecond), ratio(c.FreeToNextP99ms, k.FreeToNextP99ms),
				ratio(c.Requests.Writes, k.Requests.Writes), ratio(c.CPUMsPerAdmission, k.CPUMsPerAdmission), ratio(c.PeakRSSMiB, k.PeakRSSMiB))
		}
	}
	return nil
}
