package queue

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// nodeNow is the decision time of the node, backoff and preemption tests: 2025-03-01T22:00:00Z.
var nodeNow = at(36_000)

// ago returns nodeNow minus d.
func ago(d time.Duration) time.Time { return nodeNow.Add(-d) }

// runs builds a job that holds its GPUs on node, running since started (zero: not started yet).
func runs(key, user string, gpus int32, created int, node string, started time.Time) Job {
	j := hold(key, user, gpus, 0, created)
	j.Node, j.Started = node, started
	return j
}

// evicting marks a holding job as being evicted by an earlier preemption.
func evicting(j Job) Job {
	j.Evicting = true
	return j
}

// backoff holds a waiting job back until until.
func backoff(j Job, until time.Time) Job {
	j.NotBefore = until
	return j
}

// gpuNode builds a Ready GPU node.
func gpuNode(name string, gpus, busy int32) Node { return Node{Name: name, GPUs: gpus, Busy: busy} }

// stopping builds a Ready GPU node of which busy GPUs are taken outside the active jobs, term of
// them by the queue's pods being stopped.
func stopping(name string, gpus, busy, term int32) Node {
	return Node{Name: name, GPUs: gpus, Busy: busy, Terminating: term}
}

// nodeOutcome is the part of a Decision the node, backoff and preemption tests assert on.
type nodeOutcome struct {
	// Admit maps each admitted job to the node it is placed on.
	Admit map[string]string
	// Waiting maps each job still waiting to its Reason.
	Waiting     map[string]string
	Head        string
	Blocking    bool
	Wakeup      time.Time
	Free        int32
	Preemptions []Preemption
	// Reserved is Decision.Reserved: the claims standing at the end, by waiting job.
	Reserved map[string]string
}

func nodeOutcomeOf(d Decision) nodeOutcome {
	o := nodeOutcome{
		Admit: map[string]string{}, Waiting: map[string]string{},
		Head: d.Head, Blocking: d.Blocking, Wakeup: d.Wakeup, Free: d.Free, Preemptions: d.Preemptions,
		Reserved: d.Reserved,
	}
	for _, e := range d.Order {
		switch {
		case e.Admit:
			o.Admit[e.Key] = e.Node
		case e.State == Waiting:
			o.Waiting[e.Key] = e.Reason
		}
	}
	return o
}

type nodeCase struct {
	snap Snapshot
	want nodeOutcome
	// waitingOn, when set, is Entry.Node of jobs left waiting: the node a preemptor, a job
	// reserving GPUs being freed or a job keeping its claim waits on.
	waitingOn map[string]string
}

func runNodeCases(t *testing.T, cases map[string]nodeCase) {
	t.Helper()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := Decide(tc.snap)
			if diff := cmp.Diff(tc.want, nodeOutcomeOf(d), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Decide() mismatch (-want +got):\n%s", diff)
			}
			if d.Reserved != nil && len(d.Reserved) == 0 {
				t.Errorf("Reserved is empty but not nil")
			}
			for key, want := range tc.waitingOn {
				i := slices.IndexFunc(d.Order, func(e Entry) bool { return e.Key == key })
				if i < 0 {
					t.Errorf("%s is not in the order", key)
				} else if e := d.Order[i]; e.State != Waiting || e.Admit || e.Node != want {
					t.Errorf("%s: State %v, Admit %v, Node %q; want it left waiting on node %q", key, e.State, e.Admit, e.Node, want)
				}
			}
			// Every case is also a decision the property checker must accept.
			checkNodeDecision(t, tc.snap, d)
			for _, e := range d.Order {
				if (e.State == Holding || e.Admit) && e.Reason != "" {
					t.Errorf("%s does not wait but has Reason %q", e.Key, e.Reason)
				}
			}
		})
	}
}

func TestDecideNodePlacement(t *testing.T) {
	const hour = time.Hour
	cases := map[string]nodeCase{
		"best fit: the node with the fewest free GPUs that still fit": {
			snap: Snapshot{
				Jobs: []Job{
					wait("a/1", "alice", 2, 0, 0),
					wait("b/1", "bob", 3, 0, 1),
					wait("c/1", "carol", 1, 0, 2),
				},
				Nodes:    []Node{gpuNode("big", 8, 0), gpuNode("mid", 4, 1), gpuNode("small", 2, 0)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour,
			},
			// Order: c/1(1) a/1(2) b/1(3). Free big 8, mid 3, small 2: c/1 takes small, a/1 then
			// mid (3 > 1 left on small), b/1 then big.
			want: nodeOutcome{
				Admit: map[string]string{"c/1": "small", "a/1": "mid", "b/1": "big"},
				Free:  5 + 1 + 1,
			},
		},
		"equal free GPUs: the first node by name, whatever the listing order": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 1, 0, 0), wait("b/1", "bob", 1, 0, 1)},
				Nodes:    []Node{gpuNode("n2", 4, 0), gpuNode("n1", 4, 0)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour,
			},
			want: nodeOutcome{Admit: map[string]string{"a/1": "n1", "b/1": "n1"}, Free: 6},
		},
		"holding jobs take the GPUs of their node": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/run", "bob", 3, 0, "n1", time.Time{}),
					wait("a/1", "alice", 2, 0, 1),
					wait("c/1", "carol", 1, 0, 2),
				},
				Nodes:    []Node{gpuNode("n1", 4, 0), gpuNode("n2", 4, 0)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour,
			},
			// c/1 fills the last GPU of n1; a/1 only fits on n2.
			want: nodeOutcome{Admit: map[string]string{"c/1": "n1", "a/1": "n2"}, Free: 2},
		},
		"busy GPUs of other pods are not free": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 2, 0, 0), wait("a/2", "alice", 1, 0, 1)},
				Nodes:    []Node{gpuNode("n1", 4, 3), gpuNode("n2", 4, 4)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour,
			},
			want: nodeOutcome{
				Admit:   map[string]string{"a/2": "n1"},
				Waiting: map[string]string{"a/1": "1 GPU free, needs 2"},
				Head:    "a/1", Wakeup: nodeNow.Add(hour),
			},
		},
		"fragmented GPUs: a big job waits and smaller jobs behind it start": {
			snap: Snapshot{
				Jobs: []Job{
					wait("a/big", "alice", 4, 0, 0),
					wait("a/s1", "alice", 1, 0, 1),
					wait("a/s2", "alice", 1, 0, 2),
				},
				Nodes:    []Node{gpuNode("n1", 4, 2), gpuNode("n2", 4, 2)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour,
			},
			// a/s1 takes n1 (tie by name), then a/s2 the fuller n1 (1 free left) rather than n2.
			want: nodeOutcome{
				Admit:   map[string]string{"a/s1": "n1", "a/s2": "n1"},
				Waiting: map[string]string{"a/big": "4 GPUs free but at most 2 on one node, needs 4"},
				Head:    "a/big", Wakeup: nodeNow.Add(hour), Free: 2,
			},
		},
		"a fragmented head blocks the jobs behind it once MaxHeadWait is over": {
			snap: Snapshot{
				Jobs: []Job{
					wait("a/big", "alice", 4, 0, 0),
					wait("a/s1", "alice", 1, 0, 1),
					wait("a/s2", "alice", 1, 0, 2),
				},
				Nodes:    []Node{gpuNode("n1", 4, 2), gpuNode("n2", 4, 2)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: 0,
			},
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/big": "4 GPUs free but at most 2 on one node, needs 4; first in line, so no job ranked below it starts before it",
					"a/s1":  "held behind a/big, which waits for 4 GPUs",
					"a/s2":  "held behind a/big, which waits for 4 GPUs",
				},
				Head: "a/big", Blocking: true, Free: 4,
			},
		},
		"a job larger than every node never becomes head": {
			snap: Snapshot{
				Jobs: []Job{
					wait("a/huge", "alice", 6, 1, 0),
					wait("a/small", "alice", 1, 0, 1),
					wait("b/1", "bob", 1, 0, 2),
				},
				Nodes:    []Node{gpuNode("n1", 4, 0), gpuNode("n2", 4, 0)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: 0,
			},
			// 7 GPUs are free in all when a/huge's turn comes, yet no node has 6. With a zero
			// MaxHeadWait a head would block a/small at once.
			want: nodeOutcome{
				Admit:   map[string]string{"b/1": "n1", "a/small": "n1"},
				Waiting: map[string]string{"a/huge": "needs 6 GPUs but the largest GPU node has 4"},
				Free:    6,
			},
		},
		"no GPU node is ready": {
			snap: Snapshot{
				Jobs:     []Job{runs("b/run", "bob", 2, 0, "gone", ago(hour)), wait("a/1", "alice", 1, 0, 1)},
				Nodes:    []Node{},
				Capacity: -1, Now: nodeNow, MaxHeadWait: 0,
			},
			want: nodeOutcome{Waiting: map[string]string{"a/1": "no GPU node is ready"}},
		},
		"the capacity bounds the GPUs the lab's jobs hold across nodes": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/run", "bob", 2, 0, "n1", time.Time{}),
					wait("c/1", "carol", 1, 0, 1),
					wait("a/1", "alice", 2, 0, 5),
				},
				Nodes:    []Node{gpuNode("n1", 4, 0), gpuNode("n2", 4, 0)},
				Capacity: 3, Now: nodeNow, MaxHeadWait: hour,
			},
			// 5 GPUs are free on the nodes but the lab may hold 3: 2 held + c/1.
			want: nodeOutcome{
				Admit:   map[string]string{"c/1": "n1"},
				Waiting: map[string]string{"a/1": "0 GPUs free, needs 2"},
				Head:    "a/1", Wakeup: nodeNow.Add(hour),
			},
		},
		"a job above the capacity never becomes head though a node could hold it": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 3, 0, 0), wait("a/2", "alice", 1, 0, 1)},
				Nodes:    []Node{gpuNode("n1", 8, 0)},
				Capacity: 2, Now: nodeNow, MaxHeadWait: 0,
			},
			want: nodeOutcome{
				Admit:   map[string]string{"a/2": "n1"},
				Waiting: map[string]string{"a/1": "needs 3 GPUs but the capacity is 2"},
				Free:    1,
			},
		},
		"a job on a node that is not ready counts against the capacity, not a node": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/run", "bob", 2, 0, "gone", time.Time{}),
					wait("a/1", "alice", 1, 0, 1),
					wait("a/2", "alice", 1, 0, 2),
					wait("a/3", "alice", 1, 0, 3),
				},
				Nodes:    []Node{gpuNode("n1", 4, 0)},
				Capacity: 4, Now: nodeNow, MaxHeadWait: hour,
			},
			// n1 has 4 free GPUs, the capacity only 2 more.
			want: nodeOutcome{
				Admit:   map[string]string{"a/1": "n1", "a/2": "n1"},
				Waiting: map[string]string{"a/3": "0 GPUs free, needs 1"},
				Head:    "a/3", Wakeup: nodeNow.Add(hour),
			},
		},
		"a negative capacity is no bound: the node is fully usable": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/run", "bob", 2, 0, "gone", time.Time{}),
					wait("a/1", "alice", 1, 0, 1),
					wait("a/2", "alice", 1, 0, 2),
					wait("a/3", "alice", 1, 0, 3),
				},
				Nodes:    []Node{gpuNode("n1", 4, 0)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour,
			},
			want: nodeOutcome{Admit: map[string]string{"a/1": "n1", "a/2": "n1", "a/3": "n1"}, Free: 1},
		},
		"an over-committed node admits nothing": {
			snap: Snapshot{
				Jobs:     []Job{runs("b/run", "bob", 2, 0, "n1", time.Time{}), wait("a/1", "alice", 1, 0, 5)},
				Nodes:    []Node{gpuNode("n1", 2, 1)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour,
			},
			want: nodeOutcome{
				Waiting: map[string]string{"a/1": "0 GPUs free, needs 1"},
				Head:    "a/1", Wakeup: nodeNow.Add(hour),
			},
		},
		"pool mode: Job.Node plays no part and admitted jobs get no node": {
			snap: Snapshot{
				Jobs:     []Job{runs("b/run", "bob", 2, 0, "n9", time.Time{}), wait("a/1", "alice", 2, 0, 5)},
				Capacity: 4, Now: nodeNow, MaxHeadWait: hour,
			},
			want: nodeOutcome{Admit: map[string]string{"a/1": ""}},
		},
	}
	runNodeCases(t, cases)
}

