package cli

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// The whole explanation of the two waiting jobs of the lab scenario, as people read it.
func TestExplainGolden(t *testing.T) {
	cases := map[string]struct {
		key, me string
		want    string
	}{
		"carol's 1st GPU": {key: "lab/carol-c", me: "carol", want: `lab/carol-c (carol, 1 GPU, priority 0) is waiting: position 1 of 3 in the queue.
Rank 1 of 5: it is on your 1st GPU.
  No job ranks above it.
Why it waits: 0 GPUs free, needs 1.
  Nodes: n1 0 of 4 free, n2 0 of 3 free (1 used by other pods).
  A job runs on one node: it fits on n1 (4 GPUs, 1 more needed) or n2 (3 GPUs, 1 more needed).
What would let it start:
  - 1 more GPU free on one node (n1 or n2).
Preemption (--preemption=FirstGPU): it may evict lab/alice-a (rank 4, alice's 1st-4th GPUs) on node n1 at 09:09 (in 9m), once that job has run --min-runtime (10m).
Estimated start: in about 10m (09:10), if running jobs use their full timeout (or the expected runtime their owner gave) and no job ranked above it arrives: an estimate, not a promise; lab/bob-b without a timeout is assumed to run forever.
Operator's status: waiting: 0 GPUs free, needs 1
`},
		"alice's 5th-6th GPUs, asked by bob": {key: "lab/alice-d", me: "bob", want: `lab/alice-d (alice, 2 GPUs, priority 0) is waiting: position 3 of 3 in the queue.
Rank 5 of 5: it is on alice's 5th-6th GPUs (a 2-GPU job ranks by its last GPU, the 6th).
  4 jobs rank above it: 3 on others' 1st/2nd/3rd GPUs, 1 of alice's own jobs (higher priority or submitted earlier: lab/alice-a).
Why it waits: 0 GPUs free, needs 2.
  Nodes: n1 0 of 4 free, n2 0 of 3 free (1 used by other pods).
  A job runs on one node: it fits on n1 (4 GPUs, 2 more needed) or n2 (3 GPUs, 2 more needed).
  2 jobs ranked above it wait for 2 GPUs: when GPUs free up they go first, unless they do not fit.
What would let it start:
  - 4 more GPUs free on one node (n1): the jobs ranked above it that fit take the first ones.
  - with fewer GPUs it would not start now either.
Preemption (--preemption=FirstGPU): it cannot evict anyone: only a job on its user's 1st GPU may, and this one is on alice's 5th-6th GPUs.
Estimated start: in about 10m (09:10), if running jobs use their full timeout (or the expected runtime their owner gave) and no job ranked above it arrives: an estimate, not a promise; lab/bob-b without a timeout is assumed to run forever.
Operator's status: waiting: 0 GPUs free, needs 2
`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			set := observe.DefaultSettings()
			got := Explain(lab().settle(set).view(set), tc.key, tc.me)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("explanation (-want +got):\n%s", diff)
			}
		})
	}
}

