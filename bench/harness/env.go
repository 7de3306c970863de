// Package harness is the end-to-end benchmark of the queue: a real control plane (kube-apiserver and
// etcd, started with controller-runtime's envtest), the system under test as its own process (the
// cvlab-queue manager, or Kueue), and a load driver that submits jobs and plays the scheduler and
// the kubelet of fake GPU nodes, so that the queue drains. See bench/README.md.
package harness

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"
)

// repoRoot is the repository's top directory.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var logOnce sync.Once

// ControlPlane is kube-apiserver and etcd from KUBEBUILDER_ASSETS, with CRDs installed.
type ControlPlane struct {
	env *envtest.Environment
	// Config is the admin's (system:masters: exempt from API priority and fairness).
	Config *rest.Config
	// Kubeconfig is a file for processes, with the same admin identity.
	Kubeconfig string
	// APIServerPID is kube-apiserver's process, for its CPU time.
	APIServerPID int
}

// StartControlPlane starts a control plane and installs the CRDs of crdDirs; dir holds its files.
func StartControlPlane(dir string, crdDirs ...string) (*ControlPlane, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS is not set: run `make envtest` and point it at bin/k8s/<version>")
	}
	logOnce.Do(func() { crlog.SetLogger(logr.Discard()) }) // the driver's informers log nothing worth reading
	env := &envtest.Environment{CRDDirectoryPaths: crdDirs, ErrorIfCRDPathMissing: true}
	api := env.ControlPlane.GetAPIServer()
	// Room for the benchmark's request rates (everyone here is exempt from priority and fairness
	// anyway, as system:masters).
	api.Configure().Set("max-requests-inflight", "1000").Set("max-mutating-requests-inflight", "500")
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting kube-apiserver and etcd: %w", err)
	}
	cp := &ControlPlane{env: env}
	cfg.QPS, cfg.Burst = 5000, 10000
	cp.Config = cfg
	user, err := env.AddUser(envtest.User{Name: "bench-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(cp.Kubeconfig, kc, 0o600); err != nil {
		_ = env.Stop()
		return nil, err
	}
	cp.APIServerPID = findPID("kube-apiserver", api.SecureServing.Port)
	return cp, nil
}

// Stop stops the control plane.
func (cp *ControlPlane) Stop() error { return cp.env.Stop() }

// findPID finds the kube-apiserver serving on port among this process's children.
func findPID(name, port string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != name {
			continue
		}
		for _, a := range args {
			if a == "--secure-port="+port {
				return pid
			}
		}
	}
	return 0
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Process is the system under test, run as its own process.
type Process struct {
	cmd     *exec.Cmd
	Started time.Time
	done    chan struct{}
	err     error
	log     *os.File
}

// StartProcess runs path with args, its output into logPath.
func StartProcess(path string, args []string, logPath string, extraEnv ...string) (*Process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), extraEnv...)
	// Its own process group, and killed if the harness dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Process{cmd: cmd, done: make(chan struct{}), log: f}
	p.Started = time.Now()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited tells whether the process is gone, and why.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop ends the process (SIGTERM, then SIGKILL after 10 s) and waits for it.
func (p *Process) Stop() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	p.log.Close()
}

// ProcStats are a process's CPU time and memory, from /proc.
type ProcStats struct {
	CPUSeconds float64
	RSSMiB     float64 // VmRSS now
	PeakRSSMiB float64 // VmHWM: the peak
}

// ReadProcStats reads /proc/<pid>/stat (utime+stime) and /proc/<pid>/status (VmRSS, VmHWM).
func ReadProcStats(pid int) (ProcStats, error) {
	var s ProcStats
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name may hold spaces: fields start after its closing parenthesis.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	s.CPUSeconds = (utime + stime) / 100 // USER_HZ is 100 on Linux
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch k {
		case "VmRSS":
			s.RSSMiB = kb / 1024
		case "VmHWM":
			s.PeakRSSMiB = kb / 1024
		}
	}
	return s, nil
}

// Scraper reads a Prometheus endpoint.
type Scraper struct {
	URL    string
	Token  string // bearer token, for Kueue's authenticated HTTPS endpoint
	client *http.Client
}

// NewScraper makes a scraper; HTTPS endpoints with self-signed certificates are accepted.
func NewScraper(url, token string) *Scraper {
	return &Scraper{URL: url, Token: token, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback, self-signed
	}}}
}

// Scrape returns the metric families.
func (s *Scraper) Scrape(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return nil, err
	}
	if s.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.Token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s: %s", s.URL, resp.Status, b)
	}
	return ParseMetrics(resp.Body)
}

// ParseMetrics parses the Prometheus text format.
func ParseMetrics(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// Counts sums a counter family by the values of the given labels, joined by "|".
func Counts(fams map[string]*dto.MetricFamily, name string, labels ...string) map[string]float64 {
	out := map[string]float64{}
	f := fams[name]
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		var key []string
		for _, l := range labels {
			v := ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == l {
					v = lp.GetValue()
				}
			}
			key = append(key, v)
		}
		val := m.GetCounter().GetValue()
		if m.GetCounter() == nil {
			val = m.GetGauge().GetValue()
		}
		out[strings.Join(key, "|")] += val
	}
	return out
}

// Sub is a - b, key by key.
func Sub(a, b map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range a {
		if d := v - b[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// Sampler records a process's peak RSS over time (VmHWM covers the peak, the samples show when).
type Sampler struct {
	once sync.Once
	mu   sync.Mutex
	peak float64
	stop chan struct{}
	done chan struct{}
}

// SampleRSS polls pid's RSS every interval until Stop.
func SampleRSS(pid int, interval time.Duration) *Sampler {
	s := &Sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if st, err := ReadProcStats(pid); err == nil {
				s.mu.Lock()
				s.peak = max(s.peak, st.RSSMiB)
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the highest RSS seen.
func (s *Sampler) Stop() float64 {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}