func TestDecideBackoff(t *testing.T) {
	cases := map[string]nodeCase{
		"a backing-off job is passed by the jobs behind it and is not head": {
			snap: Snapshot{
				Jobs: []Job{
					backoff(wait("a/1", "alice", 2, 0, 0), nodeNow.Add(2*time.Minute)),
					wait("a/2", "alice", 1, 0, 1),
				},
				Nodes:    []Node{gpuNode("n1", 4, 0)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: 0,
			},
			// a/1 would fit; as head with a zero MaxHeadWait it would block a/2.
			want: nodeOutcome{
				Admit:   map[string]string{"a/2": "n1"},
				Waiting: map[string]string{"a/1": "backing off after a failed start until 2025-03-01T22:02:00Z"},
				Wakeup:  nodeNow.Add(2 * time.Minute), Free: 3,
			},
		},
		"the backoff is over at NotBefore": {
			snap: Snapshot{
				Jobs: []Job{
					backoff(wait("a/1", "alice", 2, 0, 0), nodeNow),
					wait("a/2", "alice", 1, 0, 1),
				},
				Nodes:    []Node{gpuNode("n1", 4, 0)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: 0,
			},
			want: nodeOutcome{Admit: map[string]string{"a/1": "n1", "a/2": "n1"}, Free: 1},
		},
		"a backoff in the past is over": {
			snap: Snapshot{
				Jobs: []Job{
					backoff(wait("a/1", "alice", 2, 0, 0), ago(time.Hour)),
					wait("a/2", "alice", 1, 0, 1),
				},
				Nodes:    []Node{gpuNode("n1", 4, 0)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: 0,
			},
			want: nodeOutcome{Admit: map[string]string{"a/1": "n1", "a/2": "n1"}, Free: 1},
		},
		"wakeup at the end of the backoff when it comes before the head deadline": {
			snap: Snapshot{
				Jobs: []Job{
					runs("x/run", "xavier", 2, 0, "", time.Time{}),
					backoff(wait("a/1", "alice", 1, 0, 1), nodeNow.Add(5*time.Minute)),
					wait("b/1", "bob", 1, 0, 2),
				},
				Capacity: 2, Now: nodeNow, MaxHeadWait: 10 * time.Minute,
			},
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "backing off after a failed start until 2025-03-01T22:05:00Z",
					"b/1": "0 GPUs free, needs 1",
				},
				Head: "b/1", Wakeup: nodeNow.Add(5 * time.Minute),
			},
		},
		"wakeup at the head deadline when it comes before the end of the backoff": {
			snap: Snapshot{
				Jobs: []Job{
					runs("x/run", "xavier", 2, 0, "", time.Time{}),
					backoff(wait("a/1", "alice", 1, 0, 1), nodeNow.Add(20*time.Minute)),
					wait("b/1", "bob", 1, 0, 2),
				},
				Capacity: 2, Now: nodeNow, MaxHeadWait: 10 * time.Minute,
			},
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "backing off after a failed start until 2025-03-01T22:20:00Z",
					"b/1": "0 GPUs free, needs 1",
				},
				Head: "b/1", Wakeup: nodeNow.Add(10 * time.Minute),
			},
		},
		"a backing-off job does not preempt": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/1", "bob", 2, 0, "n1", ago(time.Hour)),
					runs("b/2", "bob", 2, 1, "n1", ago(time.Hour)),
					backoff(wait("a/1", "alice", 2, 0, 5), nodeNow.Add(time.Minute)),
				},
				Nodes:    []Node{gpuNode("n1", 4, 0)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: -1, MinRuntime: 10 * time.Minute,
			},
			want: nodeOutcome{
				Waiting: map[string]string{"a/1": "backing off after a failed start until 2025-03-01T22:01:00Z"},
				Wakeup:  nodeNow.Add(time.Minute),
			},
		},
		"behind a blocking head a backing-off job is held, with no wakeup of its own": {
			snap: Snapshot{
				Jobs: []Job{
					wait("a/big", "alice", 4, 0, 0),
					backoff(wait("a/s1", "alice", 1, 0, 1), nodeNow.Add(time.Minute)),
				},
				Nodes:    []Node{gpuNode("n1", 4, 2), gpuNode("n2", 4, 2)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: 0,
			},
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/big": "4 GPUs free but at most 2 on one node, needs 4; first in line, so no job ranked below it starts before it",
					"a/s1":  "held behind a/big, which waits for 4 GPUs",
				},
				Head: "a/big", Blocking: true, Free: 4,
			},
		},
	}
	runNodeCases(t, cases)
}

func TestDecidePreemption(t *testing.T) {
	const minRun = 10 * time.Minute
	long := ago(time.Hour)
	// snap is a node-mode snapshot with no capacity bound, no head blocking and the given policy.
	snap := func(p Policy, nodes []Node, jobs ...Job) Snapshot {
		return Snapshot{
			Jobs: jobs, Nodes: nodes, Capacity: -1, Now: nodeNow, MaxHeadWait: -1,
			Preemption: p, MinRuntime: minRun,
		}
	}
	with := func(s Snapshot, f func(*Snapshot)) Snapshot {
		f(&s)
		return s
	}
	// basic: n1 is full; order b/1(2, t0) a/1(2, t5) b/2(4): a/1 may evict b/2.
	basic := func(p Policy, b2Started time.Time) Snapshot {
		return snap(p, []Node{gpuNode("n1", 4, 0)},
			runs("b/1", "bob", 2, 0, "n1", long),
			runs("b/2", "bob", 2, 1, "n1", b2Started),
			wait("a/1", "alice", 2, 0, 5),
		)
	}
	evictsB2 := nodeOutcome{
		Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n1"},
		Preemptions: []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"b/2"}}},
		Reserved:    map[string]string{"a/1": "n1"},
	}
	noEviction := func(wakeup time.Time) nodeOutcome {
		return nodeOutcome{
			Waiting: map[string]string{"a/1": "0 GPUs free, needs 2"},
			Head:    "a/1", Wakeup: wakeup,
		}
	}
	// later: alice's second GPU (FirstGPU 2) waits; order a/0 b/1 b/2 a/1 b/3.
	later := func(p Policy) Snapshot {
		return snap(p, []Node{gpuNode("n1", 3, 0), gpuNode("n2", 1, 0)},
			runs("b/1", "bob", 1, 0, "n1", long),
			runs("b/2", "bob", 1, 1, "n1", long),
			runs("b/3", "bob", 1, 2, "n1", long),
			runs("a/0", "alice", 1, 0, "n2", long),
			wait("a/1", "alice", 1, 0, 5),
		)
	}
	// blocked: order b/1(2) a/1(4, t0) a/2(5, t1) b/2(5, t9). a/1 finds no victim (b/1 ranks above
	// it, n2 is too small for it); a/2 may evict b/2 on n2 unless the head a/1 blocks it.
	blocked := func(maxWait time.Duration) Snapshot {
		return with(snap(PreemptRank, []Node{gpuNode("n1", 4, 2), gpuNode("n2", 3, 0)},
			runs("b/1", "bob", 2, 0, "n1", long),
			runs("b/2", "bob", 3, 9, "n2", long),
			wait("a/1", "alice", 4, 0, 0),
			wait("a/2", "alice", 1, 0, 1),
		), func(s *Snapshot) { s.MaxHeadWait = maxWait })
	}

	twoPreemptors := nodeOutcome{
		Waiting: map[string]string{
			"a/1": "preempting 1 lower-ranked job(s) on node n1",
			"c/1": "preempting 1 lower-ranked job(s) on node n1",
		},
		Preemptions: []Preemption{
			{Preemptor: "a/1", Node: "n1", Victims: []string{"b/3"}},
			{Preemptor: "c/1", Node: "n1", Victims: []string{"b/2"}},
		},
		Reserved: map[string]string{"a/1": "n1", "c/1": "n1"},
	}

	cases := map[string]nodeCase{
		"first-GPU policy: a first-GPU job evicts the lowest-ranked running job": {
			snap: basic(PreemptFirstGPU, long), want: evictsB2,
		},
		"the zero policy is first-GPU": {
			snap: with(basic(PreemptFirstGPU, long), func(s *Snapshot) { s.Preemption = Policy(0) }), want: evictsB2,
		},
		"a capacity bound that is not reached changes nothing": {
			snap: with(basic(PreemptFirstGPU, long), func(s *Snapshot) { s.Capacity = 8 }), want: evictsB2,
		},
		"rank policy: a first-GPU job evicts too": {
			snap: basic(PreemptRank, long), want: evictsB2,
		},
		"never policy: nobody is evicted": {
			snap: basic(PreemptNever, long), want: noEviction(time.Time{}),
		},
		"first-GPU policy: a user's later job evicts nobody": {
			snap: later(PreemptFirstGPU),
			want: nodeOutcome{Waiting: map[string]string{"a/1": "0 GPUs free, needs 1"}, Head: "a/1"},
		},
		"rank policy: a user's later job evicts a job ranked below it": {
			snap: later(PreemptRank),
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n1"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"b/3"}}},
				Reserved:    map[string]string{"a/1": "n1"},
			},
		},
		"a job ranked above the waiting one is never evicted": {
			snap: snap(PreemptRank, []Node{gpuNode("n1", 2, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				wait("a/1", "alice", 2, 0, 5),
			),
			want: noEviction(time.Time{}),
		},
		"the lowest-ranked jobs first, and no more than needed": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 5, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				runs("b/2", "bob", 1, 1, "n1", long),
				runs("b/3", "bob", 1, 2, "n1", long),
				runs("b/4", "bob", 1, 3, "n1", long),
				wait("a/1", "alice", 2, 0, 5),
			),
			// Order b/1 a/1 b/2 b/3 b/4: b/2 keeps running.
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 2 lower-ranked job(s) on node n1"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"b/4", "b/3"}}},
				Reserved:    map[string]string{"a/1": "n1"},
			},
		},
		"a lower-ranked job that is not needed is spared": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 4, 0)},
				runs("c/1", "carol", 1, 0, "n1", long),
				runs("b/1", "bob", 2, 1, "n1", long),
				runs("b/2", "bob", 1, 2, "n1", long),
				wait("a/1", "alice", 2, 0, 0),
			),
			// Order c/1 a/1 b/1 b/2. b/2 alone frees too little, b/2 and b/1 too much: b/1 alone
			// is enough, so b/2 keeps running.
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n1"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"b/1"}}},
				Reserved:    map[string]string{"a/1": "n1"},
			},
		},
		"GPUs already free on the node count toward the preemptor": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 4, 0)},
				runs("c/run", "carol", 2, 0, "n1", long),
				runs("c/2", "carol", 1, 1, "n1", long),
				wait("a/1", "alice", 2, 0, 5),
			),
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n1"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"c/2"}}},
				Reserved:    map[string]string{"a/1": "n1"},
			},
		},
		"the node needing the fewest victims, though others rank lower": {
			snap: snap(PreemptFirstGPU,
				[]Node{gpuNode("n1", 2, 0), gpuNode("n2", 2, 0), gpuNode("n3", 1, 0)},
				runs("b/1", "bob", 1, 1, "n3", long),
				runs("b/2", "bob", 1, 2, "n1", long),
				runs("b/3", "bob", 1, 3, "n1", long),
				runs("c/1", "carol", 2, 1, "n2", long),
				wait("a/1", "alice", 2, 0, 0),
			),
			// Order b/1 a/1 c/1 b/2 b/3: n1 needs b/3 and b/2, n2 only c/1.
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n2"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n2", Victims: []string{"c/1"}}},
				Reserved:    map[string]string{"a/1": "n2"},
			},
		},
		"as many victims on each node: the node whose victims rank lowest, not the first name": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 2, 0), gpuNode("n2", 2, 0)},
				runs("c/1", "carol", 2, 1, "n1", long),
				runs("d/1", "dave", 2, 3, "n2", long),
				wait("a/1", "alice", 2, 0, 0),
			),
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n2"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n2", Victims: []string{"d/1"}}},
				Reserved:    map[string]string{"a/1": "n2"},
			},
		},
		"victims are taken on one node only": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 2, 0), gpuNode("n2", 2, 0)},
				runs("c/run", "carol", 1, 0, "n1", long),
				runs("c/2", "carol", 1, 1, "n1", long),
				runs("d/run", "dave", 1, 0, "n2", long),
				runs("d/2", "dave", 1, 2, "n2", long),
				wait("a/1", "alice", 2, 0, 0),
			),
			// c/2 and d/2 rank below a/1 and together hold 2 GPUs, but on two nodes.
			want: noEviction(time.Time{}),
		},
		"foreign pods are never evicted": {
			snap: snap(PreemptRank, []Node{gpuNode("n1", 2, 2)}, wait("a/1", "alice", 1, 0, 0)),
			want: nodeOutcome{Waiting: map[string]string{"a/1": "0 GPUs free, needs 1"}, Head: "a/1"},
		},
		"a job younger than MinRuntime is spared; wakeup when it may be evicted": {
			snap: basic(PreemptFirstGPU, ago(4*time.Minute)),
			want: noEviction(nodeNow.Add(6 * time.Minute)),
		},
		"the head deadline wakes up first when it comes before": {
			snap: with(basic(PreemptFirstGPU, ago(4*time.Minute)), func(s *Snapshot) { s.MaxHeadWait = 2 * time.Minute }),
			want: noEviction(nodeNow.Add(2 * time.Minute)),
		},
		"a job that ran exactly MinRuntime may be evicted": {
			snap: basic(PreemptFirstGPU, ago(minRun)), want: evictsB2,
		},
		"a job that has not started is never evicted and sets no wakeup": {
			snap: basic(PreemptFirstGPU, time.Time{}), want: noEviction(time.Time{}),
		},
		"young lower-ranked jobs are skipped for an older one ranked higher": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 4, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				runs("b/2", "bob", 1, 1, "n1", ago(3*time.Minute)),
				runs("b/3", "bob", 1, 2, "n1", ago(8*time.Minute)),
				wait("a/1", "alice", 1, 0, 5),
			),
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n1"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"b/1"}}},
				Reserved:    map[string]string{"a/1": "n1"},
			},
		},
		"only young or unstarted jobs: wakeup when the first becomes evictable": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 4, 0)},
				runs("b/1", "bob", 2, 0, "n1", time.Time{}),
				runs("b/2", "bob", 1, 1, "n1", ago(3*time.Minute)),
				runs("b/3", "bob", 1, 2, "n1", ago(8*time.Minute)),
				wait("a/1", "alice", 1, 0, 5),
			),
			want: nodeOutcome{
				Waiting: map[string]string{"a/1": "0 GPUs free, needs 1"},
				Head:    "a/1", Wakeup: nodeNow.Add(2 * time.Minute),
			},
		},
		"a job being evicted frees GPUs the preemptor counts on: it evicts no one": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 6, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				runs("b/2", "bob", 2, 1, "n1", long),
				evicting(runs("b/3", "bob", 2, 2, "n1", long)),
				wait("a/1", "alice", 2, 0, 5),
			),
			// Order b/1 a/1 b/2 b/3. b/3's 2 GPUs will be free: a/1 reserves them.
			want: nodeOutcome{
				Waiting:  map[string]string{"a/1": "waiting for GPUs being freed on node n1"},
				Reserved: map[string]string{"a/1": "n1"},
			},
		},
		"a job already being evicted is not chosen again, but its GPUs count": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 6, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				runs("b/2", "bob", 2, 1, "n1", long),
				evicting(runs("b/3", "bob", 2, 2, "n1", long)),
				wait("a/1", "alice", 3, 0, 5),
			),
			// Order b/1 a/1(3) b/2(4) b/3(6). b/3's 2 GPUs are not enough; b/2's make 4.
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n1"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/1": "n1"},
			},
		},
		"two preemptors in one decision take different victims": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 1, 0), gpuNode("n2", 1, 0), gpuNode("n3", 1, 0)},
				runs("b/1", "bob", 1, 0, "n3", long),
				runs("b/2", "bob", 1, 1, "n1", long),
				runs("b/3", "bob", 1, 2, "n2", long),
				wait("a/1", "alice", 1, 0, 5),
				wait("c/1", "carol", 1, 0, 6),
			),
			// Order b/1 a/1 c/1 b/2 b/3: a/1 takes the lowest, b/3 on n2; c/1 is left b/2.
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "preempting 1 lower-ranked job(s) on node n2",
					"c/1": "preempting 1 lower-ranked job(s) on node n1",
				},
				Preemptions: []Preemption{
					{Preemptor: "a/1", Node: "n2", Victims: []string{"b/3"}},
					{Preemptor: "c/1", Node: "n1", Victims: []string{"b/2"}},
				},
				Reserved: map[string]string{"a/1": "n2", "c/1": "n1"},
			},
		},
		"two preemptors on one node: the second counts what the first's victims leave over": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 4, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				runs("b/2", "bob", 1, 1, "n1", long),
				runs("b/3", "bob", 1, 2, "n1", long),
				wait("a/1", "alice", 1, 0, 5),
				wait("c/1", "carol", 1, 0, 6),
			),
			// Order a/1 c/1 b/1(2) b/2(3) b/3(4). a/1 evicts b/3; c/1 then evicts b/2, not b/1.
			want: twoPreemptors,
		},
		"two preemptors in the pool: the second counts what the first's victims leave over": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/1", "bob", 2, 0, "", long),
					runs("b/2", "bob", 1, 1, "", long),
					runs("b/3", "bob", 1, 2, "", long),
					wait("a/1", "alice", 1, 0, 5),
					wait("c/1", "carol", 1, 0, 6),
				},
				Capacity: 4, Now: nodeNow, MaxHeadWait: -1, MinRuntime: minRun,
			},
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "preempting 1 lower-ranked job(s)",
					"c/1": "preempting 1 lower-ranked job(s)",
				},
				Preemptions: []Preemption{
					{Preemptor: "a/1", Victims: []string{"b/3"}},
					{Preemptor: "c/1", Victims: []string{"b/2"}},
				},
				Reserved: map[string]string{"a/1": "", "c/1": ""},
			},
		},
		"next decision, first victim gone: the waiting preemptor evicts no more, the other only what it needs": {
			// b/3 is gone; its GPU is still being freed. a/1 holds its claim.
			snap: with(snap(PreemptFirstGPU, []Node{stopping("n1", 4, 1, 1)},
				runs("b/1", "bob", 2, 0, "n1", long),
				runs("b/2", "bob", 1, 1, "n1", long),
				wait("a/1", "alice", 1, 0, 5),
				wait("c/1", "carol", 1, 0, 6),
			), func(s *Snapshot) { s.Reserved = map[string]string{"a/1": "n1"} }),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for the jobs it preempted to stop on node n1",
					"c/1": "preempting 1 lower-ranked job(s) on node n1",
				},
				Preemptions: []Preemption{{Preemptor: "c/1", Node: "n1", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/1": "n1", "c/1": "n1"},
			},
			waitingOn: map[string]string{"a/1": "n1", "c/1": "n1"},
		},
		"next decision, both victims stopping: both preemptors wait and evict no more": {
			snap: with(snap(PreemptFirstGPU, []Node{stopping("n1", 4, 1, 1)},
				runs("b/1", "bob", 2, 0, "n1", long),
				evicting(runs("b/2", "bob", 1, 1, "n1", long)),
				wait("a/1", "alice", 1, 0, 5),
				wait("c/1", "carol", 1, 0, 6),
			), func(s *Snapshot) { s.Reserved = map[string]string{"a/1": "n1", "c/1": "n1"} }),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for the jobs it preempted to stop on node n1",
					"c/1": "waiting for the jobs it preempted to stop on node n1",
				},
				Reserved: map[string]string{"a/1": "n1", "c/1": "n1"},
			},
		},
		"next decision, first victim stopped: the higher-ranked preemptor starts on the freed GPU": {
			// Claims are made in rank order, each out of the GPUs free now first: a/1 gets the
			// GPU b/3 freed, c/1 the one b/2 is freeing.
			snap: with(snap(PreemptFirstGPU, []Node{gpuNode("n1", 4, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				evicting(runs("b/2", "bob", 1, 1, "n1", long)),
				wait("a/1", "alice", 1, 0, 5),
				wait("c/1", "carol", 1, 0, 6),
			), func(s *Snapshot) { s.Reserved = map[string]string{"a/1": "n1", "c/1": "n1"} }),
			want: nodeOutcome{
				Admit:    map[string]string{"a/1": "n1"},
				Waiting:  map[string]string{"c/1": "waiting for the jobs it preempted to stop on node n1"},
				Reserved: map[string]string{"c/1": "n1"},
			},
		},
		"the preemptor keeps the GPUs of its node: a lower-ranked job does not take them": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 4, 0)},
				runs("c/run", "carol", 1, 0, "n1", long),
				runs("b/2", "bob", 2, 9, "n1", long),
				wait("a/1", "alice", 2, 0, 5),
				wait("a/2", "alice", 1, 0, 6),
			),
			// Order c/run a/1 b/2 a/2. One GPU is free now, and a/2 would fit on it; a/1's claim takes
			// it first, then one of the two b/2 frees.
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "preempting 1 lower-ranked job(s) on node n1",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:        "a/2",
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/1": "n1"},
			},
		},
		"the victims' GPU the preemptor does not need goes to the next preemptor, which evicts no one": {
			snap: snap(PreemptRank, []Node{gpuNode("n1", 4, 0)},
				runs("c/run", "carol", 1, 0, "n1", long),
				runs("b/2", "bob", 2, 9, "n1", long),
				wait("a/1", "alice", 2, 0, 5),
				wait("a/2", "alice", 1, 0, 6),
			),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "preempting 1 lower-ranked job(s) on node n1",
					"a/2": "waiting for GPUs being freed on node n1",
				},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/1": "n1", "a/2": "n1"},
			},
		},
		"with the capacity reached, the victims come from where the preemptor fits": {
			snap: with(snap(PreemptFirstGPU, []Node{gpuNode("n1", 4, 0), gpuNode("n2", 4, 0)},
				runs("c/run", "carol", 2, 0, "n1", long),
				runs("b/2", "bob", 2, 9, "n2", long),
				wait("a/1", "alice", 2, 0, 5),
			), func(s *Snapshot) { s.Capacity = 4 }),
			// n1 has room for a/1 but the lab's share is used up: evicting b/2 frees both.
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n2"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n2", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/1": "n2"},
			},
		},
		"a job larger than every node evicts nobody": {
			snap: snap(PreemptRank, []Node{gpuNode("n1", 2, 0)},
				runs("b/1", "bob", 4, 0, "gone", long),
				runs("b/2", "bob", 2, 1, "n1", long),
				wait("a/1", "alice", 4, 0, 0),
			),
			want: nodeOutcome{Waiting: map[string]string{"a/1": "needs 4 GPUs but the largest GPU node has 2"}},
		},
		"a blocking head keeps the jobs behind it from preempting": {
			snap: blocked(0),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "0 GPUs free, needs 4; first in line, so no job ranked below it starts before it",
					"a/2": "held behind a/1, which waits for 4 GPUs",
				},
				Head: "a/1", Blocking: true,
			},
		},
		"behind a head that does not block, a job preempts": {
			snap: blocked(-1),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "0 GPUs free, needs 4",
					"a/2": "preempting 1 lower-ranked job(s) on node n2",
				},
				Head:        "a/1",
				Preemptions: []Preemption{{Preemptor: "a/2", Node: "n2", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/2": "n2"},
			},
		},
		"pool mode: the preemptor evicts in the pool": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/1", "bob", 2, 0, "", long),
					runs("b/2", "bob", 2, 1, "", long),
					wait("a/1", "alice", 2, 0, 5),
				},
				Capacity: 4, Now: nodeNow, MaxHeadWait: -1, MinRuntime: minRun,
			},
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s)"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/1": ""},
			},
		},
		"pool mode: never more than the capacity": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/1", "bob", 2, 0, "", long),
					runs("b/2", "bob", 2, 1, "", long),
					wait("a/1", "alice", 5, 0, 5),
				},
				Capacity: 4, Now: nodeNow, MaxHeadWait: -1, MinRuntime: minRun, Preemption: PreemptRank,
			},
			want: nodeOutcome{Waiting: map[string]string{"a/1": "needs 5 GPUs but the capacity is 4"}},
		},
	}
	runNodeCases(t, cases)
}