// Each scenario's explanation holds the lines (or parts of lines) worked out by hand.
func TestExplain(t *testing.T) {
	want := map[string][]string{
		"1st GPU waits for a young victim": {
			"Rank 1 of 5: it is on your 1st GPU.",
			"it may evict lab/alice-a (rank 4, alice's 1st-4th GPUs) on node n1 at 09:09 (in 9m)",
		},
		"5th-6th GPUs behind others": {
			"Rank 5 of 5: it is on your 5th-6th GPUs",
			"it cannot evict anyone: only a job on its user's 1st GPU may, and this one is on your 5th-6th GPUs.",
			"Estimated start: in about 10m (09:10), if running jobs use their full timeout",
		},
		"estimate from a timeout": {
			"Preemption (--preemption=Never): the cluster never evicts running jobs.",
			"Estimated start: in about 1h59m (10:59), if running jobs use their full timeout (or the expected runtime their owner gave) and no job ranked above it arrives: an estimate, not a promise; lab/bob-b without a timeout is assumed to run forever.",
		},
		"3rd GPU behind others' 1st/2nd": {
			"Rank 10 of 10: it is on your 3rd GPU.",
			"  9 jobs rank above it: 7 on others' 1st/2nd GPUs, 2 of your own jobs (higher priority or submitted earlier: lab/dave-1, lab/dave-2).",
			"  1 job ranked above it waits for 1 GPU: when GPUs free up they go first, unless they do not fit.",
			"  - 2 more GPUs free on one node (n1): the jobs ranked above it that fit take the first ones.",
			"it cannot evict anyone: only a job on its user's 1st GPU may, and this one is on your 3rd GPU.",
			"Estimated start: unknown: lab/ann-1, lab/ann-2, lab/ben-1 and 5 more have no timeout.",
		},
		"a smaller size would start now": {
			"Why it waits: 2 GPUs free, needs 3.",
			"  - 1 more GPU free on one node (n1).",
			"  - with 2 GPUs instead of 3 it would start now on node n1.",
			"it may evict running jobs ranked below it, but none is running.",
		},
		"fragmented": {
			"Why it waits: 4 GPUs free but at most 2 on one node, needs 4.",
			"  Nodes: n1 2 of 4 free, n2 2 of 4 free.",
			"  - 2 more GPUs free on one node (n1 or n2).",
			"  - with 2 GPUs instead of 4 it would start now on node n1.",
		},
		"never fits": {
			"Why it waits: it can never start as it is: needs 12 GPUs but the largest GPU node has 8.",
			"What would let it start: resubmit it with at most 8 GPUs.",
		},
		"held behind a blocking head": {
			"  3 jobs rank above it: 2 on others' 4th/8th GPUs, 1 of your own jobs (higher priority or submitted earlier: lab/ann-1).",
			"Why it waits: held behind lab/big, which waits for 8 GPUs: that job is first in line and has waited longer than --max-head-wait (30m), so no job ranked below it starts before it.",
			"  - 8 more GPUs free on one node (n1): the jobs ranked above it that fit take the first ones.",
		},
		"backing off": {
			"Why it waits: its last start failed (see its events); the operator tries again at 09:05 (in 5m).",
			"Estimated start: in about 5m (09:05), if running jobs use their full timeout (or the expected runtime their owner gave) and no job ranked above it arrives: an estimate, not a promise.",
		},
		"preempted, back in the queue": {
			"Its last run was stopped at 08:59 on node n1 for lab/ann-1 (ann's job, ranked above it); it is back in the queue with its place kept.",
		},
		"waiting for its victims to stop": {
			"  1 job ranks above it: 1 on others' 1st GPU submitted before it.",
			"Why it waits: waiting for the jobs it preempted to stop on node n1; it starts as soon as their pods are gone",
		},
		"fits now": {
			"lab/ann-1 (ann, 1 GPU, priority 0) is waiting, but it fits now on node n1: the operator starts it at its next decision (a few seconds).",
		},
		"Rank policy": {
			"Rank 2 of 4: it is on your 2nd GPU.",
			"Preemption (--preemption=Rank): it may evict lab/cat-2 (rank 4, cat's 4th GPU) on node n1 at 09:05 (in 5m), once that job has run --min-runtime (10m).",
		},
		"pool mode": {
			"Why it waits: 1 GPU free, needs 2.",
			"  The queue is one pool of 4 GPUs (no GPU node advertises nvidia.com/gpu): placement is left to the scheduler.",
			"  - 1 more GPU free.",
			"  - with 1 GPU instead of 2 it would start now.",
			"it may evict lab/ann-1 (rank 2, ann's 1st-3rd GPUs) at 09:05 (in 5m)",
		},
		"running beyond the cut": {
			"lab/alice-a is running on node n1 since 08:59 (for 60s), on your 1st-4th GPUs: rank 4 of 5.",
			"Timeout 2h: it is stopped at 10:59 (in 1h59m) at the latest.",
			"It ranks beyond the capacity cut: with the jobs ranked above it, 8 GPUs are wanted and the queue can hold 6.",
			"Preemption (--preemption=FirstGPU): it may be evicted for lab/carol-c (rank 1, carol's 1st GPU) at 09:09 (in 9m), once it has run --min-runtime (10m).",
		},
		"running, safe": {
			"lab/bob-b is running on node n2 since 08:59 (for 60s), on bob's 1st-2nd GPUs: rank 2 of 5.",
			"No timeout: it runs until it ends by itself or is cancelled.",
			"Preemption (--preemption=FirstGPU): no waiting job may evict it now.",
		},
		"admitted, unschedulable": {
			"lab/ann-1 is admitted: its pod ann-1-1 on node n1 has not started yet; it holds 1 GPU (your 1st GPU), rank 1 of 1.",
			"  The scheduler cannot place it yet: 0/3 nodes are available: 1 Insufficient memory.",
		},
		"succeeded": {
			"lab/ann-1 succeeded at 08:40 (20m ago): it is no longer in the queue and holds no GPU.",
			"Operator's status: pod ann-1-1 succeeded",
		},
		"failed on its timeout": {
			"lab/ann-1 failed (DeadlineExceeded) at 07:00 (120m ago): it is no longer in the queue and holds no GPU.",
		},
		"suspended": {
			"lab/ann-1 is suspended by its owner: it is not in the queue and holds no GPU.",
			`To queue it again: kubectl patch cvj ann-1 -n lab --type=merge -p '{"spec":{"suspend":false}}'`,
		},
		"CPU only": {"lab/prep needs no GPU: CPU-only jobs never wait for the queue (phase Running)."},
	}
	scenarios := whyScenarios()
	for name := range scenarios {
		if _, ok := want[name]; !ok {
			t.Errorf("scenario %q has no expectations", name)
		}
	}
	for name, lines := range want {
		t.Run(name, func(t *testing.T) {
			c, ok := scenarios[name]
			if !ok {
				t.Fatalf("no scenario %q", name)
			}
			got := Explain(c.s.settle(c.set).view(c.set), c.key, c.me)
			for _, l := range lines {
				if !strings.Contains(got, l) {
					t.Errorf("explanation lacks %q:\n%s", l, got)
				}
			}
		})
	}
}
