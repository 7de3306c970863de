package queue

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// onNode is the " on node n" ending of the sentences about a node n; "" for none.
func onNode(n string) string {
	if n == "" {
		return ""
	}
	return " on node " + n
}

// waitOf is the part of an Entry the wait tests assert on.
type waitOf struct {
	Wait     WaitReason
	Blocking bool
	Reason   string
	Node     string
}

// waitsOf maps each entry that waits, or blocks, after d to its waitOf.
func waitsOf(d Decision) map[string]waitOf {
	out := map[string]waitOf{}
	for _, e := range d.Order {
		if e.Wait != WaitNone || e.Blocking || e.Reason != "" {
			out[e.Key] = waitOf{Wait: e.Wait, Blocking: e.Blocking, Reason: e.Reason, Node: e.Node}
		}
	}
	return out
}

func TestDecideWaitReason(t *testing.T) {
	const hour = time.Hour
	blocks := "; first in line, so no job ranked below it starts before it"
	cases := map[string]struct {
		snap Snapshot
		// want maps every job that still waits (or blocks) to its waitOf: the others, admitted
		// or holding, must have neither a Wait nor Blocking.
		want map[string]waitOf
	}{
		"pool: too few GPUs free": {
			snap: Snapshot{
				Jobs:     []Job{hold("x/run", "xavier", 3, 0, 0), wait("a/1", "alice", 2, 0, 1), wait("b/1", "bob", 1, 0, 2)},
				Capacity: 4, Now: nodeNow, MaxHeadWait: hour, Preemption: PreemptNever,
			},
			// b/1 ranks first (ordinal 1) and takes the last GPU; it is admitted and does not wait.
			want: map[string]waitOf{"a/1": {Wait: NoGPUsFree, Reason: "0 GPUs free, needs 2"}},
		},
		"pool: larger than the capacity": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 8, 0, 0)},
				Capacity: 4, Now: nodeNow, MaxHeadWait: 0,
			},
			// Never the head, so never blocking either.
			want: map[string]waitOf{"a/1": {Wait: NeverFits, Reason: "needs 8 GPUs but the capacity is 4"}},
		},
		"pool: the head blocks the jobs ranked below it": {
			snap: Snapshot{
				Jobs: []Job{
					hold("x/run", "xavier", 3, 0, 0),
					wait("a/1", "alice", 2, 0, 1),
					wait("a/2", "alice", 1, 0, 2), // ordinal 3: below a/1, and would fit
				},
				Capacity: 4, Now: nodeNow, MaxHeadWait: 0, Preemption: PreemptNever,
			},
			want: map[string]waitOf{
				"a/1": {Wait: NoGPUsFree, Blocking: true, Reason: "1 GPU free, needs 2" + blocks},
				"a/2": {Wait: HeadOfLine, Reason: "held behind a/1, which waits for 2 GPUs"},
			},
		},
		"pool: the head does not block before MaxHeadWait": {
			snap: Snapshot{
				Jobs: []Job{
					hold("x/run", "xavier", 3, 0, 0),
					wait("a/1", "alice", 2, 0, 1),
					wait("a/2", "alice", 1, 0, 2),
				},
				Capacity: 4, Now: nodeNow, MaxHeadWait: hour, Preemption: PreemptNever,
			},
			want: map[string]waitOf{"a/1": {Wait: NoGPUsFree, Reason: "1 GPU free, needs 2"}},
		},
		"pool: backing off": {
			snap: Snapshot{
				Jobs:     []Job{backoff(wait("a/1", "alice", 1, 0, 0), nodeNow.Add(5*time.Minute))},
				Capacity: 4, Now: nodeNow, MaxHeadWait: hour,
			},
			want: map[string]waitOf{"a/1": {Wait: BackingOff, Reason: "backing off after a failed start until 2025-03-01T22:05:00Z"}},
		},
		"pool: preempting": {
			snap: Snapshot{
				Jobs: []Job{
					runs("b/run", "bob", 4, 0, "", ago(hour)),
					wait("a/1", "alice", 2, 0, 1),
				},
				Capacity: 4, Now: nodeNow, MaxHeadWait: hour, Preemption: PreemptFirstGPU, MinRuntime: 10 * time.Minute,
			},
			want: map[string]waitOf{"a/1": {Wait: Reserved, Reason: "preempting 1 lower-ranked job(s)"}},
		},
		"nodes: enough GPUs in total but not on one node": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 3, 0, 0)},
				Nodes:    []Node{gpuNode("n1", 4, 2), gpuNode("n2", 4, 2)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour, Preemption: PreemptNever,
			},
			want: map[string]waitOf{"a/1": {Wait: NoNodeFits, Reason: "4 GPUs free but at most 2 on one node, needs 3"}},
		},
		"nodes: too few GPUs free on all the nodes together": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 2, 0, 0)},
				Nodes:    []Node{gpuNode("n1", 4, 3), gpuNode("n2", 4, 4)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour, Preemption: PreemptNever,
			},
			want: map[string]waitOf{"a/1": {Wait: NoGPUsFree, Reason: "1 GPU free, needs 2"}},
		},
		"nodes: larger than every node": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 8, 0, 0)},
				Nodes:    []Node{gpuNode("n1", 4, 0)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: 0,
			},
			want: map[string]waitOf{"a/1": {Wait: NeverFits, Reason: "needs 8 GPUs but the largest GPU node has 4"}},
		},
		"nodes: larger than the capacity bound": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 3, 0, 0)},
				Nodes:    []Node{gpuNode("n1", 8, 0)},
				Capacity: 2, Now: nodeNow, MaxHeadWait: 0,
			},
			want: map[string]waitOf{"a/1": {Wait: NeverFits, Reason: "needs 3 GPUs but the capacity is 2"}},
		},
		"nodes: no GPU node is ready": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 1, 0, 0)},
				Nodes:    []Node{},
				Capacity: -1, Now: nodeNow, MaxHeadWait: 0,
			},
			want: map[string]waitOf{"a/1": {Wait: NeverFits, Reason: "no GPU node is ready"}},
		},
		"nodes: the capacity bound leaves too few although a node has room": {
			snap: Snapshot{
				Jobs:     []Job{runs("x/run", "xavier", 1, 0, "n1", ago(hour)), wait("a/1", "alice", 2, 0, 1)},
				Nodes:    []Node{gpuNode("n1", 8, 0)},
				Capacity: 2, Now: nodeNow, MaxHeadWait: hour, Preemption: PreemptNever,
			},
			want: map[string]waitOf{"a/1": {Wait: QuotaExceeded, Reason: "1 GPU free, needs 2"}},
		},
		"nodes: the capacity bound leaves too few, and no node has room either": {
			// 3 free on the nodes, 2 within the bound: the sentence counts the bound's 2.
			snap: Snapshot{
				Jobs:     []Job{runs("x/run", "xavier", 1, 0, "n1", ago(hour)), wait("a/1", "alice", 3, 0, 1)},
				Nodes:    []Node{gpuNode("n1", 4, 2), gpuNode("n2", 4, 2)},
				Capacity: 3, Now: nodeNow, MaxHeadWait: hour, Preemption: PreemptNever,
			},
			want: map[string]waitOf{"a/1": {Wait: QuotaExceeded, Reason: "2 GPUs free, needs 3"}},
		},
		"nodes: the head blocks, a smaller job behind it is held": {
			snap: Snapshot{
				Jobs: []Job{
					wait("a/1", "alice", 3, 0, 0),
					wait("a/2", "alice", 1, 0, 1),
					backoff(wait("a/3", "alice", 1, 0, 2), nodeNow.Add(time.Minute)), // held, not backing off
				},
				Nodes:    []Node{gpuNode("n1", 4, 2), gpuNode("n2", 4, 2)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: 0, Preemption: PreemptNever,
			},
			want: map[string]waitOf{
				"a/1": {Wait: NoNodeFits, Blocking: true, Reason: "4 GPUs free but at most 2 on one node, needs 3" + blocks},
				"a/2": {Wait: HeadOfLine, Reason: "held behind a/1, which waits for 3 GPUs"},
				"a/3": {Wait: HeadOfLine, Reason: "held behind a/1, which waits for 3 GPUs"},
			},
		},
		"nodes: preempting": {
			snap: Snapshot{
				Jobs:     []Job{runs("b/run", "bob", 4, 0, "n1", ago(hour)), wait("a/1", "alice", 2, 0, 1)},
				Nodes:    []Node{gpuNode("n1", 4, 0)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour, Preemption: PreemptFirstGPU, MinRuntime: 10 * time.Minute,
			},
			want: map[string]waitOf{"a/1": {Wait: Reserved, Reason: "preempting 1 lower-ranked job(s) on node n1", Node: "n1"}},
		},
		"nodes: waiting for the jobs it preempted to stop": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 2, 0, 1)},
				Nodes:    []Node{stopping("n1", 4, 4, 4)},
				Reserved: map[string]string{"a/1": "n1"},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour, Preemption: PreemptFirstGPU,
			},
			want: map[string]waitOf{"a/1": {Wait: Reserved, Reason: "waiting for the jobs it preempted to stop on node n1", Node: "n1"}},
		},
		"nodes: waiting for GPUs being freed": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 2, 0, 1)},
				Nodes:    []Node{stopping("n1", 4, 4, 2)},
				Capacity: -1, Now: nodeNow, MaxHeadWait: hour, Preemption: PreemptRank,
			},
			want: map[string]waitOf{"a/1": {Wait: Reserved, Reason: "waiting for GPUs being freed on node n1", Node: "n1"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := Decide(tc.snap)
			if diff := cmp.Diff(tc.want, waitsOf(d)); diff != "" {
				t.Errorf("Decide() waits mismatch (-want +got):\n%s", diff)
			}
			checkWaits(t, tc.snap, d)
		})
	}
}