func TestDecideReserved(t *testing.T) {
	long := ago(time.Hour)
	snap := func(reserved map[string]string, nodes []Node, jobs ...Job) Snapshot {
		return Snapshot{
			Jobs: jobs, Nodes: nodes, Capacity: -1, Now: nodeNow, MaxHeadWait: -1,
			MinRuntime: 10 * time.Minute, Reserved: reserved,
		}
	}
	// stillRunning: a/1 evicted b/2, which has not stopped yet; b/3 could be evicted too.
	// Order b/1(2) a/1(2) a/2(3) b/2(4) b/3(6).
	stillRunning := func(reserved map[string]string) Snapshot {
		return snap(reserved, []Node{gpuNode("n1", 6, 0)},
			runs("b/1", "bob", 2, 0, "n1", long),
			evicting(runs("b/2", "bob", 2, 1, "n1", long)),
			runs("b/3", "bob", 2, 2, "n1", long),
			wait("a/1", "alice", 2, 0, 5),
			wait("a/2", "alice", 1, 0, 6),
		)
	}
	// Without its reservation, a/1 finds b/2's GPUs being freed and reserves them again.
	reservesAgain := nodeOutcome{
		Waiting: map[string]string{
			"a/1": "waiting for GPUs being freed on node n1",
			"a/2": "0 GPUs free, needs 1",
		},
		Head:     "a/2",
		Reserved: map[string]string{"a/1": "n1"},
	}
	// partlyGone: a/1 evicted b/2 and b/3; b/3 is gone, so one GPU of n1 is free.
	// Order b/1(2) a/1(2) b/2(3, t1) a/2(3, t6).
	partlyGone := func(reserved map[string]string, nodes ...Node) Snapshot {
		return snap(reserved, append([]Node{gpuNode("n1", 4, 0)}, nodes...),
			runs("b/1", "bob", 2, 0, "n1", long),
			evicting(runs("b/2", "bob", 1, 1, "n1", long)),
			wait("a/1", "alice", 2, 0, 5),
			wait("a/2", "alice", 1, 0, 6),
		)
	}

	cases := map[string]nodeCase{
		"without its reservation the preemptor counts on its victims being evicted, and evicts no more": {
			snap: stillRunning(nil), want: reservesAgain,
		},
		"with its reservation it waits for its victims and evicts no more": {
			snap: stillRunning(map[string]string{"a/1": "n1"}),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for the jobs it preempted to stop on node n1",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "a/2",
				Reserved: map[string]string{"a/1": "n1"},
			},
			waitingOn: map[string]string{"a/1": "n1", "a/2": ""},
		},
		"a reservation on a node that is not ready is void": {
			snap: stillRunning(map[string]string{"a/1": "gone"}), want: reservesAgain,
		},
		"a reservation on a node that is not ready is void: the preemptor evicts anew": {
			snap: snap(map[string]string{"a/1": "gone"}, []Node{gpuNode("n1", 4, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				runs("b/2", "bob", 2, 1, "n1", long),
				wait("a/1", "alice", 2, 0, 5),
			),
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n1"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/1": "n1"},
			},
		},
		"without the reservation the GPU freed and the one being freed are reserved again": {
			snap: partlyGone(nil),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for GPUs being freed on node n1",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "a/2",
				Reserved: map[string]string{"a/1": "n1"},
			},
		},
		"victims partly gone: the GPUs they freed stay reserved": {
			snap: partlyGone(map[string]string{"a/1": "n1"}),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for the jobs it preempted to stop on node n1",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "a/2",
				Reserved: map[string]string{"a/1": "n1"},
			},
			waitingOn: map[string]string{"a/1": "n1"},
		},
		"a preemptor that fits on another node starts there and frees its reservation": {
			snap: partlyGone(map[string]string{"a/1": "n1"}, gpuNode("n2", 2, 0)),
			want: nodeOutcome{Admit: map[string]string{"a/1": "n2", "a/2": "n1"}},
		},
		"victims gone: admitted on its reserved node rather than the best fit": {
			snap: snap(map[string]string{"a/1": "n1"}, []Node{gpuNode("n1", 8, 0), gpuNode("n2", 2, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				wait("a/1", "alice", 2, 0, 5),
				wait("a/2", "alice", 1, 0, 6),
			),
			want: nodeOutcome{Admit: map[string]string{"a/1": "n1", "a/2": "n2"}, Free: 4 + 1},
		},
		"the reservation of a job no longer waiting, or with no GPUs, is void": {
			snap: snap(map[string]string{"a/1": "n1", "c/cpu": "n1", "x/gone": "n1"}, []Node{gpuNode("n1", 6, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				runs("a/1", "alice", 2, 5, "n1", nodeNow),
				wait("a/2", "alice", 2, 0, 6),
				wait("c/cpu", "carol", 0, 0, 1),
			),
			want: nodeOutcome{Admit: map[string]string{"a/2": "n1"}},
		},
		"a reserved job that starts leaves no reservation behind": {
			snap: snap(map[string]string{"a/1": "n1"}, []Node{gpuNode("n1", 4, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				wait("a/1", "alice", 2, 0, 5),
			),
			want: nodeOutcome{Admit: map[string]string{"a/1": "n1"}}, // Reserved nil, not empty
		},
		"a claim takes the GPUs free now first: the reserved job still waits for the rest": {
			// One GPU of n1 is free now and two are being freed (Terminating): a/1 claims the free
			// one and one of those, and still waits; a/2 is left none free now.
			snap: snap(map[string]string{"a/1": "n1"}, []Node{stopping("n1", 5, 2, 2)},
				runs("b/1", "bob", 2, 0, "n1", long),
				wait("a/1", "alice", 2, 0, 5),
				wait("a/2", "alice", 1, 0, 6),
			),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for the jobs it preempted to stop on node n1",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "a/2",
				Reserved: map[string]string{"a/1": "n1"},
			},
		},
		"a claim takes what it needs; GPUs being freed elsewhere go to the next job that may preempt": {
			snap: func() Snapshot {
				s := snap(map[string]string{"a/1": "n1"}, []Node{stopping("n1", 4, 1, 1), stopping("n2", 2, 2, 2)},
					runs("b/1", "bob", 3, 0, "n1", long),
					wait("a/1", "alice", 1, 0, 5),
					wait("a/2", "alice", 1, 0, 6),
				)
				s.Preemption = PreemptRank
				return s
			}(),
			// Nothing is free now; a/1's claim is the GPU being freed on n1, a/2 reserves one of
			// the two being freed on n2.
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for the jobs it preempted to stop on node n1",
					"a/2": "waiting for GPUs being freed on node n2",
				},
				Reserved: map[string]string{"a/1": "n1", "a/2": "n2"},
			},
		},
		"behind a blocking head a reserved job keeps its claim": {
			snap: func() Snapshot {
				s := snap(map[string]string{"a/1": "n1"}, []Node{gpuNode("n1", 4, 0)},
					runs("b/1", "bob", 1, 0, "n1", long),
					wait("h/1", "heidi", 3, 0, 0),
					wait("a/1", "alice", 3, 0, 5),
				)
				s.MaxHeadWait = 0
				return s
			}(),
			// Order b/1 h/1(3) a/1(3): a/1's claim holds the 3 free GPUs, h/1 does not fit.
			want: nodeOutcome{
				Waiting: map[string]string{
					"h/1": "0 GPUs free, needs 3; first in line, so no job ranked below it starts before it",
					"a/1": "held behind h/1, which waits for 3 GPUs",
				},
				Head: "h/1", Blocking: true,
				Reserved: map[string]string{"a/1": "n1"},
			},
		},
		"two reservations on one node: the higher-ranked takes the free GPU and starts": {
			snap: snap(map[string]string{"a/1": "n1", "c/1": "n1"}, []Node{stopping("n1", 4, 1, 1)},
				runs("b/1", "bob", 2, 0, "n1", long),
				wait("c/1", "carol", 1, 0, 6),
				wait("a/1", "alice", 1, 0, 5),
			),
			want: nodeOutcome{
				Admit:    map[string]string{"a/1": "n1"},
				Waiting:  map[string]string{"c/1": "waiting for the jobs it preempted to stop on node n1"},
				Reserved: map[string]string{"c/1": "n1"},
			},
		},
		"a backing-off preemptor keeps its reservation": {
			snap: snap(map[string]string{"a/1": "n1"}, []Node{gpuNode("n1", 4, 0)},
				runs("b/1", "bob", 2, 0, "n1", long),
				backoff(wait("a/1", "alice", 2, 0, 5), nodeNow.Add(time.Minute)),
				wait("a/2", "alice", 1, 0, 6),
			),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "backing off after a failed start until 2025-03-01T22:01:00Z",
					"a/2": "0 GPUs free, needs 1",
				},
				Head: "a/2", Wakeup: nodeNow.Add(time.Minute),
				Reserved: map[string]string{"a/1": "n1"},
			},
		},
		"a reservation counts against the capacity": {
			snap: func() Snapshot {
				s := snap(map[string]string{"a/1": "n1"}, []Node{gpuNode("n1", 4, 0), gpuNode("n2", 4, 0)},
					runs("b/1", "bob", 2, 0, "n1", long),
					backoff(wait("a/1", "alice", 2, 0, 5), nodeNow.Add(time.Minute)),
					wait("a/2", "alice", 1, 0, 6),
				)
				s.Capacity = 4
				return s
			}(),
			// n2 is empty, but 2 GPUs held and 2 reserved reach the lab's share.
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "backing off after a failed start until 2025-03-01T22:01:00Z",
					"a/2": "0 GPUs free, needs 1",
				},
				Head: "a/2", Wakeup: nodeNow.Add(time.Minute),
				Reserved: map[string]string{"a/1": "n1"},
			},
		},
		"pool mode: the reservation holds pool GPUs, whatever node it names": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/1", "bob", 2, 0, "", long),
					evicting(runs("b/2", "bob", 1, 1, "", long)),
					wait("a/1", "alice", 2, 0, 5),
					wait("a/2", "alice", 1, 0, 6),
				},
				Capacity: 4, Now: nodeNow, MaxHeadWait: -1, Reserved: map[string]string{"a/1": "n1"},
			},
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for the jobs it preempted to stop",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "a/2",
				Reserved: map[string]string{"a/1": ""},
			},
			waitingOn: map[string]string{"a/1": ""}, // the pool: no node, though the claim named n1
		},
		"pool mode: victims gone, the preemptor starts": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/1", "bob", 2, 0, "", long),
					wait("a/1", "alice", 2, 0, 5),
					wait("a/2", "alice", 1, 0, 6),
				},
				Capacity: 4, Now: nodeNow, MaxHeadWait: -1, Reserved: map[string]string{"a/1": ""},
			},
			want: nodeOutcome{
				Admit:   map[string]string{"a/1": ""},
				Waiting: map[string]string{"a/2": "0 GPUs free, needs 1"},
				Head:    "a/2",
			},
		},
	}
	runNodeCases(t, cases)
}

