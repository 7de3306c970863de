package simulate

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

var t0 = time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)

// tj is a trace job submitted at t0+at.
func tj(name string, at time.Duration, user string, gpus int32, runtime time.Duration, opts ...func(*TraceJob)) TraceJob {
	j := TraceJob{Name: name, User: user, GPUs: gpus, Runtime: runtime, Submit: t0.Add(at)}
	for _, o := range opts {
		o(&j)
	}
	return j
}

func nodes(t *testing.T, file string) []corev1.Node {
	t.Helper()
	n, err := ReadNodes(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// fate renders a job's outcome in offsets from t0: "start +30m end +1h30m Succeeded", with its
// preemptions when it had some.
func fate(o JobOutcome) string {
	at := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return "+" + observe.ShortDuration(t.Sub(t0))
	}
	s := fmt.Sprintf("start %s end %s %s", at(o.Start), at(o.End), o.Phase)
	if o.Preemptions > 0 {
		s += fmt.Sprintf(" evicted %d", o.Preemptions)
	}
	return s
}

// TestRun: small traces through the operator's engine and lifecycle, with outcomes computed by
// hand from the queue's rule (README: a 1st GPU outranks a 2nd, ...).
func TestRun(t *testing.T) {
	set := func(f func(*observe.Settings)) observe.Settings {
		s := observe.DefaultSettings()
		f(&s)
		return s
	}
	never := set(func(s *observe.Settings) { s.Preemption = queue.PreemptNever })
	profile := func(p string) func(*TraceJob) { return func(j *TraceJob) { j.Utilization = p } }
	// Two jobs of alice hold the 2 GPUs; bob's 1st GPU arrives after 30m.
	twoAlice := []TraceJob{tj("a1", 0, "alice", 1, 2*time.Hour), tj("a2", time.Second, "alice", 1, 2*time.Hour),
		tj("b1", 30*time.Minute, "bob", 1, time.Hour)}
	// Bob's 2-GPU job waits behind alice's long one; alice's 2nd GPU could pass it.
	headOfLine := []TraceJob{tj("a1", 0, "alice", 1, 10*time.Hour), tj("b", time.Minute, "bob", 2, time.Hour),
		tj("d1", 2*time.Minute, "dan", 1, 2*time.Hour), tj("a2", 3*time.Minute, "alice", 1, time.Hour)}
	cases := map[string]struct {
		cfg   Config
		trace []TraceJob
		want  map[string]string
		// preemptions, idle reclaims, wasted GPU-hours
		preempted, reclaimed int
		wasted               float64
		// waits are jobs' total waits (JobOutcome.Wait), when checked
		waits map[string]time.Duration
	}{
		"no preemption: bob waits for a GPU; the 1st GPU outranks alice's 2nd": {
			cfg:   Config{Settings: never, Nodes: nodes(t, "n1 2")},
			trace: append(twoAlice, tj("a3", 10*time.Minute, "alice", 1, time.Hour)),
			want: map[string]string{
				"alice/a1": "start +0s end +2h Succeeded", "alice/a2": "start +1s end +2h0m1s Succeeded",
				"bob/b1": "start +2h end +3h Succeeded", "alice/a3": "start +2h0m1s end +3h0m1s Succeeded",
			},
		},
		"FirstGPU: bob's 1st GPU evicts alice's 2nd, which stops within its grace period and starts again from scratch": {
			cfg:   Config{Settings: observe.DefaultSettings(), Nodes: nodes(t, "n1 2")},
			trace: twoAlice,
			want: map[string]string{
				"alice/a1": "start +0s end +2h Succeeded", "alice/a2": "start +1s end +3h31m Succeeded evicted 1",
				"bob/b1": "start +31m end +1h31m Succeeded",
			},
			preempted: 1, wasted: (30*time.Minute - time.Second).Hours(),
			// a2 waits again from its eviction (+30m) to its restart (+1h31m).
			waits: map[string]time.Duration{"alice/a2": time.Hour + time.Minute, "bob/b1": time.Minute},
		},
		"a job that checkpoints resumes where it saved": {
			cfg: Config{Settings: observe.DefaultSettings(), Nodes: nodes(t, "n1 2")},
			trace: []TraceJob{twoAlice[0], tj("a2", time.Second, "alice", 1, 2*time.Hour, func(j *TraceJob) { j.Checkpoint = 20 * time.Minute }),
				twoAlice[2]},
			want: map[string]string{
				// a2 ran 29m59s, saved at 20m: 1h40m left from 1h31m.
				"alice/a1": "start +0s end +2h Succeeded", "alice/a2": "start +1s end +3h11m Succeeded evicted 1",
				"bob/b1": "start +31m end +1h31m Succeeded",
			},
			preempted: 1, wasted: (10*time.Minute - time.Second).Hours(),
		},
		"a pod that stops at once frees its GPU at once (StopDelay)": {
			cfg:   Config{Settings: observe.DefaultSettings(), Nodes: nodes(t, "n1 2"), StopDelay: time.Second},
			trace: twoAlice,
			want: map[string]string{
				"alice/a1": "start +0s end +2h Succeeded", "alice/a2": "start +1s end +3h30m1s Succeeded evicted 1",
				"bob/b1": "start +30m1s end +1h30m1s Succeeded",
			},
			preempted: 1, wasted: (30*time.Minute - time.Second).Hours(),
		},
		"--min-runtime protects young jobs: the eviction waits until alice's 2nd GPU ran an hour": {
			cfg:   Config{Settings: set(func(s *observe.Settings) { s.MinRuntime = time.Hour }), Nodes: nodes(t, "n1 2")},
			trace: twoAlice,
			want: map[string]string{
				// a2 restarts when a1 ends, as alice's 1st GPU.
				"alice/a1": "start +0s end +2h Succeeded", "alice/a2": "start +1s end +4h Succeeded evicted 1",
				"bob/b1": "start +1h1m1s end +2h1m1s Succeeded",
			},
			preempted: 1, wasted: 1,
		},
		"a pod starts after StartDelay; the wait ends when it runs": {
			cfg:   Config{Settings: never, Nodes: nodes(t, "n1 2"), StartDelay: 5 * time.Second},
			trace: twoAlice[:1],
			want:  map[string]string{"alice/a1": "start +5s end +2h0m5s Succeeded"},
		},
		"a run longer than its timeout fails at the deadline": {
			cfg: Config{Settings: never, Nodes: nodes(t, "n1 2")},
			trace: []TraceJob{tj("a1", 0, "alice", 1, 2*time.Hour, func(j *TraceJob) { j.Timeout = 90 * time.Minute }),
				tj("a2", 0, "alice", 1, time.Hour, func(j *TraceJob) { j.Timeout = 90 * time.Minute })},
			want: map[string]string{"alice/a1": "start +0s end +1h30m Failed", "alice/a2": "start +0s end +1h Succeeded"},
		},
		"head of the line: after --max-head-wait bob's 2-GPU job holds back alice's 2nd GPU": {
			cfg:   Config{Settings: set(func(s *observe.Settings) { s.Preemption = queue.PreemptNever }), Nodes: nodes(t, "n1 2")},
			trace: headOfLine,
			want: map[string]string{
				// When a1 ends, a2 is alice's 1st GPU: it ranks above bob's 1st-2nd.
				"alice/a1": "start +0s end +10h Succeeded", "bob/b": "start +11h end +12h Succeeded",
				"dan/d1": "start +2m end +2h2m Succeeded", "alice/a2": "start +10h end +11h Succeeded",
			},
		},
		"without head of the line, alice's 2nd GPU passes bob's 2-GPU job": {
			cfg: Config{Settings: set(func(s *observe.Settings) { s.Preemption, s.MaxHeadWait = queue.PreemptNever, -1 }),
				Nodes: nodes(t, "n1 2")},
			trace: headOfLine,
			want: map[string]string{
				"alice/a1": "start +0s end +10h Succeeded", "bob/b": "start +10h end +11h Succeeded",
				"dan/d1": "start +2m end +2h2m Succeeded", "alice/a2": "start +2h2m end +3h2m Succeeded",
			},
		},
		"idle reclaim: alice's 2nd GPU, idle since +3m, counts as free after --idle-after and --idle-grace; bob's 2nd GPU takes it": {
			cfg: Config{Settings: observe.DefaultSettings(), Nodes: nodes(t, "n1 3")},
			trace: []TraceJob{tj("a0", 0, "alice", 1, 10*time.Hour), tj("b0", 0, "bob", 1, 10*time.Hour),
				tj("a", time.Second, "alice", 1, 3*time.Hour, profile("50,50,0")), tj("b", 10*time.Minute, "bob", 1, time.Hour)},
			want: map[string]string{
				// Measured every minute: idle from the +3m sample, reclaimable at +1h33m, stopped 60s
				// later. Requeued, alice's 2nd GPU may not evict bob's (FirstGPU).
				"alice/a0": "start +0s end +10h Succeeded", "bob/b0": "start +0s end +10h Succeeded",
				"alice/a": "start +1s end +5h34m Succeeded evicted 1", "bob/b": "start +1h34m end +2h34m Succeeded",
			},
			reclaimed: 1, wasted: (93*time.Minute - time.Second).Hours(),
		},
		"a reclaimed job does not take its GPU back, though it ranks first (it preempts no one until it runs again)": {
			cfg: Config{Settings: observe.DefaultSettings(), Nodes: nodes(t, "n1 1")},
			trace: []TraceJob{tj("a", 0, "alice", 1, 3*time.Hour, profile("50,50,0")),
				tj("b", 10*time.Minute, "bob", 1, time.Hour)},
			want: map[string]string{
				// Idle from the +2m sample, reclaimable at +1h32m, stopped 60s later; alice's 1st
				// GPU outranks bob's, yet waits for it to end.
				"alice/a": "start +0s end +5h33m Succeeded evicted 1", "bob/b": "start +1h33m end +2h33m Succeeded",
			},
			reclaimed: 1, wasted: (92 * time.Minute).Hours(),
		},
		"--idle-action=Suspend stops the idle job without a preemptor and holds it back for --idle-after": {
			cfg:   Config{Settings: set(func(s *observe.Settings) { s.Idle.Action = observe.IdleSuspend }), Nodes: nodes(t, "n1 1")},
			trace: []TraceJob{tj("a", 0, "alice", 1, 2*time.Hour, profile("50,50,0"), func(j *TraceJob) { j.Checkpoint = time.Minute })},
			want: map[string]string{
				// Suspended at +1h32m with its work saved, back at +2h32m for the 28m left.
				"alice/a": "start +0s end +3h Succeeded evicted 1",
			},
			reclaimed: 1,
		},
		"--idle-action=Warn never evicts": {
			cfg: Config{Settings: set(func(s *observe.Settings) { s.Idle.Action = observe.IdleWarn }), Nodes: nodes(t, "n1 1")},
			trace: []TraceJob{tj("a", 0, "alice", 1, 3*time.Hour, profile("50,50,0")),
				tj("b", 10*time.Minute, "bob", 1, time.Hour)},
			want: map[string]string{"alice/a": "start +0s end +3h Succeeded", "bob/b": "start +3h end +4h Succeeded"},
		},
		"a session deleted by its owner frees its GPU after the grace period": {
			cfg: Config{Settings: never, Nodes: nodes(t, "n1 1")},
			trace: []TraceJob{tj("s", 0, "alice", 1, 8*time.Hour, func(j *TraceJob) { j.Cancel = 2 * time.Hour }),
				tj("b", time.Minute, "bob", 1, time.Hour)},
			want: map[string]string{"alice/s": "start +0s end +2h Deleted", "bob/b": "start +2h1m end +3h1m Succeeded"},
		},
		"the largest node bounds a job: a 3-GPU job on 2-GPU nodes never starts": {
			cfg:   Config{Settings: never, Nodes: nodes(t, "n1 2\nn2 2")},
			trace: []TraceJob{tj("big", 0, "alice", 3, time.Hour), tj("small", time.Minute, "alice", 2, time.Hour)},
			want:  map[string]string{"alice/big": "start - end - Queued", "alice/small": "start +1m end +1h1m Succeeded"},
		},
		"settings without a node selector: every node": {
			cfg:   Config{Settings: observe.Settings{Preemption: queue.PreemptNever, GPUCapacity: -1}, Nodes: nodes(t, "n1 1")},
			trace: []TraceJob{tj("a1", 0, "alice", 1, time.Hour)},
			want:  map[string]string{"alice/a1": "start +0s end +1h Succeeded"},
		},
		"pool mode: --gpu-capacity without nodes": {
			cfg: Config{Settings: set(func(s *observe.Settings) { s.Preemption, s.GPUCapacity = queue.PreemptNever, 2 })},
			trace: []TraceJob{tj("a1", 0, "alice", 2, time.Hour), tj("b1", time.Minute, "bob", 1, time.Hour),
				tj("b2", 2*time.Minute, "bob", 1, time.Hour)},
			want: map[string]string{"alice/a1": "start +0s end +1h Succeeded", "bob/b1": "start +1h end +2h Succeeded",
				"bob/b2": "start +1h end +2h Succeeded"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r, err := Run(tc.cfg, State{}, tc.trace)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, o := range r.Jobs {
				got[o.Namespace+"/"+o.Name] = fate(o)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
			if r.Preemptions != tc.preempted || r.IdleReclaims != tc.reclaimed {
				t.Errorf("%d preemptions and %d idle reclaims, want %d and %d", r.Preemptions, r.IdleReclaims, tc.preempted, tc.reclaimed)
			}
			for _, o := range r.Jobs {
				if w, ok := tc.waits[o.Namespace+"/"+o.Name]; ok && o.Wait != w {
					t.Errorf("%s waited %s in all, want %s", o.Name, o.Wait, w)
				}
			}
			if d := r.WastedGPUHours - tc.wasted; d > 1e-9 || d < -1e-9 {
				t.Errorf("wasted %.4f GPU-hours, want %.4f", r.WastedGPUHours, tc.wasted)
			}
		})
	}
}

// TestRunFromState: a queue already running (predictions): running jobs end at their run time,
// or their timeout when their run time is unknown; the waiting job starts when GPUs free up.
func TestRunFromState(t *testing.T) {
	now := t0.Add(time.Hour)
	state := State{Now: now, Jobs: []StateJob{
		{TraceJob: tj("a1", 0, "alice", 1, 3*time.Hour), Started: t0, Node: "n1", Admissions: 1},
		{TraceJob: tj("b1", 0, "bob", 1, 0, func(j *TraceJob) { j.Timeout = 2 * time.Hour }), Started: t0.Add(10 * time.Minute), Node: "n1", Admissions: 1},
		{TraceJob: tj("c1", 30*time.Minute, "carol", 2, time.Hour)},
	}}
	set := observe.DefaultSettings()
	set.Preemption = queue.PreemptNever
	r, err := Run(Config{Settings: set, Nodes: nodes(t, "n1 2")}, state, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range r.Jobs {
		got[o.Namespace+"/"+o.Name] = fate(o)
	}
	want := map[string]string{
		"alice/a1": "start +0s end +3h Succeeded", "bob/b1": "start +10m end +2h10m Failed",
		"carol/c1": "start +3h end +4h Succeeded",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	if r.Start != now {
		t.Errorf("started at %s, want the state's time %s", r.Start, now)
	}
}

// TestRenderAllAgrees: not rendering the status of jobs that stay where they are (the default)
// gives the outcome of rendering every status at every decision, as the operator does.
func TestRenderAllAgrees(t *testing.T) {
	p := DefaultLabParams()
	p.Days = 1
	trace, err := Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Settings: observe.DefaultSettings(), Nodes: nodes(t, LabNodes)}
	fast, err := Run(cfg, State{}, trace)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RenderAll = true
	all, err := Run(cfg, State{}, trace)
	if err != nil {
		t.Fatal(err)
	}
	fast.WallTime, all.WallTime = 0, 0
	if diff := cmp.Diff(all, fast); diff != "" {
		t.Errorf("results differ (-all +default):\n%s", diff)
	}
	if fast.Preemptions == 0 || fast.IdleReclaims == 0 {
		t.Errorf("%d preemptions, %d idle reclaims: the trace should exercise both", fast.Preemptions, fast.IdleReclaims)
	}
}

// TestLabNodesAreTheLocalCluster: the default nodes are the local cluster's lab.
func TestLabNodesAreTheLocalCluster(t *testing.T) {
	b, err := os.ReadFile("../../hack/kwok/nodes-lab.txt")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != LabNodes {
		t.Error("internal/simulate/nodes-lab.txt differs from hack/kwok/nodes-lab.txt: copy it over")
	}
	n := nodes(t, LabNodes)
	var gpus int64
	for _, node := range n {
		q := node.Status.Allocatable["nvidia.com/gpu"]
		gpus += q.Value()
	}
	if len(n) != 4 || gpus != 30 {
		t.Errorf("%d nodes, %d GPUs; want 4 nodes, 30 GPUs", len(n), gpus)
	}
}
