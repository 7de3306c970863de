package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The manager is run as a process, the way an operator starts it.
func TestManagerFlags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "manager")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cases := map[string]struct {
		args     []string
		wantExit int
		wantOut  []string
	}{
		"help lists every flag": {
			args: []string{"--help"}, wantExit: 0,
			wantOut: []string{"-gpu-capacity", "-max-head-wait", "-kubeconfig", "-metrics-bind-address", "-health-probe-bind-address", "-leader-elect", "-kube-api-qps", "-kube-api-burst", "-gpu-node-selector", "-unschedulable-timeout", "-preemption", "-min-runtime", "-notify-webhook", "-smtp-url", "-slack-webhook-url", "-mattermost-webhook-url", "-notify", "-dashboard-bind-address"},
		},
		"a bad preemption policy is refused": {
			args: []string{"--preemption=Sometimes", "--kubeconfig=/nonexistent"}, wantExit: 1,
			wantOut: []string{"--preemption must be FirstGPU, Rank or Never"},
		},
		"a bad node selector is refused": {
			args: []string{"--gpu-node-selector=a b", "--kubeconfig=/nonexistent"}, wantExit: 1,
			wantOut: []string{"--gpu-node-selector"},
		},
		"an unreadable kubeconfig is reported": {
			args: []string{"--gpu-capacity=4", "--kubeconfig=/nonexistent/kubeconfig"}, wantExit: 1,
			wantOut: []string{"loading kubeconfig"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bin, tc.args...)
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState == nil {
				t.Fatalf("did not run: %v", err)
			}
			if got := cmd.ProcessState.ExitCode(); got != tc.wantExit {
				t.Errorf("exit code = %d, want %d\n%s", got, tc.wantExit, out)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