// TestDecideClaimDropped covers a claim its job can no longer use. Claims are judged once, up
// front, in rank order: a claim stands only while the policy still lets its job preempt, the
// claimed node (the pool, in pool mode) can hold the job and so can the capacity bound (none in
// pool mode). A standing claim is kept by its job whenever it does not fit. Any other claim is
// dropped before anyone's turn: it holds no GPUs, so every job, ranked above or below, sees them
// free, and its job goes on as one that never had a claim, even one that gets no turn.
func TestDecideClaimDropped(t *testing.T) {
	long := ago(time.Hour)
	snap := func(p Policy, reserved map[string]string, nodes []Node, jobs ...Job) Snapshot {
		return Snapshot{
			Jobs: jobs, Nodes: nodes, Capacity: -1, Now: nodeNow, MaxHeadWait: -1,
			Preemption: p, MinRuntime: 10 * time.Minute, Reserved: reserved,
		}
	}
	// holdsFree: a/1's victims on n1 are gone and left 2 GPUs free, too few for its 3: its claim
	// holds them and, out of GPUs being freed, one more. Order b/1(2) a/1(3, t5) a/2(4, t6).
	holdsFree := func(p Policy, maxWait time.Duration) Snapshot {
		s := snap(p, map[string]string{"a/1": "n1"}, []Node{gpuNode("n1", 4, 0)},
			runs("b/1", "bob", 2, 0, "n1", long),
			wait("a/1", "alice", 3, 0, 5),
			wait("a/2", "alice", 1, 0, 6),
		)
		s.MaxHeadWait = maxWait
		return s
	}
	// demoted: a/1 held alice's first GPU when it preempted on n1; then a/hi, of higher priority,
	// started on n2 and took ordinal 1. One victim is gone (1 GPU free on n1), one still stopping
	// (Terminating). Order a/hi(1) b/1(2) a/1(2-4) a/2(5).
	demoted := func(p Policy) Snapshot {
		hi := runs("a/hi", "alice", 1, 7, "n2", long)
		hi.Priority = 1
		return snap(p, map[string]string{"a/1": "n1"}, []Node{stopping("n1", 4, 1, 1), gpuNode("n2", 1, 0)},
			hi,
			runs("b/1", "bob", 2, 0, "n1", long),
			wait("a/1", "alice", 3, 0, 5),
			wait("a/2", "alice", 1, 0, 6),
		)
	}

	cases := map[string]nodeCase{
		"first-GPU policy: the claim is kept; the job waits on its node and the GPUs stay its own": {
			snap: holdsFree(PreemptFirstGPU, -1),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for the jobs it preempted to stop on node n1",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "a/2",
				Reserved: map[string]string{"a/1": "n1"},
			},
			waitingOn: map[string]string{"a/1": "n1", "a/2": ""},
		},
		"never policy: a stale claim is dropped, the job waits for GPUs like any other and its GPUs go to the jobs behind": {
			snap: holdsFree(PreemptNever, -1),
			want: nodeOutcome{
				Admit:   map[string]string{"a/2": "n1"},
				Waiting: map[string]string{"a/1": "2 GPUs free, needs 3"},
				Head:    "a/1", Free: 1,
			},
			waitingOn: map[string]string{"a/1": ""},
		},
		"never policy: the job whose stale claim is dropped becomes the head, and blocks once MaxHeadWait is over": {
			snap: holdsFree(PreemptNever, 0),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "2 GPUs free, needs 3; first in line, so no job ranked below it starts before it",
					"a/2": "held behind a/1, which waits for 3 GPUs",
				},
				Head: "a/1", Blocking: true, Free: 2,
			},
			waitingOn: map[string]string{"a/1": ""},
		},
		"never policy: behind a blocking head a stale claim is dropped up front, and the head sees its GPUs": {
			snap: func() Snapshot {
				s := holdsFree(PreemptNever, 0)
				s.Jobs = append(s.Jobs, wait("h/1", "heidi", 3, 0, 0)) // ranks above a/1, does not fit
				return s
			}(),
			// Order b/1(2) h/1(3, t0) a/1(3, t5) a/2(4). a/1 gets no turn, yet its claim is
			// judged before anyone's: dropped, it holds nothing, and h/1 sees n1's 2 free GPUs.
			want: nodeOutcome{
				Waiting: map[string]string{
					"h/1": "2 GPUs free, needs 3; first in line, so no job ranked below it starts before it",
					"a/1": "held behind h/1, which waits for 3 GPUs",
					"a/2": "held behind h/1, which waits for 3 GPUs",
				},
				Head: "h/1", Blocking: true, Free: 2,
			},
			waitingOn: map[string]string{"a/1": ""},
		},
		"never policy: a stale claim no longer blocks a higher-ranked job, which starts": {
			snap: func() Snapshot {
				s := holdsFree(PreemptNever, -1)
				s.Jobs = append(s.Jobs, wait("h/1", "heidi", 2, 0, 0)) // ranks above a/1
				return s
			}(),
			// Order b/1(2, t0) h/1(2, t0) a/1(3) a/2(4). Judged at a/1's turn, the claim would
			// have held n1's 2 free GPUs from h/1; dropped up front, they are h/1's.
			want: nodeOutcome{
				Admit: map[string]string{"h/1": "n1"},
				Waiting: map[string]string{
					"a/1": "0 GPUs free, needs 3",
					"a/2": "0 GPUs free, needs 1",
				},
				Head: "a/1",
			},
			waitingOn: map[string]string{"a/1": ""},
		},
		"first-GPU policy: the same claim stands and holds its GPUs from the higher-ranked job": {
			snap: func() Snapshot {
				s := holdsFree(PreemptFirstGPU, -1)
				s.Jobs = append(s.Jobs, wait("h/1", "heidi", 2, 0, 0))
				return s
			}(),
			// a/1's claim takes n1's 2 free GPUs and one being freed; h/1 may preempt, but b/1,
			// the only job on n1, ranks above it.
			want: nodeOutcome{
				Waiting: map[string]string{
					"h/1": "0 GPUs free, needs 2",
					"a/1": "waiting for the jobs it preempted to stop on node n1",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "h/1",
				Reserved: map[string]string{"a/1": "n1"},
			},
			waitingOn: map[string]string{"h/1": "", "a/1": "n1"},
		},
		"never policy: a backing-off job's stale claim is dropped up front: the job behind it starts": {
			snap: func() Snapshot {
				s := holdsFree(PreemptNever, -1)
				s.Jobs[1] = backoff(s.Jobs[1], nodeNow.Add(time.Minute)) // a/1
				return s
			}(),
			want: nodeOutcome{
				Admit:   map[string]string{"a/2": "n1"},
				Waiting: map[string]string{"a/1": "backing off after a failed start until 2025-03-01T22:01:00Z"},
				Wakeup:  nodeNow.Add(time.Minute), Free: 1,
			},
			waitingOn: map[string]string{"a/1": ""},
		},
		"a claim larger than the capacity is dropped: the job never fits": {
			// n1 holds a/1, but the lab's share of 2 GPUs does not. Order b/1(1) a/1(3, t5) a/2(4, t6).
			snap: func() Snapshot {
				s := snap(PreemptFirstGPU, map[string]string{"a/1": "n1"}, []Node{gpuNode("n1", 4, 0)},
					runs("b/1", "bob", 1, 0, "n1", long),
					wait("a/1", "alice", 3, 0, 5),
					wait("a/2", "alice", 1, 0, 6),
				)
				s.Capacity = 2
				return s
			}(),
			// The claim would have taken the last GPU under the bound; a/2 takes it.
			want: nodeOutcome{
				Admit:   map[string]string{"a/2": "n1"},
				Waiting: map[string]string{"a/1": "needs 3 GPUs but the capacity is 2"},
			},
			waitingOn: map[string]string{"a/1": ""},
		},
		"a claim on a node smaller than the job is dropped: the job never fits": {
			// The nodes shrank since a/1 preempted. Order b/1(1) a/1(4, t5) a/2(5, t6).
			snap: snap(PreemptFirstGPU, map[string]string{"a/1": "n1"}, []Node{gpuNode("n1", 2, 0), gpuNode("n2", 2, 0)},
				runs("b/1", "bob", 1, 0, "n1", long),
				wait("a/1", "alice", 4, 0, 5),
				wait("a/2", "alice", 1, 0, 6),
			),
			// a/2 takes the GPU of n1 the claim held (the best fit).
			want: nodeOutcome{
				Admit:   map[string]string{"a/2": "n1"},
				Waiting: map[string]string{"a/1": "needs 4 GPUs but the largest GPU node has 2"},
				Free:    2,
			},
			waitingOn: map[string]string{"a/1": ""},
		},
		"a claim on a node smaller than the job is dropped: the job preempts on a node that holds it": {
			// Order a/1(4, t0) b/2(4, t9).
			snap: snap(PreemptFirstGPU, map[string]string{"a/1": "n1"}, []Node{gpuNode("n1", 2, 0), gpuNode("n2", 4, 0)},
				runs("b/2", "bob", 4, 9, "n2", long),
				wait("a/1", "alice", 4, 0, 0),
			),
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n2"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n2", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/1": "n2"},
				Free:        2,
			},
			waitingOn: map[string]string{"a/1": "n2"},
		},
		"a claim on a node just the job's size is kept": {
			// a/1's victim b/2 is still stopping on n1. Order a/1(2, t0) b/2(2, t9).
			snap: snap(PreemptFirstGPU, map[string]string{"a/1": "n1"}, []Node{gpuNode("n1", 2, 0)},
				evicting(runs("b/2", "bob", 2, 9, "n1", long)),
				wait("a/1", "alice", 2, 0, 0),
			),
			want: nodeOutcome{
				Waiting:  map[string]string{"a/1": "waiting for the jobs it preempted to stop on node n1"},
				Reserved: map[string]string{"a/1": "n1"},
			},
			waitingOn: map[string]string{"a/1": "n1"},
		},
		"a kept claim names its node, not the best fit for the GPUs being freed": {
			// n1 and n2 both have 2 GPUs being freed; n1 would be the best fit (by name), but
			// a/1's victims stop on n2. Order a/1(2) a/2(3).
			snap: snap(PreemptFirstGPU, map[string]string{"a/1": "n2"}, []Node{stopping("n1", 2, 2, 2), stopping("n2", 4, 4, 2)},
				wait("a/1", "alice", 2, 0, 5),
				wait("a/2", "alice", 1, 0, 6),
			),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for the jobs it preempted to stop on node n2",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "a/2",
				Reserved: map[string]string{"a/1": "n2"},
			},
			waitingOn: map[string]string{"a/1": "n2"},
		},
		"without the claim the same job reserves the best fit": {
			snap: snap(PreemptFirstGPU, nil, []Node{stopping("n1", 2, 2, 2), stopping("n2", 4, 4, 2)},
				wait("a/1", "alice", 2, 0, 5),
				wait("a/2", "alice", 1, 0, 6),
			),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for GPUs being freed on node n1",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "a/2",
				Reserved: map[string]string{"a/1": "n1"},
			},
			waitingOn: map[string]string{"a/1": "n1"},
		},
		"first-GPU policy: a claim whose job no longer starts at its user's first GPU is dropped": {
			snap: demoted(PreemptFirstGPU),
			// a/1 now covers alice's GPUs 2-4: it may not preempt, so it waits like any other
			// job and is the head; the GPU free on n1 goes to a/2.
			want: nodeOutcome{
				Admit:   map[string]string{"a/2": "n1"},
				Waiting: map[string]string{"a/1": "1 GPU free, needs 3"},
				Head:    "a/1",
			},
			waitingOn: map[string]string{"a/1": ""},
		},
		"rank policy: the same claim is kept": {
			snap: demoted(PreemptRank),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for the jobs it preempted to stop on node n1",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "a/2",
				Reserved: map[string]string{"a/1": "n1"},
			},
			waitingOn: map[string]string{"a/1": "n1"},
		},
		"pool mode: a claim larger than the pool is dropped: the job never fits": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/1", "bob", 1, 0, "", long),
					wait("a/1", "alice", 3, 0, 5),
					wait("a/2", "alice", 1, 0, 6),
				},
				Capacity: 2, Now: nodeNow, MaxHeadWait: -1, Preemption: PreemptRank, Reserved: map[string]string{"a/1": ""},
			},
			want: nodeOutcome{
				Admit:   map[string]string{"a/2": ""},
				Waiting: map[string]string{"a/1": "needs 3 GPUs but the capacity is 2"},
			},
		},
		"pool mode, never policy: a stale claim is dropped and its job waits": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/1", "bob", 2, 0, "", long),
					wait("a/1", "alice", 3, 0, 5),
					wait("a/2", "alice", 1, 0, 6),
				},
				Capacity: 4, Now: nodeNow, MaxHeadWait: -1, Preemption: PreemptNever, Reserved: map[string]string{"a/1": ""},
			},
			want: nodeOutcome{
				Admit:   map[string]string{"a/2": ""},
				Waiting: map[string]string{"a/1": "2 GPUs free, needs 3"},
				Head:    "a/1", Free: 1,
			},
		},
	}
	runNodeCases(t, cases)
}

