package cli

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	sim "github.com/epfl-cvlab/cvlab-queue/internal/simulate"
)

func expectedRuntime(d string) func(*cvlabv1alpha1.CvlabJob) {
	return func(j *cvlabv1alpha1.CvlabJob) {
		j.Annotations = map[string]string{sim.AnnotationExpectedRuntime: d}
	}
}

// twoNodes: n1 (4 GPUs) runs alice's 4-GPU job, started 1h ago; n2 (2 GPUs) bob's 2-GPU job,
// started 30m ago with a 1h timeout: it ends at 09:30. carol (2 GPUs, created 20m ago), dave (3)
// and carol again (1) wait. mutate changes alice's job.
func twoNodes(mutate ...func(*cvlabv1alpha1.CvlabJob)) *scenario {
	return newScenario().node("n1", 4).node("n2", 2).
		job("alice-1", "alice", 4, 2*time.Hour, mutate...).running("n1", time.Hour).
		job("bob-1", "bob", 2, time.Hour, timeout(time.Hour)).running("n2", 30*time.Minute).
		job("carol-1", "carol", 2, 20*time.Minute).
		job("dave-1", "dave", 3, 10*time.Minute).
		job("carol-2", "carol", 1, 5*time.Minute)
}

// Estimated starts worked out by hand. With twoNodes and --preemption=Never: carol-1 takes n2
// when bob-1 reaches its timeout (09:30); dave-1 (3 GPUs) fits on n1 only, and carol-2 (carol's
// 3rd GPU) ranks below it, so both wait for alice-1 to end and then fill n1 together.
func TestPredict(t *testing.T) {
	never := observe.DefaultSettings()
	never.Preemption = queue.PreemptNever
	at := func(d time.Duration) sim.Estimate { return sim.Estimate{At: t0.Add(d)} }
	cases := map[string]struct {
		s       *scenario
		set     observe.Settings
		want    map[string]sim.Estimate
		forever map[string]time.Time
		notes   []string
	}{
		// The waiting jobs have no timeout: once started, they run forever.
		"timeouts": {
			s: twoNodes(timeout(3 * time.Hour)), set: never,
			want:    map[string]sim.Estimate{"lab/carol-1": at(30 * time.Minute), "lab/dave-1": at(2 * time.Hour), "lab/carol-2": at(2 * time.Hour)},
			forever: map[string]time.Time{"lab/carol-1": t0.Add(30 * time.Minute), "lab/dave-1": t0.Add(2 * time.Hour), "lab/carol-2": t0.Add(2 * time.Hour)},
		},
		"an expected runtime shorter than the timeout": {
			s: twoNodes(timeout(3*time.Hour), expectedRuntime("90m")), set: never,
			want:    map[string]sim.Estimate{"lab/carol-1": at(30 * time.Minute), "lab/dave-1": at(30 * time.Minute), "lab/carol-2": at(30 * time.Minute)},
			forever: map[string]time.Time{"lab/carol-1": t0.Add(30 * time.Minute), "lab/dave-1": t0.Add(30 * time.Minute), "lab/carol-2": t0.Add(30 * time.Minute)},
		},
		"an expected runtime without a timeout": {
			s: twoNodes(expectedRuntime("3h")), set: never,
			want:    map[string]sim.Estimate{"lab/carol-1": at(30 * time.Minute), "lab/dave-1": at(2 * time.Hour), "lab/carol-2": at(2 * time.Hour)},
			forever: map[string]time.Time{"lab/carol-1": t0.Add(30 * time.Minute), "lab/dave-1": t0.Add(2 * time.Hour), "lab/carol-2": t0.Add(2 * time.Hour)},
		},
		"an expected runtime that is not a duration": {
			s: twoNodes(timeout(3*time.Hour), expectedRuntime("soon")), set: never,
			want:    map[string]sim.Estimate{"lab/carol-1": at(30 * time.Minute), "lab/dave-1": at(2 * time.Hour), "lab/carol-2": at(2 * time.Hour)},
			forever: map[string]time.Time{"lab/carol-1": t0.Add(30 * time.Minute), "lab/dave-1": t0.Add(2 * time.Hour), "lab/carol-2": t0.Add(2 * time.Hour)},
			notes:   []string{`lab/alice-1: annotation cvlab.epfl.ch/expected-runtime="soon" is not a positive duration (such as 6h or 90m): ignored`},
		},
		"a run past its expected runtime": {
			s: twoNodes(timeout(3*time.Hour), expectedRuntime("45m")), set: never,
			want:    map[string]sim.Estimate{"lab/carol-1": at(30 * time.Minute), "lab/dave-1": at(2 * time.Hour), "lab/carol-2": at(2 * time.Hour)},
			forever: map[string]time.Time{"lab/carol-1": t0.Add(30 * time.Minute), "lab/dave-1": t0.Add(2 * time.Hour), "lab/carol-2": t0.Add(2 * time.Hour)},
			notes:   []string{"lab/alice-1 has run past its expected runtime (45m): assumed to run until its timeout"},
		},
		// alice-1 holds n1 for ever, and carol-1 takes n2 for ever at 09:30: dave-1 and carol-2
		// never start.
		"a running job without a timeout": {
			s: twoNodes(), set: never,
			want: map[string]sim.Estimate{"lab/carol-1": at(30 * time.Minute),
				"lab/dave-1": {Unknown: "lab/alice-1, lab/carol-1 have no timeout"}, "lab/carol-2": {Unknown: "lab/alice-1, lab/carol-1 have no timeout"}},
			forever: map[string]time.Time{"lab/alice-1": t0.Add(-time.Hour), "lab/carol-1": t0.Add(30 * time.Minute)},
		},
		// The lab scenario with the defaults: carol-c (1st GPU) may evict alice-a once it has run
		// --min-runtime (10m, at 09:09) and starts when its pod has stopped, after its grace
		// period (60s): 4 GPUs free on n1 at 09:10. carol-c and bob-e (bob's 3rd) take 2; alice-a,
		// requeued on alice's 1st-4th GPUs, does not fit, and alice-d (her 5th-6th) passes it: the
		// head of the line holds no one back before --max-head-wait (30m).
		"a preemption": {
			s: lab(), set: observe.DefaultSettings(),
			want: map[string]sim.Estimate{"lab/carol-c": at(10 * time.Minute), "lab/bob-e": at(10 * time.Minute), "lab/alice-d": at(10 * time.Minute)},
			forever: map[string]time.Time{"lab/bob-b": t0.Add(-time.Minute), "lab/carol-c": t0.Add(10 * time.Minute),
				"lab/bob-e": t0.Add(10 * time.Minute), "lab/alice-d": t0.Add(10 * time.Minute)},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p, err := Predict(tc.s.view(tc.set))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, p.Starts); diff != "" {
				t.Errorf("estimated starts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.forever, p.Forever); diff != "" {
				t.Errorf("jobs that never end (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.notes, p.Notes); diff != "" {
				t.Errorf("notes (-want +got):\n%s", diff)
			}
		})
	}
}