// TestDecideWaitProperties checks Wait and Blocking against Reason, Position and the Decision on
// random snapshots, in pool and node mode.
func TestDecideWaitProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(20260101, 6))
	seen := map[WaitReason]int{}
	for i := range 600 {
		var s Snapshot
		switch i % 4 {
		case 0:
			s = randomSnapshot(r)
		case 1:
			s = randomNodeSnapshot(r, true)
		case 2:
			s = randomNodeSnapshot(r, false)
		default:
			s = randomFragmented(r)
		}
		d := Decide(s)
		for _, e := range d.Order {
			seen[e.Wait]++
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkWaits(t, s, d) })
	}
	// The generators must reach every reason, or the properties hold vacuously.
	for _, w := range []WaitReason{NoGPUsFree, NoNodeFits, NeverFits, HeadOfLine, Reserved, BackingOff, QuotaExceeded} {
		if seen[w] < 20 {
			t.Errorf("%d entries wait with %q, want at least 20", seen[w], w)
		}
	}
}

// randomFragmented is a few waiting jobs on nodes partly taken by other pods: their free GPUs
// are often enough in total but not on one node (NoNodeFits), which the busier snapshots of
// randomNodeSnapshot seldom are.
func randomFragmented(r *rand.Rand) Snapshot {
	s := Snapshot{Capacity: -1, Now: nodeNow, MaxHeadWait: []time.Duration{-1, 0, time.Hour}[r.IntN(3)],
		Preemption: Policy(r.IntN(3)), MinRuntime: 10 * time.Minute}
	for i := range 2 + r.IntN(3) {
		g := int32(4 + r.IntN(5))
		s.Nodes = append(s.Nodes, gpuNode(fmt.Sprintf("n%d", i), g, int32(r.IntN(int(g)+1))))
	}
	if r.IntN(3) == 0 {
		s.Capacity = int32(r.IntN(20))
	}
	for i := range 1 + r.IntN(6) {
		s.Jobs = append(s.Jobs, wait(fmt.Sprintf("ns/j%d", i), fmt.Sprintf("user%d", r.IntN(3)), int32(1+r.IntN(8)), 0, i))
	}
	return s
}