// TestDecideSoonFree covers the GPUs being freed: Node.Terminating (Snapshot.PoolTerminating in
// pool mode) and the jobs being evicted. They are not free now, but a preemptor counts on them
// before it evicts anyone.
func TestDecideSoonFree(t *testing.T) {
	long := ago(time.Hour)
	snap := func(p Policy, nodes []Node, jobs ...Job) Snapshot {
		return Snapshot{
			Jobs: jobs, Nodes: nodes, Capacity: -1, Now: nodeNow, MaxHeadWait: -1,
			Preemption: p, MinRuntime: 10 * time.Minute,
		}
	}
	// twoStopping: n1 has 2 GPUs of the queue's pods being stopped; order b/0(2, t0) a/1(2, t5)
	// a/2(3) b/1(4). b/0 runs on a node that is not ready.
	twoStopping := func(p Policy) Snapshot {
		return snap(p, []Node{stopping("n1", 4, 2, 2)},
			runs("b/0", "bob", 2, 0, "gone", long),
			runs("b/1", "bob", 2, 9, "n1", long),
			wait("a/1", "alice", 2, 0, 5),
			wait("a/2", "alice", 1, 0, 6),
		)
	}

	cases := map[string]nodeCase{
		"GPUs being freed are not free now": {
			snap: twoStopping(PreemptNever),
			want: nodeOutcome{
				Waiting: map[string]string{"a/1": "0 GPUs free, needs 2", "a/2": "0 GPUs free, needs 1"},
				Head:    "a/1",
			},
		},
		"a preemptor counts on GPUs being freed and evicts no one": {
			snap: twoStopping(PreemptFirstGPU),
			// a/2 is not a first GPU: it may not reserve either.
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for GPUs being freed on node n1",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "a/2",
				Reserved: map[string]string{"a/1": "n1"},
			},
		},
		"GPUs being freed are claimed once: the next preemptor evicts": {
			snap: twoStopping(PreemptRank),
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for GPUs being freed on node n1",
					"a/2": "preempting 1 lower-ranked job(s) on node n1",
				},
				Preemptions: []Preemption{{Preemptor: "a/2", Node: "n1", Victims: []string{"b/1"}}},
				Reserved:    map[string]string{"a/1": "n1", "a/2": "n1"},
			},
		},
		"GPUs free now and being freed together": {
			snap: snap(PreemptFirstGPU, []Node{stopping("n1", 4, 1, 1)},
				runs("b/1", "bob", 2, 9, "n1", long),
				wait("a/1", "alice", 2, 0, 5),
				wait("a/2", "alice", 1, 0, 6),
			),
			// One GPU is free now, one being freed: a/1 claims both, a/2 finds none free.
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "waiting for GPUs being freed on node n1",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:     "a/2",
				Reserved: map[string]string{"a/1": "n1"},
			},
		},
		"best fit over the GPUs free now and being freed": {
			snap: snap(PreemptFirstGPU, []Node{stopping("n1", 4, 4, 3), stopping("n2", 4, 4, 2), stopping("n3", 2, 1, 0)},
				wait("a/1", "alice", 2, 0, 5),
			),
			// n1 would leave 1 GPU over, n2 none; n3 has 1 free and nothing being freed.
			want: nodeOutcome{
				Waiting:  map[string]string{"a/1": "waiting for GPUs being freed on node n2"},
				Reserved: map[string]string{"a/1": "n2"},
				Free:     1,
			},
		},
		"GPUs being freed on one node are preferred to evicting on another": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 2, 0), stopping("n2", 2, 2, 2)},
				runs("b/1", "bob", 2, 9, "n1", long),
				wait("a/1", "alice", 2, 0, 5),
			),
			want: nodeOutcome{
				Waiting:  map[string]string{"a/1": "waiting for GPUs being freed on node n2"},
				Reserved: map[string]string{"a/1": "n2"},
			},
		},
		"too few GPUs being freed: they count toward the victims, so fewer are evicted": {
			snap: snap(PreemptFirstGPU, []Node{stopping("n1", 4, 1, 1)},
				runs("b/1", "bob", 2, 1, "n1", long),
				runs("b/2", "bob", 1, 2, "n1", long),
				wait("a/1", "alice", 2, 0, 0),
			),
			// Order a/1(2, t0) b/1(2, t1) b/2(3). The GPU being freed and b/2's make 2: b/1 keeps
			// running.
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n1"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/1": "n1"},
			},
		},
		"with the capacity reached, GPUs being freed make no room under it: the victim does": {
			snap: func() Snapshot {
				s := snap(PreemptFirstGPU, []Node{stopping("n1", 4, 4, 2), gpuNode("n2", 4, 0)},
					runs("b/2", "bob", 2, 9, "n2", long),
					wait("a/1", "alice", 2, 0, 5),
				)
				s.Capacity = 2
				return s
			}(),
			// The pods stopping on n1 no longer count against the capacity; b/2 does.
			want: nodeOutcome{
				Waiting:     map[string]string{"a/1": "preempting 1 lower-ranked job(s) on node n2"},
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n2", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/1": "n2"},
			},
		},
		"victims still count against the capacity within the decision": {
			snap: func() Snapshot {
				s := snap(PreemptFirstGPU, []Node{gpuNode("n1", 4, 0), gpuNode("n2", 4, 0)},
					runs("c/run", "carol", 2, 0, "n1", long),
					runs("b/2", "bob", 2, 9, "n2", long),
					wait("a/1", "alice", 2, 0, 5),
					wait("a/2", "alice", 1, 0, 6),
				)
				s.Capacity = 4
				return s
			}(),
			// a/1 evicts b/2; n1 has 2 GPUs free, but b/2 and a/1's claim fill the lab's share.
			want: nodeOutcome{
				Waiting: map[string]string{
					"a/1": "preempting 1 lower-ranked job(s) on node n2",
					"a/2": "0 GPUs free, needs 1",
				},
				Head:        "a/2",
				Preemptions: []Preemption{{Preemptor: "a/1", Node: "n2", Victims: []string{"b/2"}}},
				Reserved:    map[string]string{"a/1": "n2"},
			},
		},
		"a job being evicted on a node that is not ready frees nothing on the ready ones": {
			snap: snap(PreemptFirstGPU, []Node{gpuNode("n1", 2, 0)},
				runs("b/1", "bob", 2, 9, "n1", time.Time{}),
				evicting(runs("x/1", "xavier", 2, 0, "gone", long)),
				wait("a/1", "alice", 2, 0, 5),
			),
			want: nodeOutcome{
				Waiting: map[string]string{"a/1": "0 GPUs free, needs 2"},
				Head:    "a/1",
			},
		},
		"pool mode: a preemptor counts on the pool's GPUs being freed": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/1", "bob", 2, 9, "", long),
					wait("a/1", "alice", 2, 0, 5),
				},
				Capacity: 4, PoolBusy: 2, PoolTerminating: 2, Now: nodeNow, MaxHeadWait: -1,
			},
			want: nodeOutcome{
				Waiting:  map[string]string{"a/1": "waiting for GPUs being freed"},
				Reserved: map[string]string{"a/1": ""},
			},
		},
		"pool mode: GPUs being freed by foreign pods are not free now": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/1", "bob", 2, 9, "", long),
					wait("a/1", "alice", 2, 0, 5),
					wait("a/2", "alice", 1, 0, 6),
				},
				Capacity: 4, PoolBusy: 2, PoolTerminating: 2, Now: nodeNow, MaxHeadWait: -1, Preemption: PreemptNever,
			},
			want: nodeOutcome{
				Waiting: map[string]string{"a/1": "0 GPUs free, needs 2", "a/2": "0 GPUs free, needs 1"},
				Head:    "a/1",
			},
		},
	}
	runNodeCases(t, cases)
}