// The starting state of --from-cluster: the nodes less the GPUs of pods outside the queue, the
// running jobs with their start, node and end, the waiting jobs as they are.
func TestStateFromCluster(t *testing.T) {
	set := observe.DefaultSettings()
	s := newScenario().node("n1", 4).node("n2", 3).foreign("raw-1", "n2", 1).
		job("alice-a", "alice", 4, 2*time.Minute, timeout(2*time.Hour), expectedRuntime("1h")).running("n1", time.Minute).
		job("bob-b", "bob", 2, 2*time.Minute).running("n2", time.Minute).
		job("carol-c", "carol", 1, 30*time.Second, priority(2))
	cfg, st, notes := StateFromCluster(s.cluster(set), set, t0)
	var nodes []string
	for _, n := range cfg.Nodes {
		q := n.Status.Allocatable[resourceGPU]
		nodes = append(nodes, n.Name+" "+q.String())
	}
	if diff := cmp.Diff([]string{"n1 4", "n2 2"}, nodes); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	want := sim.State{Now: t0, Jobs: []sim.StateJob{
		{Namespace: "lab", Started: t0.Add(-time.Minute), Node: "n1", Admissions: 1,
			TraceJob: sim.TraceJob{Name: "alice-a", User: "alice", GPUs: 4, Submit: t0.Add(-2 * time.Minute), Runtime: time.Hour, Timeout: 2 * time.Hour}},
		{Namespace: "lab", Started: t0.Add(-time.Minute), Node: "n2", Admissions: 1,
			TraceJob: sim.TraceJob{Name: "bob-b", User: "bob", GPUs: 2, Submit: t0.Add(-2 * time.Minute)}},
		{Namespace: "lab", TraceJob: sim.TraceJob{Name: "carol-c", User: "carol", GPUs: 1, Priority: 2, Submit: t0.Add(-30 * time.Second)}},
	}}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	if len(notes) != 0 {
		t.Errorf("notes: %q", notes)
	}
}