// checkWaits: every job still waiting has a Wait, and only those; Wait names the case of its
// Reason; Blocking is on the head alone, when the decision blocks.
func checkWaits(t *testing.T, s Snapshot, d Decision) {
	t.Helper()
	blocks := "; first in line, so no job ranked below it starts before it"
	for _, e := range d.Order {
		waits := e.State == Waiting && !e.Admit
		if waits != (e.Wait != WaitNone) || waits != (e.Position > 0) {
			t.Errorf("%s: state %v, admitted %v, position %d: Wait %q", e.Key, e.State, e.Admit, e.Position, e.Wait)
		}
		if want := d.Blocking && e.Key == d.Head; e.Blocking != want || e.Blocking != strings.HasSuffix(e.Reason, blocks) {
			t.Errorf("%s: Blocking %v, want %v (head %q, blocking %v, reason %q)", e.Key, e.Blocking, want, d.Head, d.Blocking, e.Reason)
		}
		if e.Wait == WaitNone {
			continue
		}
		reason := strings.TrimSuffix(e.Reason, blocks)
		var want []WaitReason
		switch {
		case strings.HasPrefix(reason, "held behind "):
			want = []WaitReason{HeadOfLine}
		case strings.HasPrefix(reason, "backing off "):
			want = []WaitReason{BackingOff}
		case strings.HasPrefix(reason, "preempting "), strings.HasPrefix(reason, "waiting for the jobs it preempted to stop"),
			strings.HasPrefix(reason, "waiting for GPUs being freed"):
			want = []WaitReason{Reserved}
		case strings.HasPrefix(reason, "needs "), reason == "no GPU node is ready":
			want = []WaitReason{NeverFits}
		case strings.Contains(reason, " free but at most "):
			want = []WaitReason{NoNodeFits}
		case strings.Contains(reason, " free, needs ") && s.Nodes != nil && s.Capacity >= 0:
			want = []WaitReason{NoGPUsFree, QuotaExceeded}
		case strings.Contains(reason, " free, needs "):
			want = []WaitReason{NoGPUsFree}
		}
		if !slices.Contains(want, e.Wait) {
			t.Errorf("%s: Wait %q for reason %q, want one of %q", e.Key, e.Wait, e.Reason, want)
		}
		if e.Wait == Reserved && (e.Node == "" && s.Nodes != nil || d.Reserved[e.Key] != e.Node) {
			t.Errorf("%s: Reserved on node %q, Decision.Reserved %q", e.Key, e.Node, d.Reserved[e.Key])
		}
		if e.Wait == HeadOfLine && (!d.Blocking || e.Key == d.Head) {
			t.Errorf("%s: held behind %q, blocking %v", e.Key, d.Head, d.Blocking)
		}
	}
}