// randomNodeSnapshot builds a node-mode snapshot (a pool one if pool) with many ties, holding
// jobs on random nodes (some gone, some over-committing), young, old and unstarted jobs, jobs
// being evicted, GPUs being freed (Terminating), backoffs, reservations and every policy.
func randomNodeSnapshot(r *rand.Rand, pool bool) Snapshot {
	now := nodeNow
	s := Snapshot{
		Now:         now,
		Capacity:    -1,
		MaxHeadWait: []time.Duration{-1, 0, 5 * time.Minute, 10 * time.Minute}[r.IntN(4)],
		Preemption:  Policy(r.IntN(3)),
		MinRuntime:  []time.Duration{0, 5 * time.Minute, 10 * time.Minute, 20 * time.Minute}[r.IntN(4)],
	}
	var names []string
	if pool {
		s.Capacity, s.PoolBusy = int32(r.IntN(25)), int32(r.IntN(5))
		if s.PoolBusy > 0 && r.IntN(2) == 0 {
			s.PoolTerminating = int32(1 + r.IntN(int(s.PoolBusy)))
		}
		names = []string{""}
	} else {
		s.Nodes = []Node{}
		for i := range 1 + r.IntN(6) {
			n := Node{Name: fmt.Sprintf("node-%c", 'a'+i), GPUs: int32(2 + r.IntN(7))}
			if r.IntN(2) == 0 {
				n.Busy = int32(r.IntN(int(n.GPUs) + 2)) // sometimes more than the node has
				if n.Busy > 0 && r.IntN(2) == 0 {
					n.Terminating = int32(1 + r.IntN(int(n.Busy)))
				}
			}
			s.Nodes = append(s.Nodes, n)
			names = append(names, n.Name)
		}
		r.Shuffle(len(s.Nodes), func(i, j int) { s.Nodes[i], s.Nodes[j] = s.Nodes[j], s.Nodes[i] })
		if r.IntN(2) == 0 { // the lab's share: up to all the nodes have, now and then more
			var total int32
			for _, n := range s.Nodes {
				total += n.GPUs
			}
			s.Capacity = max(0, total-int32(r.IntN(10))+2)
		}
	}
	n := 5 + r.IntN(46)
	for i := range n {
		j := Job{
			Key:      fmt.Sprintf("ns%d/job-%02d", r.IntN(3), i),
			User:     fmt.Sprintf("user%d", r.IntN(6)),
			Priority: int32(r.IntN(3) - 1),
			Created:  at(r.IntN(6)),
			GPUs:     []int32{0, 1, 1, 1, 1, 2, 2, 3, 4, 9}[r.IntN(10)], // some CPU-only, some too big
		}
		if r.IntN(5) < 2 {
			j.State = Holding
			switch k := r.IntN(10); {
			case k == 0:
				j.Node = "gone"
			case k == 1:
				j.Node = ""
			default:
				j.Node = names[r.IntN(len(names))]
			}
			if r.IntN(5) != 0 {
				j.Started = now.Add(-time.Duration(r.IntN(2*3600)) * time.Second)
			}
			j.Evicting = r.IntN(5) == 0
		} else if k := r.IntN(12); k < 2 {
			j.NotBefore = now.Add(time.Duration(1+r.IntN(600)) * time.Second)
		} else if k == 2 {
			j.NotBefore = now.Add(-time.Duration(r.IntN(600)) * time.Second)
		}
		s.Jobs = append(s.Jobs, j)
	}
	if n > 0 && r.IntN(2) == 0 {
		s.Head = s.Jobs[r.IntN(n)].Key
		s.HeadSince = now.Add(-time.Duration(r.IntN(20)) * time.Minute)
	}
	if r.IntN(2) == 0 {
		// Mostly claims the engine could have left: by a job the policy lets preempt, on a node
		// that can hold it. Now and then a stale one it must drop up front (the policy changed, a
		// higher-priority job of its user took ordinal 1, the node or the capacity is too small),
		// or a void one (on a node that is not ready, or for a job not waiting).
		firstGPU := map[string]int32{}
		for _, e := range Order(s.Jobs) {
			firstGPU[e.Key] = e.FirstGPU
		}
		capacity := map[string]int32{"": s.Capacity} // what a claimed name can hold
		for _, n := range s.Nodes {
			capacity[n.Name] = n.GPUs
		}
		targets := append(slices.Clone(names), "gone")
		s.Reserved = map[string]string{}
		for _, j := range s.Jobs {
			if r.IntN(2) != 0 || j.State != Waiting && r.IntN(4) != 0 {
				continue
			}
			may := s.Preemption == PreemptRank || s.Preemption == PreemptFirstGPU && firstGPU[j.Key] == 1
			if !may && r.IntN(3) != 0 {
				continue
			}
			var holds, small []string // the ready names that can hold the job, and the others
			for _, n := range names {
				if capacity[n] >= j.GPUs {
					holds = append(holds, n)
				} else {
					small = append(small, n)
				}
			}
			switch k := r.IntN(8); {
			case len(holds) > 0 && k < 5:
				s.Reserved[j.Key] = holds[r.IntN(len(holds))]
			case len(holds) > 0 && len(small) > 0 && k < 7: // too small, but another node holds it
				s.Reserved[j.Key] = small[r.IntN(len(small))]
			default:
				s.Reserved[j.Key] = targets[r.IntN(len(targets))]
			}
		}
	}
	return s
}

// standingClaims are the claims of s.Reserved that stand, by job, on the node they hold ("" in
// pool mode): those of waiting jobs the policy lets preempt, on a ready node (in pool mode any
// name, standing for the pool) that can hold the job, within the capacity bound (none in pool
// mode). Every other claim is dropped up front, before anyone's turn.
func standingClaims(s Snapshot, order []Entry) map[string]string {
	pool := s.Nodes == nil
	size := map[string]int32{}
	if pool {
		size[""] = s.Capacity
	} else {
		for _, n := range s.Nodes {
			size[n.Name] = n.GPUs
		}
	}
	standing := map[string]string{}
	for i := range order {
		e := &order[i]
		node, ok := s.Reserved[e.Key]
		if !ok || e.State != Waiting {
			continue
		}
		if pool {
			node = ""
		}
		may := s.Preemption == PreemptRank || s.Preemption == PreemptFirstGPU && e.FirstGPU == 1
		if g, ready := size[node]; ready && may && g >= e.GPUs && (pool || s.Capacity < 0 || s.Capacity >= e.GPUs) {
			standing[e.Key] = node
		}
	}
	return standing
}

// nodeStats counts what the random decisions reach, so that the properties do not hold vacuously.
type nodeStats struct {
	preemptions, sharedNode, admissions, soonReservations int
	// Standing claims: kept by their job left waiting on the claimed node, or used by it starting.
	claimsKept, claimsUsed int
	// Claims on a ready node (any claim in pool mode) dropped up front. Of those: the ones whose
	// job gets no turn (held behind a blocking head or backing off) and so no longer keeps them;
	// whose job starts anyway; whose job may still preempt (the claimed node or the capacity is
	// too small) and so looks for GPUs being freed or victims elsewhere; whose job never fits;
	// whose job becomes the head; and those where a job ranked above starts on the claimed node.
	claimsDropped, droppedHeld, droppedAdmitted, droppedMayPreempt, droppedNever, droppedHead, droppedFreedAbove int
	// Of the claims dropped up front, those over the capacity bound on a node that holds the job.
	droppedOverCapacity int
}

func (st *nodeStats) add(s Snapshot, d Decision) {
	st.preemptions += len(d.Preemptions)
	nodes := map[string]int{}
	for _, pr := range d.Preemptions {
		if nodes[pr.Node]++; nodes[pr.Node] == 2 {
			st.sharedNode++
		}
	}
	size := map[string]int32{}
	for _, n := range s.Nodes {
		size[n.Name] = n.GPUs
	}
	standing := standingClaims(s, d.Order)
	for _, e := range d.Order {
		_, stands := standing[e.Key]
		kept := strings.HasPrefix(e.Reason, "waiting for the jobs it preempted to stop")
		switch {
		case e.Admit && stands:
			st.claimsUsed++
			st.admissions++
		case e.Admit:
			st.admissions++
		case strings.HasPrefix(e.Reason, "waiting for GPUs being freed"):
			st.soonReservations++
		case kept:
			st.claimsKept++
		}
		node, claimed := s.Reserved[e.Key]
		g, ready := size[node]
		if s.Nodes == nil {
			node, ready = "", true
		}
		if !claimed || stands || e.State != Waiting || !ready { // no claim, a standing one, or a void one
			continue
		}
		st.claimsDropped++
		if s.Nodes != nil && g >= e.GPUs && s.Capacity >= 0 && s.Capacity < e.GPUs {
			st.droppedOverCapacity++
		}
		if slices.ContainsFunc(d.Order, func(a Entry) bool { return a.Rank < e.Rank && a.Admit && a.Node == node }) {
			st.droppedFreedAbove++
		}
		switch {
		case strings.HasPrefix(e.Reason, "held behind") || strings.HasPrefix(e.Reason, "backing off"):
			st.droppedHeld++
			continue
		case e.Admit:
			st.droppedAdmitted++
			continue
		}
		if strings.HasPrefix(e.Reason, "needs ") || e.Reason == "no GPU node is ready" {
			st.droppedNever++
		} else if s.Preemption == PreemptRank || s.Preemption == PreemptFirstGPU && e.FirstGPU == 1 {
			st.droppedMayPreempt++
		}
		if e.Key == d.Head {
			st.droppedHead++
		}
	}
}

func (st nodeStats) check(t *testing.T, want nodeStats) {
	t.Helper()
	t.Logf("%+v", st)
	if st.preemptions < want.preemptions || st.sharedNode < want.sharedNode || st.admissions < want.admissions ||
		st.soonReservations < want.soonReservations || st.claimsKept < want.claimsKept || st.claimsUsed < want.claimsUsed ||
		st.claimsDropped < want.claimsDropped || st.droppedHeld < want.droppedHeld || st.droppedAdmitted < want.droppedAdmitted ||
		st.droppedMayPreempt < want.droppedMayPreempt || st.droppedNever < want.droppedNever || st.droppedHead < want.droppedHead ||
		st.droppedFreedAbove < want.droppedFreedAbove || st.droppedOverCapacity < want.droppedOverCapacity {
		t.Errorf("the random snapshots reach too little: %+v, want at least %+v", st, want)
	}
}

func TestDecideNodeProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(20251129, 100))
	var st nodeStats
	for i := range 500 {
		s := randomNodeSnapshot(r, false)
		d := Decide(s)
		st.add(s, d)
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			checkNodeDecision(t, s, d)
			checkNodeStable(t, r, s, d)
			checkClaimsUpFront(t, s, d)
		})
	}
	// The generator must reach the code under test, or the properties hold vacuously.
	st.check(t, nodeStats{
		preemptions: 80, sharedNode: 10, admissions: 500, soonReservations: 70, claimsKept: 300, claimsUsed: 80,
		claimsDropped: 250, droppedHeld: 80, droppedAdmitted: 20, droppedMayPreempt: 8, droppedNever: 50, droppedHead: 6,
		droppedFreedAbove: 35, droppedOverCapacity: 20,
	})
}

func TestDecidePoolPreemptionProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(20251129, 200))
	var st nodeStats
	for i := range 200 {
		s := randomNodeSnapshot(r, true)
		d := Decide(s)
		st.add(s, d)
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			checkNodeDecision(t, s, d)
			checkNodeStable(t, r, s, d)
			checkClaimsUpFront(t, s, d)
		})
	}
	// Fewer kept claims than in node mode: under PreemptNever, a third of the snapshots, every
	// claim is stale and dropped. No dropped claim's job may still preempt: a pool claim is
	// dropped from such a job only when the pool is smaller than the job, which then never fits.
	// No claim is over a capacity bound: the pool has none but its size.
	st.check(t, nodeStats{
		preemptions: 45, sharedNode: 12, admissions: 60, soonReservations: 30, claimsKept: 140, claimsUsed: 10,
		claimsDropped: 120, droppedHeld: 40, droppedAdmitted: 1, droppedNever: 20, droppedHead: 5, droppedFreedAbove: 4,
	})
}

// checkNodeStable: shuffling the jobs and the nodes gives the same decision.
func checkNodeStable(t *testing.T, r *rand.Rand, s Snapshot, d Decision) {
	t.Helper()
	for k := range 2 {
		shuffled := s
		shuffled.Jobs = slices.Clone(s.Jobs)
		r.Shuffle(len(shuffled.Jobs), func(i, j int) { shuffled.Jobs[i], shuffled.Jobs[j] = shuffled.Jobs[j], shuffled.Jobs[i] })
		if s.Nodes != nil {
			shuffled.Nodes = slices.Clone(s.Nodes)
			r.Shuffle(len(shuffled.Nodes), func(i, j int) { shuffled.Nodes[i], shuffled.Nodes[j] = shuffled.Nodes[j], shuffled.Nodes[i] })
		}
		if diff := cmp.Diff(d, Decide(shuffled)); diff != "" {
			t.Errorf("shuffle %d: Decide() differs (-original +shuffled):\n%s", k, diff)
		}
	}
}

// checkClaimsUpFront: a claim that does not stand is dropped before anyone's turn and has no
// effect at all, so leaving it out of the snapshot gives the same decision.
func checkClaimsUpFront(t *testing.T, s Snapshot, d Decision) {
	t.Helper()
	only := s
	only.Reserved = standingClaims(s, d.Order)
	if diff := cmp.Diff(d, Decide(only)); diff != "" {
		t.Errorf("Decide() differs without the claims dropped up front (-all claims +standing ones):\n%s", diff)
	}
}

// errorLog is a testing.TB that keeps the errors reported to it.
type errorLog struct {
	testing.TB
	errors []string
}

func (l *errorLog) Helper() {}

func (l *errorLog) Errorf(format string, args ...any) {
	l.errors = append(l.errors, fmt.Sprintf(format, args...))
}

