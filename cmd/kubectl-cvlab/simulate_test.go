package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/epfl-cvlab/cvlab-queue/internal/simulate"
)

// TestSimulate runs `kubectl cvlab simulate` as a process, as an admin would: no cluster needed.
func TestSimulate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "kubectl-cvlab")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(stdin string, args ...string) (string, string, error) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "HOME="+dir) // no config file
		cmd.Stdin = strings.NewReader(stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	// Node n1 (2 GPUs): alice's two jobs run; bob's 1st GPU arrives after 30m. Under FirstGPU it
	// evicts alice's 2nd (run 29m59s, past --min-runtime) and starts when its pod stopped, 60s
	// later; under Never it waits for a1 to end.
	nodes := filepath.Join(dir, "nodes.txt")
	if err := os.WriteFile(nodes, []byte("# one small server\nn1 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	trace := filepath.Join(dir, "trace.csv")
	if err := os.WriteFile(trace, []byte("submit,user,gpus,runtime,name\n0s,alice,1,2h,a1\n1s,alice,1,2h,a2\n30m,bob,1,1h,b1\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("table, side by side", func(t *testing.T) {
		out, stderr, err := run("", "simulate", "--trace", trace, "--nodes", nodes, "--compare", "preemption=FirstGPU,Never")
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		for _, want := range []string{
			`(?m)^SETTING\s+preemption=FirstGPU\s+preemption=Never$`,
			`(?m)^-- 3 jobs, 2 GPUs, 2026-01-05 00:00 to 2026-01-05 0[34]:\d\d`,
			`(?m)^preemptions\s+1\s+0$`,
			`(?m)^wasted GPU-hours\s+0\.5\s+0\.0$`,
			`(?m)^  bob\s+1 h, 1m / 1m / 1m\s+1 h, 1h30m / 1h30m / 1h30m$`,
		} {
			if !regexp.MustCompile(want).MatchString(out) {
				t.Errorf("no line matching %s in:\n%s", want, out)
			}
		}
	})

	t.Run("json from standard input", func(t *testing.T) {
		jsonl := `{"submit": "0s", "user": "alice", "gpus": 1, "runtime": "2h", "name": "a1"}
{"submit": "1s", "user": "alice", "gpus": 1, "runtime": "2h", "name": "a2"}
{"submit": "30m", "user": "bob", "gpus": 1, "runtime": "1h", "name": "b1"}`
		out, stderr, err := run(jsonl, "simulate", "--trace", "-", "--nodes", nodes, "-o", "json", "--stop-delay", "1s")
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		var results []simulate.Result
		if err := json.Unmarshal([]byte(out), &results); err != nil {
			t.Fatalf("%v in:\n%s", err, out)
		}
		got := map[string]string{}
		start := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
		for _, j := range results[0].Jobs {
			got[j.Namespace+"/"+j.Name] = j.Start.Sub(start).String() + " " + j.Phase
		}
		want := map[string]string{"alice/a1": "0s Succeeded", "alice/a2": "1s Succeeded", "bob/b1": "30m1s Succeeded"}
		if diff := cmp.Diff(want, got); diff != "" || len(results) != 1 || results[0].Preemptions != 1 || results[0].Settings["preemption"] != "FirstGPU" {
			t.Errorf("starts (-want +got):\n%s\nresults: %d, preemptions %d, settings %v", diff, len(results), results[0].Preemptions, results[0].Settings)
		}
	})

	t.Run("every combination of two --compare flags", func(t *testing.T) {
		out, stderr, err := run("", "simulate", "--trace", trace, "--nodes", nodes, "-o", "json", "--max-head-wait", "1h",
			"--compare", "preemption=FirstGPU,Never", "--compare", "min-runtime=10m,1h")
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		var results []simulate.Result
		if err := json.Unmarshal([]byte(out), &results); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range results {
			got = append(got, fmt.Sprintf("%s: %s %s %s, %d preempted", r.Label, r.Settings["preemption"], r.Settings["min-runtime"],
				r.Settings["max-head-wait"], r.Preemptions))
		}
		want := []string{
			"preemption=FirstGPU min-runtime=10m: FirstGPU 10m0s 1h0m0s, 1 preempted",
			"preemption=FirstGPU min-runtime=1h: FirstGPU 1h0m0s 1h0m0s, 1 preempted",
			"preemption=Never min-runtime=10m: Never 10m0s 1h0m0s, 0 preempted",
			"preemption=Never min-runtime=1h: Never 1h0m0s 1h0m0s, 0 preempted",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("results (-want +got):\n%s", diff)
		}
	})

	t.Run("a generated lab, simulated", func(t *testing.T) {
		out, stderr, err := run("", "simulate", "--generate", "lab", "--days", "1", "--seed", "7")
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		again, _, _ := run("", "simulate", "--generate", "lab", "--days", "1", "--seed", "7")
		if out != again || !strings.HasPrefix(out, "submit,user,gpus,priority,runtime,") || strings.Count(out, "\n") < 300 {
			t.Fatalf("a day of the lab: %d lines, the same twice: %v; starts:\n%.300s", strings.Count(out, "\n"), out == again, out)
		}
		table, stderr, err := run(out, "simulate", "--trace", "-", "--min-runtime", "30m")
		if err != nil {
			t.Fatalf("%v: %s", err, stderr)
		}
		if !regexp.MustCompile(`(?m)^SETTING\s+as given$`).MatchString(table) || !strings.Contains(table, "30 GPUs") {
			t.Errorf("table:\n%s", table)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for args, want := range map[string]string{
			"simulate":                             "error: --trace is required",
			"simulate --trace nope.csv":            "error: open nope.csv: no such file or directory",
			"simulate --trace - --compare color=1": `error: --compare "color=1": want FLAG=V1,V2,...`,
			"simulate --generate sweep":            `error: --generate "sweep": the only generator is lab`,
			"simulate --trace - --idle-action=Nap": `error: --idle-action must be Reclaim, Warn or Suspend, not "Nap"`,
		} {
			_, stderr, err := run("submit,user,gpus,runtime\n0s,a,1,1h\n", strings.Fields(args)...)
			if err == nil || !strings.HasPrefix(stderr, want) {
				t.Errorf("%s: error %v, stderr %q, want %q", args, err, stderr, want)
			}
		}
	})
}