// why tells the estimate with its assumptions, and what it assumed of which job.
func TestExplainEstimate(t *testing.T) {
	never := observe.DefaultSettings()
	never.Preemption = queue.PreemptNever
	cases := map[string]struct {
		s    *scenario
		key  string
		want []string
	}{
		"from a timeout": {s: twoNodes(timeout(3 * time.Hour)), key: "lab/dave-1", want: []string{
			"Estimated start: in about 2h (11:00), if running jobs use their full timeout (or the expected runtime their owner gave) and no job ranked above it arrives: an estimate, not a promise; lab/carol-1 without a timeout is assumed to run forever.\n",
		}},
		// n1 frees at 09:15: carol-1 and carol-2 take 3 of its 4 GPUs, for ever.
		"from an expected runtime": {s: twoNodes(timeout(3*time.Hour), expectedRuntime("1h15m")), key: "lab/carol-1", want: []string{
			"Estimated start: in about 15m (09:15), if running jobs",
		}},
		"a bad expected runtime": {s: twoNodes(timeout(3*time.Hour), expectedRuntime("-1h")), key: "lab/carol-2", want: []string{
			"Estimated start: in about 2h (11:00), if running jobs",
			"  Note: lab/alice-1: annotation cvlab.epfl.ch/expected-runtime=\"-1h\" is not a positive duration (such as 6h or 90m): ignored\n",
		}},
		// carol-1, which has no timeout either, takes n2 at 09:30 for ever.
		"waiting on a job without a timeout": {s: twoNodes(), key: "lab/dave-1", want: []string{
			"Estimated start: unknown: lab/alice-1, lab/carol-1 have no timeout.\n",
		}},
		"a job that does not wait on it": {s: twoNodes(), key: "lab/carol-1", want: []string{
			"Estimated start: in about 30m (09:30), if running jobs use their full timeout (or the expected runtime their owner gave) and no job ranked above it arrives: an estimate, not a promise; lab/alice-1 without a timeout is assumed to run forever.\n",
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Explain(tc.s.view(never), tc.key, "dave")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("explanation lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

// BenchmarkPredict: a busy lab's queue (4 nodes of 8 GPUs, full, 300 jobs of 25 people waiting,
// all with timeouts): what one estimate costs why and the dashboard.
func BenchmarkPredict(b *testing.B) {
	s := newScenario()
	for n := range 4 {
		s.node(fmt.Sprintf("n%d", n), 8)
	}
	for i := range 32 {
		s.job(fmt.Sprintf("run-%d", i), fmt.Sprintf("u%d", i%25), 1, time.Hour, timeout(time.Duration(1+i%10)*time.Hour)).
			running(fmt.Sprintf("n%d", i%4), time.Duration(i)*time.Minute)
	}
	for i := range 300 {
		s.job(fmt.Sprintf("wait-%d", i), fmt.Sprintf("u%d", i%25), int32(1+i%3), time.Duration(300-i)*time.Second, timeout(time.Duration(1+i%7)*time.Hour))
	}
	v := s.view(observe.DefaultSettings())
	b.ResetTimer()
	for b.Loop() {
		if _, err := Predict(v); err != nil {
			b.Fatal(err)
		}
	}
}
