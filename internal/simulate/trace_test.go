package simulate

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestReadTrace: CSV and JSON lines give the same jobs; a duration is an offset from the start;
// WriteTrace writes what ReadTrace reads back.
func TestReadTrace(t *testing.T) {
	start := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)
	want := []TraceJob{
		{Name: "job-1", User: "alice", GPUs: 2, Submit: start.Add(36*time.Hour + 15*time.Minute), Runtime: 3 * time.Hour, Timeout: 4 * time.Hour},
		{Name: "nb", User: "bob", GPUs: 1, Priority: -1, Submit: time.Date(2026, 1, 7, 9, 30, 0, 0, time.UTC), Runtime: 45 * time.Minute,
			Utilization: "40,40,0", Interactive: true, Grace: 30 * time.Second, Cancel: 2 * time.Hour, Checkpoint: 10 * time.Minute},
	}
	csv := `submit,user,gpus,priority,runtime,timeout,utilization,name,interactive,grace,cancel,checkpoint
# a comment
2026-01-07T09:30:00Z,bob,1,-1,45m,,"40,40,0",nb,true,30s,2h,10m
36h15m,alice,2,,3h,4h,,,,,,
`
	jsonl := `{"submit": "36h15m", "user": "alice", "gpus": 2, "runtime": "3h", "timeout": "4h"}

{"submit": "2026-01-07T09:30:00Z", "user": "bob", "gpus": 1, "priority": -1, "runtime": "45m", "utilization": "40,40,0", "name": "nb", "interactive": true, "grace": "30s", "cancel": "2h", "checkpoint": "10m"}
`
	for name, in := range map[string]string{"csv": csv, "json lines": jsonl} {
		got, err := ReadTrace(strings.NewReader(in), start)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "csv" { // its first line is bob's: the name of alice's job is its line's
			got[0].Name = "job-1"
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	var b bytes.Buffer
	if err := WriteTrace(&b, want); err != nil {
		t.Fatal(err)
	}
	back, err := ReadTrace(&b, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, back); diff != "" {
		t.Errorf("written and read back (-want +got):\n%s", diff)
	}
}

func TestReadTraceErrors(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"unknown column":      {"submit,user,gpus,runtime,color\n0s,a,1,1h,red\n", `trace header: unknown column "color"`},
		"no user":             {"submit,user,gpus,runtime\n0s,,1,1h\n", "trace job 1: no user"},
		"bad submit":          {"submit,user,gpus,runtime\nyesterday,a,1,1h\n", `trace job 1: submit "yesterday" is neither`},
		"bad gpus":            {"submit,user,gpus,runtime\n0s,a,-1,1h\n", `trace job 1: gpus "-1" is not a number of GPUs`},
		"never ends":          {"submit,user,gpus\n0s,a,1\n", "trace job 1: neither runtime nor timeout"},
		"bad profile":         {"submit,user,gpus,runtime,utilization\n0s,a,1,1h,120\n", "trace job 1: cvlab.epfl.ch/simulated-utilization"},
		"bad duration":        {"submit,user,gpus,runtime\n0s,a,1,an hour\n", `trace job 1: runtime "an hour" is not a duration`},
		"unknown json field":  {`{"submit": "0s", "user": "a", "gpus": 1, "runtime": "1h", "gpu": 2}`, `trace line 1: unknown field "gpu"`},
		"ragged csv":          {"submit,user,gpus,runtime\n0s,a,1\n", "trace: record on line 2: wrong number of fields"},
		"not json":            {"{submit}\n", "trace line 1: invalid character"},
		"bad interactive":     {"submit,user,gpus,runtime,interactive\n0s,a,1,1h,maybe\n", `trace job 1: interactive "maybe" is not true or false`},
		"priority not an int": {"submit,user,gpus,runtime,priority\n0s,a,1,1h,high\n", `trace job 1: priority "high" is not an integer`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ReadTrace(strings.NewReader(tc.in), time.Time{})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %v, want one starting with %q", err, tc.want)
			}
		})
	}
}

func TestReadNodes(t *testing.T) {
	n, err := ReadNodes(strings.NewReader("# lab\nbig 8 128 1Ti # comment\nsmall 2\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	type node struct {
		Name            string
		GPUs, CPU, Mem  string
		Ready, Hostname string
	}
	var got []node
	for _, x := range n {
		gpu, cpu, mem := x.Status.Allocatable["nvidia.com/gpu"], x.Status.Allocatable["cpu"], x.Status.Allocatable["memory"]
		got = append(got, node{x.Name, gpu.String(), cpu.String(), mem.String(), string(x.Status.Conditions[0].Status), x.Labels["kubernetes.io/hostname"]})
	}
	want := []node{{"big", "8", "128", "1Ti", "True", "big"}, {"small", "2", "64", "512Gi", "True", "small"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	for in, msg := range map[string]string{"n1\n": "node file line 1", "n1 x\n": "node n1: GPUs must be a number", "n1 1\nn1 2\n": "node n1 appears twice",
		"n1 1 lots\n": "node n1: cpu"} {
		if _, err := ReadNodes(strings.NewReader(in)); err == nil || !strings.HasPrefix(err.Error(), msg) {
			t.Errorf("%q: error %v, want %q", in, err, msg)
		}
	}
}
