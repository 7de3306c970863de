package queue

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// idle marks a holding job as idle past --idle-after and --idle-grace (reclaimable).
func idle(j Job) Job {
	j.Idle = true
	return j
}

// reclaimed marks a waiting job as one whose idle GPUs were taken back, not admitted since.
func reclaimed(j Job) Job {
	j.Reclaimed = true
	return j
}

func TestDecideIdleVictims(t *testing.T) {
	const minRun = 10 * time.Minute
	long, young := ago(time.Hour), ago(time.Minute)
	snap := func(p Policy, nodes []Node, jobs ...Job) Snapshot {
		return Snapshot{Jobs: jobs, Nodes: nodes, Capacity: -1, Now: nodeNow, MaxHeadWait: -1, Preemption: p, MinRuntime: minRun}
	}
	evicts := func(preemptor string, victims ...string) nodeOutcome {
		return nodeOutcome{
			Waiting:     map[string]string{preemptor: "preempting " + string(rune('0'+len(victims))) + " lower-ranked job(s) on node n1"},
			Preemptions: []Preemption{{Preemptor: preemptor, Node: "n1", Victims: victims}},
			Reserved:    map[string]string{preemptor: "n1"},
		}
	}
	// alice holds her 1st GPU; her 2nd-GPU job a/2 waits. bob's b/1 (his 1st GPU, ranked above
	// a/2) and b/2 fill n1.
	secondGPU := func(p Policy, b1, b2 Job) Snapshot {
		return snap(p, []Node{gpuNode("n1", 2, 0), gpuNode("n2", 1, 0)},
			runs("a/1", "alice", 1, 0, "n2", long), b1, b2, wait("a/2", "alice", 1, 0, 5))
	}
	waits := nodeOutcome{Waiting: map[string]string{"a/2": "0 GPUs free, needs 1"}, Head: "a/2"}
	cases := map[string]struct {
		snap Snapshot
		want nodeOutcome
	}{
		"a 2nd-GPU job may not evict busy jobs": {
			snap: secondGPU(PreemptFirstGPU, runs("b/1", "bob", 1, 1, "n1", long), runs("b/2", "bob", 1, 2, "n1", long)),
			want: waits,
		},
		"a 2nd-GPU job evicts an idle job ranked above it": {
			snap: secondGPU(PreemptFirstGPU, idle(runs("b/1", "bob", 1, 1, "n1", long)), runs("b/2", "bob", 1, 2, "n1", long)),
			want: evicts("a/2", "b/1"),
		},
		"min-runtime does not protect an idle job": {
			snap: secondGPU(PreemptFirstGPU, idle(runs("b/1", "bob", 1, 1, "n1", young)), runs("b/2", "bob", 1, 2, "n1", long)),
			want: evicts("a/2", "b/1"),
		},
		"PreemptNever evicts no idle job": {
			snap: secondGPU(PreemptNever, idle(runs("b/1", "bob", 1, 1, "n1", long)), runs("b/2", "bob", 1, 2, "n1", long)),
			want: waits,
		},
		"an idle job is chosen before a lower-ranked busy one": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 2, 0)},
				idle(runs("b/1", "bob", 1, 0, "n1", long)), runs("b/2", "bob", 1, 1, "n1", long),
				wait("a/1", "alice", 1, 0, 5)),
			want: evicts("a/1", "b/1"),
		},
		"no idle job and no eligible preemptor: no wake-up from young jobs": {
			snap: secondGPU(PreemptFirstGPU, runs("b/1", "bob", 1, 1, "n1", young), runs("b/2", "bob", 1, 2, "n1", young)),
			want: waits,
		},
		"a job whose idle GPUs were taken back does not preempt its preemptor to get them back": {
			// b/1 (bob's 1st GPU) was reclaimed by a/2 (alice's 2nd), which runs now: by rank
			// alone, b/1 would evict it once it is old enough, idle again, and be reclaimed again.
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 1, 0), gpuNode("n2", 1, 0)},
				runs("a/1", "alice", 1, 0, "n2", long), runs("a/2", "alice", 1, 5, "n1", long),
				reclaimed(wait("b/1", "bob", 1, 1, 5))),
			want: nodeOutcome{Waiting: map[string]string{"b/1": "0 GPUs free, needs 1; its idle GPUs were taken back, so it preempts no one until it runs again"},
				Head: "b/1"},
		},
		"a job whose idle GPUs were taken back still evicts idle jobs": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 1, 0), gpuNode("n2", 1, 0)},
				runs("a/1", "alice", 1, 0, "n2", long), idle(runs("a/2", "alice", 1, 5, "n1", long)),
				reclaimed(wait("b/1", "bob", 1, 1, 5))),
			want: evicts("b/1", "a/2"),
		},
		"it preempts again by the policy once it ran again": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 1, 0), gpuNode("n2", 1, 0)},
				runs("a/1", "alice", 1, 0, "n2", long), runs("a/2", "alice", 1, 5, "n1", long),
				wait("b/1", "bob", 1, 1, 5)),
			want: evicts("b/1", "a/2"),
		},
		"a claim made on idle jobs stands for a job the policy does not let preempt": {
			snap: func() Snapshot {
				s := secondGPU(PreemptFirstGPU, runs("b/1", "bob", 1, 1, "n1", long), runs("b/2", "bob", 1, 2, "n1", long))
				s.Jobs[1] = evicting(s.Jobs[1])
				s.Jobs[3].IdleClaim = true
				s.Reserved = map[string]string{"a/2": "n1"}
				return s
			}(),
			want: nodeOutcome{Waiting: map[string]string{"a/2": "waiting for the jobs it preempted to stop on node n1"},
				Reserved: map[string]string{"a/2": "n1"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, nodeOutcomeOf(Decide(tc.snap)), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Decide() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestIdleHoldReason: a job held back because its GPUs sat idle waits as BackingOff, but its
// sentence says why (not "after a failed start").
func TestIdleHoldReason(t *testing.T) {
	now := time.Date(2025, 3, 1, 22, 0, 0, 0, time.UTC)
	until := now.Add(time.Hour)
	cases := map[string]struct {
		idle bool
		want string
	}{
		"failed start":    {want: "backing off after a failed start until 2025-03-01T23:00:00Z"},
		"idle, suspended": {idle: true, want: "held back until 2025-03-01T23:00:00Z: its GPUs sat idle"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := Decide(Snapshot{Now: now, Capacity: 8, MaxHeadWait: -1, Jobs: []Job{{Key: "a/1", User: "a", GPUs: 1,
				Created: now.Add(-time.Hour), State: Waiting, NotBefore: until, IdleHold: tc.idle}}})
			if e := d.Order[0]; e.Admit || e.Wait != BackingOff || e.Reason != tc.want {
				t.Errorf("admit %v, wait %q, reason %q; want waiting, BackingOff, %q", e.Admit, e.Wait, e.Reason, tc.want)
			}
		})
	}
}