// TestCheckNodeDecisionCatches makes sure the property checker is not vacuous: it must accept
// real decisions and reject each of these tampered ones.
func TestCheckNodeDecisionCatches(t *testing.T) {
	long := ago(time.Hour)
	// shared: two preemptors on one 4-GPU node; order a/1 c/1 b/1(2) b/2(3) b/3(4). a/1 evicts
	// b/3 and c/1 evicts b/2.
	shared := Snapshot{
		Jobs: []Job{
			runs("b/1", "bob", 2, 0, "n1", long),
			runs("b/2", "bob", 1, 1, "n1", long),
			runs("b/3", "bob", 1, 2, "n1", long),
			wait("a/1", "alice", 1, 0, 5),
			wait("c/1", "carol", 1, 0, 6),
		},
		Nodes: []Node{gpuNode("n1", 4, 0)}, Capacity: -1, Now: nodeNow, MaxHeadWait: -1, MinRuntime: time.Minute,
	}
	// soon: a/1 reserves the 2 GPUs being freed on n1; a/2 waits.
	soon := Snapshot{
		Jobs: []Job{
			runs("b/1", "bob", 2, 9, "n1", long),
			wait("a/1", "alice", 2, 0, 5),
			wait("a/2", "alice", 1, 0, 6),
		},
		Nodes: []Node{stopping("n1", 4, 2, 2)}, Capacity: -1, Now: nodeNow, MaxHeadWait: -1, MinRuntime: time.Minute,
	}
	// started: a/1's victims are gone; it starts on its reserved node.
	started := Snapshot{
		Jobs:  []Job{runs("b/1", "bob", 2, 0, "n1", long), wait("a/1", "alice", 2, 0, 5)},
		Nodes: []Node{gpuNode("n1", 4, 0)}, Capacity: -1, Now: nodeNow, MaxHeadWait: -1,
		Reserved: map[string]string{"a/1": "n1"},
	}
	// stale: a/1's claim would hold n1's 2 free GPUs, too few for its 3; under PreemptNever it
	// is dropped up front: a/1 waits as the head and a/2 takes a GPU. kept is the same under
	// PreemptFirstGPU: a/1 keeps its claim and waits on n1.
	stale := Snapshot{
		Jobs: []Job{
			runs("b/1", "bob", 2, 0, "n1", long),
			wait("a/1", "alice", 3, 0, 5),
			wait("a/2", "alice", 1, 0, 6),
		},
		Nodes: []Node{gpuNode("n1", 4, 0)}, Capacity: -1, Now: nodeNow, MaxHeadWait: -1,
		Preemption: PreemptNever, Reserved: map[string]string{"a/1": "n1"},
	}
	kept := stale
	kept.Preemption = PreemptFirstGPU
	// above: stale, with h/1 (2 GPUs) ranked above a/1: the dropped claim leaves it n1's 2 free
	// GPUs and it starts.
	above := stale
	above.Jobs = append(slices.Clone(stale.Jobs), wait("h/1", "heidi", 2, 0, 0))
	// overCap: a/1's claim on n1, which holds its 3 GPUs, is over the capacity of 2: dropped up
	// front, a/1 never fits, and a/2 takes the last GPU under the bound.
	overCap := kept
	overCap.Capacity = 2
	entry := func(d *Decision, key string) *Entry {
		for i := range d.Order {
			if d.Order[i].Key == key {
				return &d.Order[i]
			}
		}
		t.Fatalf("no %s in the order", key)
		return nil
	}
	cases := map[string]struct {
		snap   Snapshot
		tamper func(d *Decision)
		want   string // in one of the errors
	}{
		"the second preemptor over-evicts (the old bug)": {
			snap:   shared,
			tamper: func(d *Decision) { d.Preemptions[1].Victims = []string{"b/1"} },
			want:   "evicts b/1 though the jobs ranked below it free",
		},
		"a superfluous victim": {
			snap:   shared,
			tamper: func(d *Decision) { d.Preemptions[1].Victims = []string{"b/2", "b/1"} },
			want:   "victim b/1 is not needed",
		},
		"one victim for two preemptors": {
			snap:   shared,
			tamper: func(d *Decision) { d.Preemptions[1].Victims = []string{"b/3"} },
			want:   "is a victim of both",
		},
		"a preemptor's claim missing from Reserved": {
			snap:   shared,
			tamper: func(d *Decision) { delete(d.Reserved, "c/1") },
			want:   "Reserved mismatch",
		},
		"evicting though GPUs being freed are enough": {
			snap: soon,
			tamper: func(d *Decision) {
				d.Preemptions = []Preemption{{Preemptor: "a/1", Node: "n1", Victims: []string{"b/1"}}}
				entry(d, "a/1").Reason = "preempting 1 lower-ranked job(s) on node n1"
			},
			want: "fits on n1 with 0 free and 2 being freed",
		},
		"admitted on GPUs that are only being freed": {
			snap: soon,
			tamper: func(d *Decision) {
				e := entry(d, "a/1")
				e.Admit, e.Node, e.Reason, e.Position = true, "n1", "", 0
				d.Reserved = nil
			},
			want: "admitted on n1 with 0 free there (2 being freed)",
		},
		"a reservation on the wrong node": {
			snap:   soon,
			tamper: func(d *Decision) { d.Reserved["a/1"] = "n2" },
			want:   "Reserved mismatch",
		},
		"a kept claim that does not name its node (the old Node \"\")": {
			snap:   kept,
			tamper: func(d *Decision) { entry(d, "a/1").Node = "" },
			want:   `a/1 with a claim on "n1": Node ""`,
		},
		"a stale claim kept (the old behaviour)": {
			snap: stale,
			tamper: func(d *Decision) {
				e := entry(d, "a/1")
				e.Node, e.Reason = "n1", "waiting for the jobs it preempted to stop on node n1"
				d.Reserved = map[string]string{"a/1": "n1"}
			},
			want: `a/1 (3 GPUs) waits: Reason "waiting for the jobs it preempted to stop on node n1", want "2 GPUs free, needs 3"`,
		},
		"a stale claim held until its job's turn (the previous engine)": {
			snap: above,
			tamper: func(d *Decision) {
				e := entry(d, "h/1")
				e.Admit, e.Node, e.Reason, e.Position = false, "", "0 GPUs free, needs 2", 1
			},
			want: "h/1 (2 GPUs) fits",
		},
		"a claim over the capacity kept": {
			snap: overCap,
			tamper: func(d *Decision) {
				e := entry(d, "a/1")
				e.Node, e.Reason = "n1", "waiting for the jobs it preempted to stop on node n1"
				d.Reserved = map[string]string{"a/1": "n1"}
			},
			want: `a/1 (3 GPUs) never fits: Reason "waiting for the jobs it preempted to stop on node n1", want "needs 3 GPUs but the capacity is 2"`,
		},
		"a dropped claim still in Reserved": {
			snap:   stale,
			tamper: func(d *Decision) { d.Reserved = map[string]string{"a/1": "n1"} },
			want:   "Reserved mismatch",
		},
		"a dropped claim's job left on the claimed node": {
			snap:   stale,
			tamper: func(d *Decision) { entry(d, "a/1").Node = "n1" },
			want:   "a/1 reserves nothing at its turn",
		},
		"an empty Reserved that is not nil": {
			snap:   started,
			tamper: func(d *Decision) { d.Reserved = map[string]string{} },
			want:   "Reserved mismatch",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := Decide(tc.snap)
			var clean errorLog
			if checkNodeDecision(&clean, tc.snap, d); len(clean.errors) > 0 {
				t.Fatalf("the real decision is rejected: %q", clean.errors)
			}
			tc.tamper(&d)
			var log errorLog
			checkNodeDecision(&log, tc.snap, d)
			if !slices.ContainsFunc(log.errors, func(e string) bool { return strings.Contains(e, tc.want) }) {
				t.Errorf("no error containing %q; got %q", tc.want, log.errors)
			}
		})
	}
}

// replayClaim is a GPU claim as the replay in checkNodeDecision keeps it: on node, out of the
// GPUs being freed (soon) and out of those free now.
type replayClaim struct {
	node           string
	fromSoon, free int32
}