func TestPolicyNames(t *testing.T) {
	cases := map[string]struct {
		in      string
		want    Policy
		wantErr string
	}{
		"FirstGPU":          {in: "FirstGPU", want: PreemptFirstGPU},
		"Rank":              {in: "Rank", want: PreemptRank},
		"Never":             {in: "Never", want: PreemptNever},
		"any case":          {in: "never", want: PreemptNever},
		"upper case":        {in: "FIRSTGPU", want: PreemptFirstGPU},
		"unknown":           {in: "Sometimes", wantErr: `preemption must be FirstGPU, Rank or Never, not "Sometimes"`},
		"empty":             {in: "", wantErr: `preemption must be FirstGPU, Rank or Never, not ""`},
		"space is not part": {in: " Rank", wantErr: `preemption must be FirstGPU, Rank or Never, not " Rank"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePolicy(tc.in)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if diff := cmp.Diff(tc.wantErr, gotErr); diff != "" {
				t.Errorf("ParsePolicy(%q) error mismatch (-want +got):\n%s", tc.in, diff)
			}
			if diff := cmp.Diff(tc.want, got); err == nil && diff != "" {
				t.Errorf("ParsePolicy(%q) mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}

	names := map[Policy]string{PreemptFirstGPU: "FirstGPU", PreemptRank: "Rank", PreemptNever: "Never", Policy(7): "Policy(7)"}
	for p, want := range names {
		if diff := cmp.Diff(want, p.String()); diff != "" {
			t.Errorf("Policy(%d).String() mismatch (-want +got):\n%s", int(p), diff)
		}
		if p > PreemptNever {
			continue
		}
		if got, err := ParsePolicy(p.String()); err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %v, %v; want %v", p.String(), got, err, p)
		}
	}
}
