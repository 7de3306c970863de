package chaos_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// manager is one run of the manager binary.
type manager struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	logPath string
	// done is closed when the process has exited; exit is its wait error then.
	done chan struct{}
	exit error
	// leader is closed when the process logs that it acquired the leader lease.
	leader     chan struct{}
	leaderOnce sync.Once
	leaderAt   time.Time
	// stopping is set once the test stops it on purpose.
	mu       sync.Mutex
	stopping bool
}

// startManager runs the manager binary against the env's control plane with the chaos defaults
// (no probes, no dashboard, no metrics, preemption at once) and the given extra flags.
func (e *env) startManager(name string, extra ...string) *manager {
	e.t.Helper()
	args := []string{
		"--kubeconfig=" + e.kubeconfig,
		"--health-probe-bind-address=0", "--dashboard-bind-address=0", "--metrics-bind-address=0",
		"--min-runtime=0s", "--preemption=FirstGPU", "--zap-time-encoding=rfc3339nano",
	}
	args = append(args, extra...)
	o := e.owner()
	o.managerRuns++
	m := &manager{
		name: name, done: make(chan struct{}), leader: make(chan struct{}),
		logPath: filepath.Join(e.logDir, fmt.Sprintf("%s-%03d.log", name, o.managerRuns)),
	}
	logFile, err := os.Create(m.logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	m.cmd = exec.Command(managerBinary(e.t), args...)
	// The manager dies with the test process, whatever happens to it.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	m.cmd.Stdout, m.cmd.Stderr = pw, pw
	if err := m.cmd.Start(); err != nil {
		e.t.Fatalf("starting the manager: %v", err)
	}
	m.started = time.Now()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if strings.Contains(strings.ToLower(line), "successfully acquired lease") {
				m.leaderOnce.Do(func() { m.leaderAt = time.Now(); close(m.leader) })
			}
		}
		_, _ = io.Copy(io.Discard, pr)
		logFile.Close()
	}()
	go func() {
		m.exit = m.cmd.Wait()
		pw.Close()
		close(m.done)
	}()
	o.managers = append(o.managers, m)
	return m
}

// kill sends SIGKILL and waits for the process to be gone.
func (m *manager) kill() time.Time {
	m.mu.Lock()
	m.stopping = true
	m.mu.Unlock()
	at := time.Now()
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
	return at
}

// term sends SIGTERM (a rolling update, a node drain) and waits up to timeout for the process to
// exit; it reports how long that took.
func (m *manager) term(timeout time.Duration) (time.Duration, error) {
	m.mu.Lock()
	m.stopping = true
	m.mu.Unlock()
	at := time.Now()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		return time.Since(at), nil
	case <-time.After(timeout):
		m.kill()
		return time.Since(at), fmt.Errorf("%s did not exit within %s of SIGTERM", m.name, timeout)
	}
}

// exited tells whether the process ended without the test stopping it.
func (m *manager) crashed() bool {
	select {
	case <-m.done:
		m.mu.Lock()
		defer m.mu.Unlock()
		return !m.stopping
	default:
		return false
	}
}

func (m *manager) running() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// logTail returns the end of the manager's log.
func (m *manager) logTail(lines int) string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// logContains tells whether the manager logged a line containing s.
func (m *manager) logContains(s string) bool {
	b, err := os.ReadFile(m.logPath)
	return err == nil && strings.Contains(string(b), s)
}

var _ = testing.T{}