// checkNodeDecision replays a decision against its snapshot. Walking the global order, it keeps
// its own account of every node's GPUs free now and being freed ("soon": Terminating and the
// jobs being evicted), of the room left under the capacity bound and of the claims, moved on by
// the decision's own outputs only (admissions, preemptions, reservations), and checks every job
// against what it faced at its turn.
func checkNodeDecision(t testing.TB, s Snapshot, d Decision) {
	t.Helper()
	pool := s.Nodes == nil
	nodes := map[string]Node{}
	var largest int32
	if pool {
		nodes[""] = Node{GPUs: s.Capacity, Busy: s.PoolBusy, Terminating: s.PoolTerminating}
		largest = s.Capacity
	} else {
		for _, n := range s.Nodes {
			nodes[n.Name] = n
			largest = max(largest, n.GPUs)
		}
	}
	names := slices.Sorted(maps.Keys(nodes))
	bound := s.Capacity // the bound on all held GPUs; the pool's capacity is its only node
	if pool {
		bound = -1
	}
	where := func(node string) (string, bool) { // the node a name stands for, if it is ready
		if pool {
			return "", true
		}
		_, ok := nodes[node]
		return node, ok
	}
	canEverFit := func(g int32) bool {
		return len(nodes) > 0 && g <= largest && (bound < 0 || g <= bound)
	}
	capOK := func(capFree, g int32) bool { return bound < 0 || capFree >= g }

	rankOf := map[string]int{}
	entry := map[string]*Entry{}
	snapNode := map[string]string{} // Job.Node as the snapshot gave it
	for _, j := range s.Jobs {
		snapNode[j.Key] = j.Node
	}
	for i := range d.Order {
		rankOf[d.Order[i].Key] = i
		entry[d.Order[i].Key] = &d.Order[i]
	}
	byPreemptor := map[string]Preemption{}
	victimOf := map[string]string{}
	for _, pr := range d.Preemptions {
		if _, dup := byPreemptor[pr.Preemptor]; dup {
			t.Errorf("%s preempts twice", pr.Preemptor)
		}
		byPreemptor[pr.Preemptor] = pr
		for _, v := range pr.Victims {
			if other, dup := victimOf[v]; dup {
				t.Errorf("%s is a victim of both %s and %s", v, other, pr.Preemptor)
			}
			victimOf[v] = pr.Preemptor
		}
	}

	// What the snapshot holds, and what is being freed.
	var used int32
	held := map[string]int32{}
	soon := map[string]int32{}
	evicting := map[string]bool{} // by key: not to be chosen as a victim (again)
	for name, n := range nodes {
		soon[name] = n.Terminating
	}
	for _, e := range d.Order {
		if e.State != Holding {
			continue
		}
		used += e.GPUs
		n, ok := where(e.Node)
		if ok {
			held[n] += e.GPUs
		}
		if e.Evicting {
			evicting[e.Key] = true
			if ok {
				soon[n] += e.GPUs
			}
		}
	}
	if d.Used != used {
		t.Errorf("Used = %d, want %d", d.Used, used)
	}
	free := map[string]int32{}
	for name, n := range nodes {
		free[name] = n.GPUs - n.Busy - held[name]
	}
	capFree := int32(1 << 30)
	if bound >= 0 {
		capFree = bound - used
	}

	// Claims: the snapshot's reservations that still stand, made in rank order before anyone's
	// turn, then the new ones.
	claims := map[string]replayClaim{}
	apply := func(c replayClaim) {
		soon[c.node] -= c.fromSoon
		free[c.node] -= c.free
		capFree -= c.fromSoon + c.free
	}
	release := func(c replayClaim) {
		soon[c.node] += c.fromSoon
		free[c.node] += c.free
		capFree += c.fromSoon + c.free
	}
	// reserve mirrors the engine's split: the GPUs free now first, then those being freed.
	reserve := func(key, node string, g int32) {
		c := replayClaim{node: node, free: min(g, max(free[node], 0))}
		c.fromSoon = g - c.free
		apply(c)
		claims[key] = c
	}
	// Only the standing claims (see standingClaims) are made; any other claim is dropped before
	// anyone's turn: it takes no GPUs, so the jobs ranked above it see them free, and its job
	// goes on as one that never had a claim.
	mayPreempt := func(e *Entry) bool {
		return s.Preemption == PreemptRank || s.Preemption == PreemptFirstGPU && e.FirstGPU == 1
	}
	var claimedBefore int32
	standing := standingClaims(s, d.Order)
	for _, e := range d.Order {
		if n, ok := standing[e.Key]; ok {
			reserve(e.Key, n, e.GPUs)
			claimedBefore += e.GPUs
		}
	}

	evictable := func(v, pr *Entry, node string) bool {
		n, ok := where(v.Node)
		return v.State == Holding && ok && n == node && v.Rank > pr.Rank && !evicting[v.Key] &&
			!v.Started.IsZero() && !s.Now.Before(v.Started.Add(s.MinRuntime))
	}
	// soonFit is where a job reserves GPUs being freed: best fit over free now and being freed,
	// among the nodes with GPUs being freed, if the capacity bound has room.
	soonFit := func(g int32) (string, bool) {
		best, found := "", false
		if !capOK(capFree, g) {
			return best, found
		}
		for _, n := range names {
			if f := free[n] + soon[n]; soon[n] > 0 && f >= g && (!found || f < free[best]+soon[best]) {
				best, found = n, true
			}
		}
		return best, found
	}

	// shortfall and never are the sentences a job left waiting gets, from the GPUs free now.
	shortfall := func(g int32) string {
		var total, most int32
		for _, n := range names {
			total += max(free[n], 0)
			most = max(most, free[n])
		}
		if bound >= 0 {
			total = min(total, capFree)
		}
		if total = max(total, 0); pool || total < g {
			return fmt.Sprintf("%s free, needs %d", gpus(total), g)
		}
		return fmt.Sprintf("%s free but at most %d on one node, needs %d", gpus(total), most, g)
	}
	never := func(g int32) string {
		switch {
		case pool:
			return fmt.Sprintf("needs %s but the capacity is %d", gpus(g), s.Capacity)
		case len(nodes) == 0:
			return "no GPU node is ready"
		case g > largest:
			return fmt.Sprintf("needs %s but the largest GPU node has %d", gpus(g), largest)
		}
		return fmt.Sprintf("needs %s but the capacity is %d", gpus(g), bound)
	}

	wantHead, wantBlocking := -1, false
	var since time.Time
	var wakeBounds []time.Time // Wakeup must be no later than each
	wantReserved := map[string]string{}
	admitted := map[string]int32{}
	var admittedAll, freedAll int32
	for i := range d.Order {
		e := &d.Order[i]
		pr, preempts := byPreemptor[e.Key]
		if e.State == Holding {
			if e.Admit || e.Reason != "" || e.Position != 0 || preempts {
				t.Errorf("holding %s: Admit %v, Reason %q, Position %d, preempts %v", e.Key, e.Admit, e.Reason, e.Position, preempts)
			}
			continue
		}
		g := e.GPUs
		c, claimed := claims[e.Key]
		if claimed { // a claim is its owner's to use at its turn
			release(c)
			delete(claims, e.Key)
		}
		keep := func() {
			if claimed {
				apply(c)
				claims[e.Key] = c
				wantReserved[e.Key] = c.node
			}
		}
		allowed := mayPreempt(e)
		// A job whose claim stands and that does not fit at its turn always keeps the claim.
		if preempts && (!allowed || !canEverFit(g) || claimed) {
			t.Errorf("%s preempts though the policy %d allows it: %v, it could ever fit: %v, it has a claim: %v",
				e.Key, s.Preemption, allowed, canEverFit(g), claimed)
		}

		// A job that neither starts nor reserves at its turn is placed nowhere.
		unplaced := func() {
			if e.Node != snapNode[e.Key] {
				t.Errorf("%s reserves nothing at its turn (Reason %q), yet Node %q", e.Key, e.Reason, e.Node)
			}
		}
		switch {
		case wantBlocking:
			head := &d.Order[wantHead]
			if want := fmt.Sprintf("held behind %s, which waits for %s", head.Key, gpus(head.GPUs)); e.Admit || preempts || e.Reason != want {
				t.Errorf("%s behind blocking head %s: Admit %v, preempts %v, Reason %q", e.Key, d.Order[wantHead].Key, e.Admit, preempts, e.Reason)
			}
			unplaced() // held or backing off, a job keeps whatever claim it has
			keep()
			continue
		case s.Now.Before(e.NotBefore):
			if want := "backing off after a failed start until " + e.NotBefore.UTC().Format(time.RFC3339); e.Admit || preempts || e.Reason != want {
				t.Errorf("%s backs off until %v: Admit %v, preempts %v, Reason %q", e.Key, e.NotBefore, e.Admit, preempts, e.Reason)
			}
			wakeBounds = append(wakeBounds, e.NotBefore)
			unplaced()
			keep()
			continue
		case e.Admit:
			if preempts || e.Reason != "" || e.Position != 0 {
				t.Errorf("admitted %s: preempts %v, Reason %q, Position %d", e.Key, preempts, e.Reason, e.Position)
			}
			if _, ok := nodes[e.Node]; !ok {
				t.Errorf("%s admitted on %q, not a ready node", e.Key, e.Node)
				continue
			}
			// GPUs being freed are not usable now: only those free now count.
			if free[e.Node] < g || !capOK(capFree, g) {
				t.Errorf("%s (%d GPUs) admitted on %s with %d free there (%d being freed) and %d under the bound",
					e.Key, g, e.Node, free[e.Node], soon[e.Node], capFree)
			}
			if claimed && free[c.node] >= g {
				if e.Node != c.node {
					t.Errorf("%s admitted on %s, not on %s which it reserved and where it fits", e.Key, e.Node, c.node)
				}
			} else {
				for _, m := range names { // best fit
					if f := free[m]; f >= g && (f < free[e.Node] || f == free[e.Node] && m < e.Node) {
						t.Errorf("%s admitted on %s (%d free), %s (%d free) fits better", e.Key, e.Node, free[e.Node], m, f)
					}
				}
			}
			free[e.Node] -= g
			capFree -= g
			admitted[e.Node] += g
			admittedAll += g
			continue
		}

		// Left waiting at its turn.
		if capOK(capFree, g) && slices.ContainsFunc(names, func(n string) bool { return free[n] >= g }) {
			t.Errorf("%s (%d GPUs) fits (free %v, %d under the bound) yet was not admitted", e.Key, g, free, capFree)
		}
		if e.Position == 0 || e.Reason == "" {
			t.Errorf("waiting %s: Position %d, Reason %q", e.Key, e.Position, e.Reason)
		}
		switch {
		case claimed:
			if want := "waiting for the jobs it preempted to stop" + onNode(c.node); e.Reason != want || e.Node != c.node {
				t.Errorf("%s with a claim on %q: Node %q, Reason %q, want %q", e.Key, c.node, e.Node, e.Reason, want)
			}
			keep()
			continue
		case !canEverFit(g):
			if want := never(g); e.Reason != want {
				t.Errorf("%s (%d GPUs) never fits: Reason %q, want %q", e.Key, g, e.Reason, want)
			}
			unplaced()
			continue
		case allowed:
			if n, ok := soonFit(g); ok {
				// Enough GPUs are being freed: the job reserves them and evicts no one.
				if want := "waiting for GPUs being freed" + onNode(n); preempts || e.Reason != want || e.Node != n {
					t.Errorf("%s (%d GPUs) fits on %s with %d free and %d being freed: preempts %v, Node %q, Reason %q, want %q",
						e.Key, g, n, free[n], soon[n], preempts, e.Node, e.Reason, want)
				}
				reserve(e.Key, n, g)
				wantReserved[e.Key] = n
				continue
			}
			if preempts {
				freed := checkPreemption(t, d, e, pr, free[pr.Node], soon[pr.Node], capFree, bound, entry, evictable)
				for _, v := range pr.Victims {
					evicting[v] = true
				}
				soon[pr.Node] += freed
				freedAll += freed
				reserve(e.Key, pr.Node, g)
				wantReserved[e.Key] = pr.Node
				continue
			}
			// Completeness: no node where every possible victim together would make room.
			for _, name := range names {
				if nodes[name].GPUs < g {
					continue
				}
				var all int32
				for k := range d.Order {
					if v := &d.Order[k]; evictable(v, e, name) {
						all += v.GPUs
					}
				}
				if free[name]+soon[name]+all >= g && capOK(capFree+all, g) {
					t.Errorf("%s (%d GPUs) could evict %d GPUs on %s (%d free, %d being freed) yet did not preempt",
						e.Key, g, all, name, free[name], soon[name])
				}
			}
		}
		// Neither admitted nor reserving: the first such job is the head.
		reason, _ := strings.CutSuffix(e.Reason, "; first in line, so no job ranked below it starts before it")
		if want := shortfall(g); reason != want {
			t.Errorf("%s (%d GPUs) waits: Reason %q, want %q", e.Key, g, e.Reason, want)
		}
		unplaced()
		if wantHead >= 0 {
			if reason != e.Reason {
				t.Errorf("%s is not the head: Reason %q", e.Key, e.Reason)
			}
			continue
		}
		wantHead = i
		since = s.Now
		if s.Head == e.Key && !s.HeadSince.IsZero() {
			since = s.HeadSince
		}
		if s.MaxHeadWait >= 0 {
			deadline := since.Add(s.MaxHeadWait)
			if !s.Now.Before(deadline) {
				wantBlocking = true
				if !strings.HasSuffix(e.Reason, "; first in line, so no job ranked below it starts before it") {
					t.Errorf("blocking head %s: Reason %q", e.Key, e.Reason)
				}
			} else {
				wakeBounds = append(wakeBounds, deadline)
			}
		}
	}

	var wantHeadKey string
	var wantSince time.Time
	if wantHead >= 0 {
		wantHeadKey, wantSince = d.Order[wantHead].Key, since
	}
	if d.Head != wantHeadKey || !d.HeadSince.Equal(wantSince) || d.Blocking != wantBlocking {
		t.Errorf("Head %q since %v, Blocking %v; want %q since %v, Blocking %v", d.Head, d.HeadSince, d.Blocking, wantHeadKey, wantSince, wantBlocking)
	}

	// Reserved: the claims standing at the end, nil when none; only jobs left waiting.
	if len(wantReserved) == 0 {
		wantReserved = nil
	}
	if diff := cmp.Diff(wantReserved, d.Reserved); diff != "" {
		t.Errorf("Reserved mismatch (-want +got):\n%s", diff)
	}
	for key := range d.Reserved {
		if e, ok := entry[key]; !ok || e.State != Waiting || e.Admit {
			t.Errorf("%s is in Reserved but is not a job left waiting", key)
		}
	}
	for _, e := range d.Order {
		if _, preempts := byPreemptor[e.Key]; e.Admit && preempts {
			t.Errorf("%s is admitted and preempts", e.Key)
		}
	}

	// No node and no capacity bound over-committed by this decision when it was not already.
	for name, n := range nodes {
		if n.Busy+held[name] <= n.GPUs {
			if got := n.Busy + held[name] + admitted[name]; got > n.GPUs {
				t.Errorf("node %q: %d busy + %d held + %d admitted > %d GPUs", name, n.Busy, held[name], admitted[name], n.GPUs)
			}
		} else if admitted[name] != 0 {
			t.Errorf("node %q over-committed (%d busy + %d held > %d), yet %d GPUs admitted", name, n.Busy, held[name], n.GPUs, admitted[name])
		}
	}
	if bound >= 0 {
		var claimedAfter int32
		for key := range d.Reserved {
			if e, ok := entry[key]; ok {
				claimedAfter += e.GPUs
			}
		}
		if used+claimedBefore <= bound {
			if used+admittedAll > bound {
				t.Errorf("%d held + %d admitted > capacity %d", used, admittedAll, bound)
			}
			// Once the victims are gone, what is held, admitted and claimed fits in the bound.
			if used+admittedAll+claimedAfter-freedAll > bound {
				t.Errorf("%d held + %d admitted + %d claimed - %d evicted > capacity %d", used, admittedAll, claimedAfter, freedAll, bound)
			}
		}
		if used > bound && admittedAll != 0 {
			t.Errorf("%d held > capacity %d, yet %d GPUs admitted", used, bound, admittedAll)
		}
	}

	// Free is what is left free now once every admission and claim is counted.
	var sum int32
	for _, n := range names {
		sum += max(free[n], 0)
	}
	if bound >= 0 {
		sum = min(sum, capFree)
	}
	if want := max(sum, 0); d.Free != want {
		t.Errorf("Free = %d, want %d", d.Free, want)
	}

	// Wakeup: in the future, no later than any backoff end or head deadline, and one of them or
	// the time a running job becomes evictable.
	if d.Wakeup.IsZero() {
		if len(wakeBounds) > 0 {
			t.Errorf("no Wakeup, want one by %v", slices.MinFunc(wakeBounds, time.Time.Compare))
		}
		return
	}
	if !d.Wakeup.After(s.Now) {
		t.Errorf("Wakeup %v is not after Now %v", d.Wakeup, s.Now)
	}
	known := slices.ContainsFunc(wakeBounds, d.Wakeup.Equal)
	for _, b := range wakeBounds {
		if b.Before(d.Wakeup) {
			t.Errorf("Wakeup %v is after %v", d.Wakeup, b)
		}
	}
	for _, e := range d.Order {
		if e.State == Holding && !e.Started.IsZero() && d.Wakeup.Equal(e.Started.Add(s.MinRuntime)) {
			known = true
		}
	}
	if !known {
		t.Errorf("Wakeup %v is no backoff end, head deadline or end of a minimum run time", d.Wakeup)
	}
}

// checkPreemption checks one preemption, made when no node had GPUs free now and being freed
// enough for it: no loop is possible (every victim ranks below its preemptor), the victims are
// evictable and, with the GPUs free and being freed on the preemptor's node, enough for it,
// none is superfluous, and the walk from the lowest-ranked up did not go higher than it had to.
// It returns the GPUs the victims free.
func checkPreemption(t testing.TB, d Decision, e *Entry, pr Preemption, free, soon, capFree, bound int32,
	entry map[string]*Entry, evictable func(v, pr *Entry, node string) bool) int32 {
	t.Helper()
	capOK := func(c int32) bool { return bound < 0 || c >= e.GPUs }
	if want := fmt.Sprintf("preempting %d lower-ranked job(s)%s", len(pr.Victims), onNode(pr.Node)); e.Node != pr.Node || e.Reason != want {
		t.Errorf("preemptor %s: Node %q (preempts on %q), Reason %q", e.Key, e.Node, pr.Node, e.Reason)
	}
	if len(pr.Victims) == 0 {
		t.Errorf("%s preempts no one", e.Key)
		return 0
	}
	var freed int32
	lastRank := math.MaxInt
	for _, key := range pr.Victims {
		v, ok := entry[key]
		if !ok {
			t.Errorf("%s evicts %s, which is not in the order", e.Key, key)
			return freed
		}
		if !evictable(v, e, pr.Node) {
			t.Errorf("%s (rank %d) evicts %s (rank %d, %v on %q, started %v, evicting %v), which it may not",
				e.Key, e.Rank, key, v.Rank, v.State, v.Node, v.Started, v.Evicting)
		}
		if v.Rank >= lastRank {
			t.Errorf("%s: victims %v not lowest-ranked first", e.Key, pr.Victims)
		}
		lastRank = v.Rank
		freed += v.GPUs
	}
	if free+soon+freed < e.GPUs || !capOK(capFree+freed) {
		t.Errorf("%s (%d GPUs) does not fit on %s: %d free + %d being freed + %d freed, %d under the bound",
			e.Key, e.GPUs, pr.Node, free, soon, freed, capFree)
	}
	for _, key := range pr.Victims {
		if g := entry[key].GPUs; free+soon+freed-g >= e.GPUs && capOK(capFree+freed-g) {
			t.Errorf("%s: victim %s is not needed (%d free + %d being freed + %d freed - %d)", e.Key, key, free, soon, freed, g)
		}
	}
	// The walk stopped at the highest-ranked victim: what ranks below it was not enough.
	top := entry[pr.Victims[len(pr.Victims)-1]]
	var below int32
	for i := range d.Order {
		if v := &d.Order[i]; v.Rank > top.Rank && evictable(v, e, pr.Node) {
			below += v.GPUs
		}
	}
	if free+soon+below >= e.GPUs && capOK(capFree+below) {
		t.Errorf("%s evicts %s though the jobs ranked below it free %d GPUs with %d free and %d being freed", e.Key, top.Key, below, free, soon)
	}
	return freed
}
