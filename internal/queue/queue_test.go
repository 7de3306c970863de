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

// t0 is an arbitrary, whole-second origin: creationTimestamp has a resolution of one second.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// at returns t0 plus sec seconds.
func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// wait builds a waiting job.
func wait(key, user string, gpus, prio int32, created int) Job {
	return Job{Key: key, User: user, Priority: prio, Created: at(created), GPUs: gpus, State: Waiting}
}

// hold builds a job that holds its GPUs.
func hold(key, user string, gpus, prio int32, created int) Job {
	j := wait(key, user, gpus, prio, created)
	j.State = Holding
	return j
}

// placed is the part of an Entry the ordering tests assert on.
type placed struct {
	Key      string
	Rank     int
	First    int32
	Last     int32
	UserGPUs string
}

func placements(order []Entry) []placed {
	out := make([]placed, 0, len(order))
	for _, e := range order {
		out = append(out, placed{Key: e.Key, Rank: e.Rank, First: e.FirstGPU, Last: e.LastGPU, UserGPUs: e.UserGPUs()})
	}
	return out
}

func TestUserGPUs(t *testing.T) {
	cases := map[string]struct {
		first, last int32
		want        string
	}{
		"single first GPU":       {first: 1, last: 1, want: "1"},
		"single later GPU":       {first: 7, last: 7, want: "7"},
		"two-GPU first job":      {first: 1, last: 2, want: "1-2"},
		"range in the middle":    {first: 2, last: 3, want: "2-3"},
		"wide range, two digits": {first: 9, last: 16, want: "9-16"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Entry{FirstGPU: tc.first, LastGPU: tc.last}.UserGPUs()
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("UserGPUs() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// sign maps a comparison result to -1, 0 or 1.
func sign(c int) int {
	switch {
	case c < 0:
		return -1
	case c > 0:
		return 1
	}
	return 0
}

func TestCompareInUser(t *testing.T) {
	cases := map[string]struct {
		a, b Job
		want int
	}{
		"higher priority first though newer": {
			a: wait("ns/new", "u", 1, 1, 100), b: wait("ns/old", "u", 1, 0, 0), want: -1,
		},
		"lower priority after though older": {
			a: wait("ns/old", "u", 1, -1, 0), b: wait("ns/new", "u", 1, 0, 100), want: 1,
		},
		"priority beats a smaller key": {
			a: wait("ns/z", "u", 1, 2, 5), b: wait("ns/a", "u", 1, 1, 5), want: -1,
		},
		"equal priority, earlier created first": {
			a: wait("ns/z", "u", 1, 0, 1), b: wait("ns/a", "u", 1, 0, 2), want: -1,
		},
		"equal priority, later created after": {
			a: wait("ns/a", "u", 1, 0, 2), b: wait("ns/z", "u", 1, 0, 1), want: 1,
		},
		"same second, key ascending": {
			a: wait("ns/a", "u", 4, 0, 3), b: wait("ns/b", "u", 1, 0, 3), want: -1,
		},
		"same second, namespace decides before name": {
			a: wait("beta/a", "u", 1, 0, 3), b: wait("alpha/z", "u", 1, 0, 3), want: 1,
		},
		"GPU count plays no part": {
			a: wait("ns/a", "u", 8, 0, 3), b: wait("ns/b", "u", 1, 0, 3), want: -1,
		},
		"same job compares equal": {
			a: wait("ns/a", "u", 1, 0, 3), b: wait("ns/a", "u", 1, 0, 3), want: 0,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, sign(CompareInUser(&tc.a, &tc.b))); diff != "" {
				t.Errorf("CompareInUser(a, b) mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(-tc.want, sign(CompareInUser(&tc.b, &tc.a))); diff != "" {
				t.Errorf("CompareInUser(b, a) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCompareGlobal(t *testing.T) {
	entry := func(key string, last int32, created int, prio int32) Entry {
		j := wait(key, "u-"+key, 1, prio, created)
		return Entry{Job: &j, Node: j.Node, FirstGPU: last, LastGPU: last}
	}
	cases := map[string]struct {
		a, b Entry
		want int
	}{
		"lower ordinal first though newer": {
			a: entry("ns/a", 1, 100, 0), b: entry("ns/b", 2, 0, 0), want: -1,
		},
		"priority plays no part across users": {
			a: entry("ns/a", 3, 0, 5), b: entry("ns/b", 2, 0, 0), want: 1,
		},
		"equal ordinal, earlier created first": {
			a: entry("ns/z", 2, 1, 0), b: entry("ns/a", 2, 2, 0), want: -1,
		},
		"equal ordinal and second, key ascending": {
			a: entry("ns/b", 2, 1, 0), b: entry("ns/a", 2, 1, 0), want: 1,
		},
		"same entry compares equal": {
			a: entry("ns/a", 2, 1, 0), b: entry("ns/a", 2, 1, 0), want: 0,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, sign(CompareGlobal(&tc.a, &tc.b))); diff != "" {
				t.Errorf("CompareGlobal(a, b) mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(-tc.want, sign(CompareGlobal(&tc.b, &tc.a))); diff != "" {
				t.Errorf("CompareGlobal(b, a) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOrderWithinUser uses a single user, so the global order is the user's order.
func TestOrderWithinUser(t *testing.T) {
	cases := map[string]struct {
		jobs []Job
		want []placed
	}{
		"higher priority first even if newer": {
			jobs: []Job{wait("ns/old", "alice", 1, 0, 0), wait("ns/new", "alice", 1, 1, 60)},
			want: []placed{
				{Key: "ns/new", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "ns/old", Rank: 2, First: 2, Last: 2, UserGPUs: "2"},
			},
		},
		"negative priority after default priority": {
			jobs: []Job{wait("ns/low", "alice", 1, -1, 0), wait("ns/norm", "alice", 1, 0, 60)},
			want: []placed{
				{Key: "ns/norm", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "ns/low", Rank: 2, First: 2, Last: 2, UserGPUs: "2"},
			},
		},
		"equal priority, earlier created first": {
			jobs: []Job{wait("ns/a", "alice", 1, 0, 2), wait("ns/b", "alice", 1, 0, 1)},
			want: []placed{
				{Key: "ns/b", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "ns/a", Rank: 2, First: 2, Last: 2, UserGPUs: "2"},
			},
		},
		"same second, key ascending": {
			jobs: []Job{
				wait("ns/c", "alice", 1, 0, 5),
				wait("ns/a", "alice", 1, 0, 5),
				wait("ns/b", "alice", 1, 0, 5),
			},
			want: []placed{
				{Key: "ns/a", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "ns/b", Rank: 2, First: 2, Last: 2, UserGPUs: "2"},
				{Key: "ns/c", Rank: 3, First: 3, Last: 3, UserGPUs: "3"},
			},
		},
		"same second, namespace before name": {
			jobs: []Job{wait("beta/a", "alice", 1, 0, 5), wait("alpha/z", "alice", 1, 0, 5)},
			want: []placed{
				{Key: "alpha/z", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "beta/a", Rank: 2, First: 2, Last: 2, UserGPUs: "2"},
			},
		},
		"ordinal is cumulative GPUs": {
			jobs: []Job{
				wait("ns/first", "alice", 2, 0, 0),
				wait("ns/second", "alice", 1, 0, 1),
				wait("ns/third", "alice", 3, 0, 2),
			},
			want: []placed{
				{Key: "ns/first", Rank: 1, First: 1, Last: 2, UserGPUs: "1-2"},
				{Key: "ns/second", Rank: 2, First: 3, Last: 3, UserGPUs: "3"},
				{Key: "ns/third", Rank: 3, First: 4, Last: 6, UserGPUs: "4-6"},
			},
		},
		"holding jobs take ordinals by the same rule": {
			jobs: []Job{
				hold("ns/running", "alice", 2, 0, 0),
				wait("ns/urgent", "alice", 1, 1, 100),
			},
			want: []placed{
				{Key: "ns/urgent", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "ns/running", Rank: 2, First: 2, Last: 3, UserGPUs: "2-3"},
			},
		},
		"CPU-only jobs take no ordinal and are left out": {
			jobs: []Job{
				wait("ns/cpu", "alice", 0, 5, 0),
				hold("ns/cpu-running", "alice", 0, 5, 0),
				wait("ns/gpu", "alice", 2, 0, 1),
			},
			want: []placed{
				{Key: "ns/gpu", Rank: 1, First: 1, Last: 2, UserGPUs: "1-2"},
			},
		},
		"priority, then time, then key": {
			jobs: []Job{
				wait("ns/p0-t1-b", "alice", 1, 0, 1),
				wait("ns/p0-t1-a", "alice", 2, 0, 1),
				wait("ns/p0-t0", "alice", 1, 0, 0),
				wait("ns/p1-t9", "alice", 1, 1, 9),
			},
			want: []placed{
				{Key: "ns/p1-t9", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "ns/p0-t0", Rank: 2, First: 2, Last: 2, UserGPUs: "2"},
				{Key: "ns/p0-t1-a", Rank: 3, First: 3, Last: 4, UserGPUs: "3-4"},
				{Key: "ns/p0-t1-b", Rank: 4, First: 5, Last: 5, UserGPUs: "5"},
			},
		},
		"no jobs": {
			jobs: nil,
			want: []placed{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := placements(Order(tc.jobs))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Order() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOrderGlobal(t *testing.T) {
	cases := map[string]struct {
		jobs []Job
		want []placed
	}{
		"a user's first job ranks above another's older second job": {
			jobs: []Job{
				wait("b/1", "bob", 1, 0, 0),
				wait("b/2", "bob", 1, 0, 1),
				wait("a/1", "alice", 1, 0, 100),
			},
			want: []placed{
				{Key: "b/1", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "a/1", Rank: 2, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "b/2", Rank: 3, First: 2, Last: 2, UserGPUs: "2"},
			},
		},
		"equal ordinals, earlier created first": {
			jobs: []Job{
				wait("a/1", "alice", 1, 0, 20),
				wait("b/1", "bob", 1, 0, 10),
				wait("c/1", "carol", 1, 0, 30),
			},
			want: []placed{
				{Key: "b/1", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "a/1", Rank: 2, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "c/1", Rank: 3, First: 1, Last: 1, UserGPUs: "1"},
			},
		},
		"equal ordinals in the same second, key ascending": {
			jobs: []Job{
				wait("zeta/job", "alice", 1, 0, 5),
				wait("alpha/job", "bob", 1, 0, 5),
			},
			want: []placed{
				{Key: "alpha/job", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "zeta/job", Rank: 2, First: 1, Last: 1, UserGPUs: "1"},
			},
		},
		"a big first job ranks by its last GPU": {
			jobs: []Job{
				wait("a/big", "alice", 4, 0, 0),
				wait("b/1", "bob", 1, 0, 10),
				wait("b/2", "bob", 1, 0, 11),
				wait("b/3", "bob", 1, 0, 12),
				wait("b/4", "bob", 1, 0, 13),
				wait("b/5", "bob", 1, 0, 14),
			},
			want: []placed{
				{Key: "b/1", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "b/2", Rank: 2, First: 2, Last: 2, UserGPUs: "2"},
				{Key: "b/3", Rank: 3, First: 3, Last: 3, UserGPUs: "3"},
				{Key: "a/big", Rank: 4, First: 1, Last: 4, UserGPUs: "1-4"},
				{Key: "b/4", Rank: 5, First: 4, Last: 4, UserGPUs: "4"},
				{Key: "b/5", Rank: 6, First: 5, Last: 5, UserGPUs: "5"},
			},
		},
		"priority only orders within a user": {
			jobs: []Job{
				wait("a/1", "alice", 1, 0, 0),
				wait("a/2", "alice", 1, 0, 1),
				wait("b/1", "bob", 1, 2, 50),
				wait("b/2", "bob", 1, 2, 51),
			},
			want: []placed{
				{Key: "a/1", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "b/1", Rank: 2, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "a/2", Rank: 3, First: 2, Last: 2, UserGPUs: "2"},
				{Key: "b/2", Rank: 4, First: 2, Last: 2, UserGPUs: "2"},
			},
		},
		"holding and waiting jobs share the order": {
			jobs: []Job{
				hold("a/run", "alice", 2, 0, 0),
				wait("a/next", "alice", 1, 0, 1),
				wait("b/1", "bob", 2, 0, 30),
			},
			want: []placed{
				{Key: "a/run", Rank: 1, First: 1, Last: 2, UserGPUs: "1-2"},
				{Key: "b/1", Rank: 2, First: 1, Last: 2, UserGPUs: "1-2"},
				{Key: "a/next", Rank: 3, First: 3, Last: 3, UserGPUs: "3"},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := placements(Order(tc.jobs))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Order() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOrderPriorityChangeReranks changes one job's priority and checks the whole order moves.
func TestOrderPriorityChangeReranks(t *testing.T) {
	base := func() []Job {
		return []Job{
			wait("a/1", "alice", 1, 0, 0),
			wait("a/2", "alice", 2, 0, 1),
			wait("a/3", "alice", 1, 0, 2),
			wait("b/1", "bob", 1, 0, 5),
			wait("b/2", "bob", 1, 0, 6),
		}
	}
	before := []placed{
		{Key: "a/1", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
		{Key: "b/1", Rank: 2, First: 1, Last: 1, UserGPUs: "1"},
		{Key: "b/2", Rank: 3, First: 2, Last: 2, UserGPUs: "2"},
		{Key: "a/2", Rank: 4, First: 2, Last: 3, UserGPUs: "2-3"},
		{Key: "a/3", Rank: 5, First: 4, Last: 4, UserGPUs: "4"},
	}
	if diff := cmp.Diff(before, placements(Order(base()))); diff != "" {
		t.Fatalf("Order() of the base jobs mismatch (-want +got):\n%s", diff)
	}

	cases := map[string]struct {
		key      string
		priority int32
		want     []placed
	}{
		"raising the newest job moves it first and shifts the others": {
			key: "a/3", priority: 1,
			want: []placed{
				{Key: "a/3", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "b/1", Rank: 2, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "a/1", Rank: 3, First: 2, Last: 2, UserGPUs: "2"},
				{Key: "b/2", Rank: 4, First: 2, Last: 2, UserGPUs: "2"},
				{Key: "a/2", Rank: 5, First: 3, Last: 4, UserGPUs: "3-4"},
			},
		},
		"lowering the first job moves it last and pulls the others up": {
			key: "a/1", priority: -1,
			want: []placed{
				{Key: "b/1", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "a/2", Rank: 2, First: 1, Last: 2, UserGPUs: "1-2"},
				{Key: "b/2", Rank: 3, First: 2, Last: 2, UserGPUs: "2"},
				{Key: "a/3", Rank: 4, First: 3, Last: 3, UserGPUs: "3"},
				{Key: "a/1", Rank: 5, First: 4, Last: 4, UserGPUs: "4"},
			},
		},
		"raising the big job gives it GPUs 1-2": {
			key: "a/2", priority: 2,
			want: []placed{
				{Key: "b/1", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "a/2", Rank: 2, First: 1, Last: 2, UserGPUs: "1-2"},
				{Key: "b/2", Rank: 3, First: 2, Last: 2, UserGPUs: "2"},
				{Key: "a/1", Rank: 4, First: 3, Last: 3, UserGPUs: "3"},
				{Key: "a/3", Rank: 5, First: 4, Last: 4, UserGPUs: "4"},
			},
		},
		"raising another user's job does not move this user's ordinals": {
			key: "b/2", priority: 1,
			want: []placed{
				{Key: "a/1", Rank: 1, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "b/2", Rank: 2, First: 1, Last: 1, UserGPUs: "1"},
				{Key: "b/1", Rank: 3, First: 2, Last: 2, UserGPUs: "2"},
				{Key: "a/2", Rank: 4, First: 2, Last: 3, UserGPUs: "2-3"},
				{Key: "a/3", Rank: 5, First: 4, Last: 4, UserGPUs: "4"},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			jobs := base()
			i := slices.IndexFunc(jobs, func(j Job) bool { return j.Key == tc.key })
			if i < 0 {
				t.Fatalf("no job %q", tc.key)
			}
			jobs[i].Priority = tc.priority
			if diff := cmp.Diff(tc.want, placements(Order(jobs))); diff != "" {
				t.Errorf("Order() after the priority change mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// outcome is the part of a Decision the admission tests assert on.
type outcome struct {
	Admit     []string
	Used      int32
	Free      int32
	Head      string
	HeadSince time.Time
	Blocking  bool
	Wakeup    time.Time
	Positions map[string]int
}

func outcomeOf(d Decision) outcome {
	o := outcome{
		Used: d.Used, Free: d.Free, Head: d.Head, HeadSince: d.HeadSince, Blocking: d.Blocking, Wakeup: d.Wakeup,
		Positions: map[string]int{},
	}
	for _, e := range d.Order {
		if e.Admit {
			o.Admit = append(o.Admit, e.Key)
		}
		o.Positions[e.Key] = e.Position
	}
	return o
}

func TestDecideAdmission(t *testing.T) {
	now := at(3600)
	const maxWait = 10 * time.Minute

	// passing: capacity 4, bob holds 2 GPUs; alice's 3-GPU job ranks before bob's 1-GPU jobs b/3 and
	// b/4 but does not fit. Order: b/1(1) b/2(2) a/big(3, t0) b/3(3, t5) b/4(4).
	passing := []Job{
		hold("b/1", "bob", 1, 0, 0),
		hold("b/2", "bob", 1, 0, 1),
		wait("a/big", "alice", 3, 0, 0),
		wait("b/3", "bob", 1, 0, 5),
		wait("b/4", "bob", 1, 0, 6),
	}

	cases := map[string]struct {
		snap Snapshot
		want outcome
		// reasons maps a key to a substring its Reason must contain.
		reasons map[string]string
	}{
		"everything fits: admitted in order, no head": {
			snap: Snapshot{
				Jobs: []Job{
					wait("a/1", "alice", 1, 0, 10),
					wait("b/1", "bob", 2, 0, 0),
					wait("a/2", "alice", 1, 0, 11),
				},
				Capacity: 4, Now: now, MaxHeadWait: maxWait,
			},
			want: outcome{
				Admit: []string{"a/1", "b/1", "a/2"}, Used: 0, Free: 0,
				Positions: map[string]int{"a/1": 0, "b/1": 0, "a/2": 0},
			},
		},
		"holding jobs count as used": {
			snap: Snapshot{
				Jobs: []Job{
					hold("a/run", "alice", 3, 0, 0),
					wait("b/1", "bob", 1, 0, 10),
					wait("c/1", "carol", 1, 0, 20),
				},
				Capacity: 4, Now: now, MaxHeadWait: maxWait,
			},
			want: outcome{
				Admit: []string{"b/1"}, Used: 3, Free: 0,
				Head: "c/1", HeadSince: now, Wakeup: now.Add(maxWait),
				Positions: map[string]int{"b/1": 0, "c/1": 1, "a/run": 0},
			},
			reasons: map[string]string{"c/1": "0 GPUs free, needs 1"},
		},
		"a job that does not fit lets smaller jobs behind it pass": {
			snap: Snapshot{Jobs: passing, Capacity: 4, Now: now, MaxHeadWait: maxWait},
			want: outcome{
				Admit: []string{"b/3", "b/4"}, Used: 2, Free: 0,
				Head: "a/big", HeadSince: now, Wakeup: now.Add(maxWait),
				Positions: map[string]int{"b/1": 0, "b/2": 0, "a/big": 1, "b/3": 0, "b/4": 0},
			},
			reasons: map[string]string{"a/big": "2 GPUs free, needs 3"},
		},
		"same head keeps its HeadSince and still lets jobs pass": {
			snap: Snapshot{
				Jobs: passing, Capacity: 4, Now: now, MaxHeadWait: maxWait,
				Head: "a/big", HeadSince: now.Add(-5 * time.Minute),
			},
			want: outcome{
				Admit: []string{"b/3", "b/4"}, Used: 2, Free: 0,
				Head: "a/big", HeadSince: now.Add(-5 * time.Minute), Wakeup: now.Add(5 * time.Minute),
				Positions: map[string]int{"b/1": 0, "b/2": 0, "a/big": 1, "b/3": 0, "b/4": 0},
			},
		},
		"one second before the deadline the head does not block yet": {
			snap: Snapshot{
				Jobs: passing, Capacity: 4, Now: now, MaxHeadWait: maxWait,
				Head: "a/big", HeadSince: now.Add(-maxWait + time.Second),
			},
			want: outcome{
				Admit: []string{"b/3", "b/4"}, Used: 2, Free: 0,
				Head: "a/big", HeadSince: now.Add(-maxWait + time.Second), Wakeup: now.Add(time.Second),
				Positions: map[string]int{"b/1": 0, "b/2": 0, "a/big": 1, "b/3": 0, "b/4": 0},
			},
		},
		"at the deadline the head blocks every job ranked below it": {
			snap: Snapshot{
				Jobs: passing, Capacity: 4, Now: now, MaxHeadWait: maxWait,
				Head: "a/big", HeadSince: now.Add(-maxWait),
			},
			want: outcome{
				Admit: nil, Used: 2, Free: 2,
				Head: "a/big", HeadSince: now.Add(-maxWait), Blocking: true,
				Positions: map[string]int{"b/1": 0, "b/2": 0, "a/big": 1, "b/3": 2, "b/4": 3},
			},
			reasons: map[string]string{
				"a/big": "first in line",
				"b/3":   "held behind a/big",
				"b/4":   "held behind a/big, which waits for 3 GPUs",
			},
		},
		"long past the deadline the head still blocks": {
			snap: Snapshot{
				Jobs: passing, Capacity: 4, Now: now, MaxHeadWait: maxWait,
				Head: "a/big", HeadSince: now.Add(-24 * time.Hour),
			},
			want: outcome{
				Used: 2, Free: 2,
				Head: "a/big", HeadSince: now.Add(-24 * time.Hour), Blocking: true,
				Positions: map[string]int{"b/1": 0, "b/2": 0, "a/big": 1, "b/3": 2, "b/4": 3},
			},
			reasons: map[string]string{"b/3": "held behind a/big"},
		},
		"a new head starts its wait now": {
			snap: Snapshot{
				Jobs: passing, Capacity: 4, Now: now, MaxHeadWait: maxWait,
				Head: "gone/job", HeadSince: now.Add(-24 * time.Hour),
			},
			want: outcome{
				Admit: []string{"b/3", "b/4"}, Used: 2, Free: 0,
				Head: "a/big", HeadSince: now, Wakeup: now.Add(maxWait),
				Positions: map[string]int{"b/1": 0, "b/2": 0, "a/big": 1, "b/3": 0, "b/4": 0},
			},
		},
		"same head with a zero HeadSince starts its wait now": {
			snap: Snapshot{
				Jobs: passing, Capacity: 4, Now: now, MaxHeadWait: maxWait, Head: "a/big",
			},
			want: outcome{
				Admit: []string{"b/3", "b/4"}, Used: 2, Free: 0,
				Head: "a/big", HeadSince: now, Wakeup: now.Add(maxWait),
				Positions: map[string]int{"b/1": 0, "b/2": 0, "a/big": 1, "b/3": 0, "b/4": 0},
			},
		},
		"zero MaxHeadWait blocks at once": {
			snap: Snapshot{Jobs: passing, Capacity: 4, Now: now, MaxHeadWait: 0},
			want: outcome{
				Used: 2, Free: 2,
				Head: "a/big", HeadSince: now, Blocking: true,
				Positions: map[string]int{"b/1": 0, "b/2": 0, "a/big": 1, "b/3": 2, "b/4": 3},
			},
			reasons: map[string]string{"b/4": "held behind a/big"},
		},
		"negative MaxHeadWait never blocks": {
			snap: Snapshot{
				Jobs: passing, Capacity: 4, Now: now, MaxHeadWait: -1,
				Head: "a/big", HeadSince: now.Add(-24 * 365 * time.Hour),
			},
			want: outcome{
				Admit: []string{"b/3", "b/4"}, Used: 2, Free: 0,
				Head: "a/big", HeadSince: now.Add(-24 * 365 * time.Hour),
				Positions: map[string]int{"b/1": 0, "b/2": 0, "a/big": 1, "b/3": 0, "b/4": 0},
			},
		},
		"jobs ranked above a blocking head are still admitted": {
			snap: Snapshot{
				Jobs: []Job{
					wait("x/1", "xavier", 1, 0, 10),
					wait("a/big", "alice", 3, 0, 0),
					hold("y/run", "yves", 2, 0, 0),
					wait("y/small", "yves", 1, 0, 20),
				},
				Capacity: 4, Now: now, MaxHeadWait: 0,
			},
			// Order: x/1(1) y/run(2) a/big(3, t0) y/small(3, t20). Free 2: x/1 admitted, a/big
			// (3 > 1) blocks at once, y/small held.
			want: outcome{
				Admit: []string{"x/1"}, Used: 2, Free: 1,
				Head: "a/big", HeadSince: now, Blocking: true,
				Positions: map[string]int{"x/1": 0, "y/run": 0, "a/big": 1, "y/small": 2},
			},
			reasons: map[string]string{"a/big": "1 GPU free, needs 3", "y/small": "held behind a/big"},
		},
		"only the first job that does not fit is head": {
			snap: Snapshot{
				Jobs: []Job{
					hold("r/run", "rita", 3, 0, 0),
					wait("a/two", "alice", 2, 0, 10),
					wait("b/two", "bob", 2, 0, 20),
					wait("c/one", "carol", 1, 0, 30),
				},
				Capacity: 4, Now: now, MaxHeadWait: maxWait,
				Head: "b/two", HeadSince: now.Add(-time.Hour),
			},
			// Order: c/one(1) a/two(2, t10) b/two(2, t20) r/run(3). Free 1: c/one admitted,
			// a/two is head (new, so its wait starts now), b/two waits behind it.
			want: outcome{
				Admit: []string{"c/one"}, Used: 3, Free: 0,
				Head: "a/two", HeadSince: now, Wakeup: now.Add(maxWait),
				Positions: map[string]int{"c/one": 0, "a/two": 1, "b/two": 2, "r/run": 0},
			},
			reasons: map[string]string{"a/two": "0 GPUs free, needs 2", "b/two": "0 GPUs free, needs 2"},
		},
		"a job larger than the capacity never becomes head and never blocks": {
			snap: Snapshot{
				Jobs: []Job{
					wait("a/huge", "alice", 5, 1, 0),
					wait("a/small", "alice", 1, 0, 1),
					wait("b/1", "bob", 1, 0, 2),
					hold("b/run", "bob", 1, 0, 3),
				},
				Capacity: 4, Now: now, MaxHeadWait: 0,
				Head: "a/huge", HeadSince: now.Add(-time.Hour),
			},
			// Order: b/1(1) b/run(2) a/huge(5) a/small(6). With zero wait a head would block at
			// once, yet a/small is admitted.
			want: outcome{
				Admit: []string{"b/1", "a/small"}, Used: 1, Free: 1,
				Positions: map[string]int{"b/1": 0, "b/run": 0, "a/huge": 1, "a/small": 0},
			},
			reasons: map[string]string{"a/huge": "needs 5 GPUs but the capacity is 4"},
		},
		"the head is the first job that could ever fit": {
			snap: Snapshot{
				Jobs: []Job{
					wait("d/one", "dora", 1, 0, 9),
					hold("c/run", "carol", 2, 1, 0),
					wait("c/three", "carol", 3, 0, 2),
					wait("a/huge", "alice", 5, 0, 0),
					wait("b/huge", "bob", 6, 0, 1),
				},
				Capacity: 4, Now: now, MaxHeadWait: maxWait,
				Head: "a/huge", HeadSince: now.Add(-time.Hour),
			},
			// Order: d/one(1) c/run(2) a/huge(5, t0) c/three(5, t2) b/huge(6). Free 2: d/one is
			// admitted (1 left), a/huge can never fit so c/three, ranked below it, is head.
			want: outcome{
				Admit: []string{"d/one"}, Used: 2, Free: 1,
				Head: "c/three", HeadSince: now, Wakeup: now.Add(maxWait),
				Positions: map[string]int{"d/one": 0, "c/run": 0, "a/huge": 1, "c/three": 2, "b/huge": 3},
			},
			reasons: map[string]string{
				"a/huge":  "needs 5 GPUs but the capacity is 4",
				"c/three": "1 GPU free, needs 3",
				"b/huge":  "needs 6 GPUs but the capacity is 4",
			},
		},
		"holding more than the capacity leaves nothing free": {
			snap: Snapshot{
				Jobs: []Job{
					hold("a/run", "alice", 3, 0, 0),
					wait("b/1", "bob", 1, 0, 10),
					wait("c/1", "carol", 1, 0, 20),
				},
				Capacity: 2, Now: now, MaxHeadWait: -1,
			},
			want: outcome{
				Used: 3, Free: 0,
				Head: "b/1", HeadSince: now,
				Positions: map[string]int{"a/run": 0, "b/1": 1, "c/1": 2},
			},
			reasons: map[string]string{"b/1": "0 GPUs free, needs 1", "c/1": "0 GPUs free, needs 1"},
		},
		"zero capacity admits no GPU job and has no head": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 1, 0, 0)},
				Capacity: 0, Now: now, MaxHeadWait: 0,
			},
			want: outcome{
				Positions: map[string]int{"a/1": 1},
			},
			reasons: map[string]string{"a/1": "needs 1 GPU but the capacity is 0"},
		},
		"only holding jobs: nothing to admit, no head": {
			snap: Snapshot{
				Jobs:     []Job{hold("a/1", "alice", 2, 0, 0), hold("b/1", "bob", 1, 0, 0)},
				Capacity: 8, Now: now, MaxHeadWait: maxWait, Head: "a/1", HeadSince: now.Add(-time.Hour),
			},
			want: outcome{
				Used: 3, Free: 5,
				Positions: map[string]int{"a/1": 0, "b/1": 0},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := Decide(tc.snap)
			if diff := cmp.Diff(tc.want, outcomeOf(d)); diff != "" {
				t.Errorf("Decide() mismatch (-want +got):\n%s", diff)
			}
			for _, e := range d.Order {
				waits := e.State == Waiting && !e.Admit
				if waits && e.Reason == "" {
					t.Errorf("%s still waits but has no Reason", e.Key)
				}
				if !waits && e.Reason != "" {
					t.Errorf("%s does not wait but has Reason %q", e.Key, e.Reason)
				}
				if want, ok := tc.reasons[e.Key]; ok && !strings.Contains(e.Reason, want) {
					t.Errorf("%s: Reason %q does not contain %q", e.Key, e.Reason, want)
				}
			}
			for key := range tc.reasons {
				if !slices.ContainsFunc(d.Order, func(e Entry) bool { return e.Key == key }) {
					t.Errorf("reason expected for %s, which is not in the order", key)
				}
			}
		})
	}
}

func TestDecideCPUJobs(t *testing.T) {
	now := at(3600)
	type cpuOutcome struct {
		AdmitCPU []string
		Order    []string
		Admit    []string
		Used     int32
		Free     int32
		Blocking bool
	}
	cases := map[string]struct {
		snap Snapshot
		want cpuOutcome
	}{
		"admitted with zero capacity, sorted by key": {
			snap: Snapshot{
				Jobs: []Job{
					wait("ns/c", "carol", 0, 0, 0),
					wait("ns/a", "alice", 0, 0, 9),
					wait("ms/z", "bob", 0, -2, 5),
				},
				Capacity: 0, Now: now,
			},
			want: cpuOutcome{AdmitCPU: []string{"ms/z", "ns/a", "ns/c"}},
		},
		"holding CPU jobs are not admitted again and use no GPUs": {
			snap: Snapshot{
				Jobs: []Job{
					hold("a/cpu-run", "alice", 0, 0, 0),
					wait("a/cpu", "alice", 0, 0, 1),
					wait("a/gpu", "alice", 2, 0, 2),
				},
				Capacity: 2, Now: now,
			},
			want: cpuOutcome{AdmitCPU: []string{"a/cpu"}, Order: []string{"a/gpu"}, Admit: []string{"a/gpu"}, Used: 0, Free: 0},
		},
		"admitted even when every GPU is taken and the head blocks": {
			snap: Snapshot{
				Jobs: []Job{
					hold("a/run", "alice", 4, 0, 0),
					wait("b/gpu", "bob", 2, 0, 1),
					wait("b/cpu", "bob", 0, 0, 2),
				},
				Capacity: 4, Now: now, MaxHeadWait: 0,
			},
			want: cpuOutcome{AdmitCPU: []string{"b/cpu"}, Order: []string{"b/gpu", "a/run"}, Used: 4, Free: 0, Blocking: true},
		},
		"they take no ordinal from their user's GPU jobs": {
			snap: Snapshot{
				Jobs: []Job{
					wait("a/cpu", "alice", 0, 2, 0),
					wait("a/gpu", "alice", 1, 0, 10),
					wait("b/gpu1", "bob", 1, 0, 5),
					wait("b/gpu2", "bob", 1, 0, 6),
				},
				Capacity: 2, Now: now, MaxHeadWait: time.Hour,
			},
			// a/gpu has ordinal 1, so it ranks above bob's second job, which does not fit.
			want: cpuOutcome{
				AdmitCPU: []string{"a/cpu"}, Order: []string{"b/gpu1", "a/gpu", "b/gpu2"},
				Admit: []string{"b/gpu1", "a/gpu"}, Free: 0,
			},
		},
		"no CPU jobs, nothing admitted outside the order": {
			snap: Snapshot{Jobs: []Job{wait("a/gpu", "alice", 1, 0, 0)}, Capacity: 1, Now: now},
			want: cpuOutcome{Order: []string{"a/gpu"}, Admit: []string{"a/gpu"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := Decide(tc.snap)
			got := cpuOutcome{AdmitCPU: d.AdmitCPU, Used: d.Used, Free: d.Free, Blocking: d.Blocking}
			for _, e := range d.Order {
				got.Order = append(got.Order, e.Key)
				if e.Admit {
					got.Admit = append(got.Admit, e.Key)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Decide() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecidePositions(t *testing.T) {
	now := at(3600)
	cases := map[string]struct {
		snap Snapshot
		want map[string]int
	}{
		"waiting jobs numbered in global order, admitted and holding get 0": {
			snap: Snapshot{
				Jobs: []Job{
					hold("a/run", "alice", 2, 0, 0),
					wait("a/next", "alice", 2, 0, 1),
					wait("b/1", "bob", 1, 0, 2),
					wait("b/2", "bob", 3, 0, 3),
					wait("c/1", "carol", 2, 0, 4),
					wait("c/cpu", "carol", 0, 0, 4),
				},
				Capacity: 4, Now: now, MaxHeadWait: time.Hour,
			},
			// Order: b/1(1) a/run(2, t0) c/1(2, t4) a/next(4, t1) b/2(4, t3). Free 2: b/1 is
			// admitted (1 left); c/1, a/next and b/2 wait, numbered in that order.
			want: map[string]int{"b/1": 0, "a/run": 0, "c/1": 1, "a/next": 2, "b/2": 3},
		},
		"positions skip jobs admitted between them": {
			snap: Snapshot{
				Jobs: []Job{
					wait("a/big", "alice", 3, 0, 0),
					wait("b/1", "bob", 1, 0, 1),
					wait("b/2", "bob", 1, 0, 2),
					wait("b/3", "bob", 2, 0, 3),
					hold("c/run", "carol", 2, 0, 0),
				},
				Capacity: 4, Now: now, MaxHeadWait: time.Hour,
			},
			// Order: b/1(1) c/run(2, t0) b/2(2, t2) a/big(3, t0) b/3(4). Free 2: b/1, b/2
			// admitted, a/big and b/3 wait.
			want: map[string]int{"b/1": 0, "c/run": 0, "b/2": 0, "a/big": 1, "b/3": 2},
		},
		"everything admitted: all zero": {
			snap: Snapshot{
				Jobs:     []Job{wait("a/1", "alice", 1, 0, 0), wait("b/1", "bob", 1, 0, 0)},
				Capacity: 2, Now: now,
			},
			want: map[string]int{"a/1": 0, "b/1": 0},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := map[string]int{}
			for _, e := range Decide(tc.snap).Order {
				got[e.Key] = e.Position
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("positions mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecideLeavesInputAlone(t *testing.T) {
	cases := map[string]struct {
		jobs []Job
	}{
		"one user, reverse order": {jobs: []Job{
			wait("a/3", "alice", 1, -1, 2), wait("a/2", "alice", 1, 0, 1), wait("a/1", "alice", 1, 1, 0),
		}},
		"several users with CPU and holding jobs": {jobs: []Job{
			wait("b/1", "bob", 2, 0, 5), hold("a/1", "alice", 1, 0, 9), wait("c/cpu", "carol", 0, 0, 0),
			wait("a/2", "alice", 3, 2, 1),
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			want := slices.Clone(tc.jobs)
			Decide(Snapshot{Jobs: tc.jobs, Capacity: 4, Now: at(100)})
			if diff := cmp.Diff(want, tc.jobs); diff != "" {
				t.Errorf("Decide() changed its input (-want +got):\n%s", diff)
			}
		})
	}
}

// randomSnapshot builds a snapshot with many ties: few users, few seconds, few priorities.
func randomSnapshot(r *rand.Rand) Snapshot {
	now := at(10_000)
	n := r.IntN(61)
	jobs := make([]Job, 0, n)
	for i := range n {
		j := Job{
			Key:      fmt.Sprintf("ns%d/job-%02d", r.IntN(3), i),
			User:     fmt.Sprintf("user%d", r.IntN(8)),
			Priority: int32(r.IntN(5) - 2),
			Created:  at(r.IntN(6)),
			GPUs:     int32(r.IntN(9)),
		}
		if r.IntN(4) == 0 {
			j.State = Holding
		}
		jobs = append(jobs, j)
	}
	s := Snapshot{
		Jobs:        jobs,
		Capacity:    int32(r.IntN(25)),
		Now:         now,
		MaxHeadWait: []time.Duration{-1, 0, 5 * time.Minute, 10 * time.Minute}[r.IntN(4)],
	}
	if n > 0 && r.IntN(2) == 0 {
		s.Head = jobs[r.IntN(n)].Key
		s.HeadSince = now.Add(-time.Duration(r.IntN(20)) * time.Minute)
	}
	return s
}

func TestDecideProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(20250301, 42))
	for i := range 500 {
		s := randomSnapshot(r)
		d := Decide(s)
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			checkCapacity(t, s, d)
			checkTotalOrder(t, d)
			checkStable(t, r, s, d)
			checkRanksAndOrdinals(t, s, d)
			checkAdmission(t, s, d)
		})
	}
}

// checkCapacity: what is held plus what is admitted never exceeds the capacity.
func checkCapacity(t *testing.T, s Snapshot, d Decision) {
	t.Helper()
	var used, admitted int32
	for _, j := range s.Jobs {
		if j.GPUs > 0 && j.State == Holding {
			used += j.GPUs
		}
	}
	for _, e := range d.Order {
		if e.Admit {
			admitted += e.GPUs
		}
	}
	if d.Used != used {
		t.Errorf("Used = %d, want %d", d.Used, used)
	}
	if used <= s.Capacity {
		if used+admitted > s.Capacity {
			t.Errorf("over capacity: %d held + %d admitted > %d", used, admitted, s.Capacity)
		}
		if want := s.Capacity - used - admitted; d.Free != want {
			t.Errorf("Free = %d, want %d", d.Free, want)
		}
	} else {
		if admitted != 0 || d.Free != 0 {
			t.Errorf("over capacity before admission, yet admitted %d GPUs and Free = %d", admitted, d.Free)
		}
	}
}

// checkTotalOrder: every pair of entries is strictly ordered by CompareGlobal.
func checkTotalOrder(t *testing.T, d Decision) {
	t.Helper()
	for i := range d.Order {
		for j := i + 1; j < len(d.Order); j++ {
			if c := CompareGlobal(&d.Order[i], &d.Order[j]); c >= 0 {
				t.Errorf("CompareGlobal(%s, %s) = %d, want < 0", d.Order[i].Key, d.Order[j].Key, c)
			}
			if c := CompareGlobal(&d.Order[j], &d.Order[i]); c <= 0 {
				t.Errorf("CompareGlobal(%s, %s) = %d, want > 0", d.Order[j].Key, d.Order[i].Key, c)
			}
		}
	}
}

// checkStable: the decision depends on the set of jobs only, not on their order or the call.
func checkStable(t *testing.T, r *rand.Rand, s Snapshot, d Decision) {
	t.Helper()
	if diff := cmp.Diff(d, Decide(s)); diff != "" {
		t.Errorf("second Decide() on the same snapshot differs (-first +second):\n%s", diff)
	}
	for k := range 3 {
		shuffled := s
		shuffled.Jobs = slices.Clone(s.Jobs)
		r.Shuffle(len(shuffled.Jobs), func(i, j int) { shuffled.Jobs[i], shuffled.Jobs[j] = shuffled.Jobs[j], shuffled.Jobs[i] })
		if diff := cmp.Diff(d, Decide(shuffled)); diff != "" {
			t.Errorf("shuffle %d: Decide() differs (-original +shuffled):\n%s", k, diff)
		}
	}
}

// checkRanksAndOrdinals: ranks are 1..n; each user's jobs, in the rule's user order, cover
// GPUs 1..total with no gap or overlap; CPU jobs are exactly the AdmitCPU list.
func checkRanksAndOrdinals(t *testing.T, s Snapshot, d Decision) {
	t.Helper()
	var gpuJobs int
	var cpuWaiting []string
	for _, j := range s.Jobs {
		if j.GPUs > 0 {
			gpuJobs++
		} else if j.State == Waiting {
			cpuWaiting = append(cpuWaiting, j.Key)
		}
	}
	slices.Sort(cpuWaiting)
	if diff := cmp.Diff(cpuWaiting, d.AdmitCPU); diff != "" {
		t.Errorf("AdmitCPU mismatch (-want +got):\n%s", diff)
	}
	if len(d.Order) != gpuJobs {
		t.Errorf("len(Order) = %d, want %d GPU jobs", len(d.Order), gpuJobs)
	}

	byUser := map[string][]Entry{}
	for i, e := range d.Order {
		if e.Rank != i+1 {
			t.Errorf("%s at index %d has Rank %d", e.Key, i, e.Rank)
		}
		if e.GPUs <= 0 {
			t.Errorf("%s with %d GPUs is in the order", e.Key, e.GPUs)
		}
		byUser[e.User] = append(byUser[e.User], e)
	}
	for user, list := range byUser {
		slices.SortFunc(list, func(a, b Entry) int { return int(a.LastGPU - b.LastGPU) })
		var through int32
		for i, e := range list {
			if e.FirstGPU != through+1 || e.LastGPU != through+e.GPUs {
				t.Errorf("%s: %s covers %d-%d with %d GPUs after GPU %d", user, e.Key, e.FirstGPU, e.LastGPU, e.GPUs, through)
			}
			through = e.LastGPU
			if i == 0 {
				continue
			}
			// The previous job must come first by priority, then creation, then key.
			p := list[i-1]
			before := p.Priority > e.Priority ||
				p.Priority == e.Priority && p.Created.Before(e.Created) ||
				p.Priority == e.Priority && p.Created.Equal(e.Created) && p.Key < e.Key
			if !before {
				t.Errorf("%s: %s (prio %d, %v) has the lower ordinal than %s (prio %d, %v)",
					user, p.Key, p.Priority, p.Created, e.Key, e.Priority, e.Created)
			}
		}
	}
}

// checkAdmission checks the head, the blocking and the positions against the order.
func checkAdmission(t *testing.T, s Snapshot, d Decision) {
	t.Helper()
	// The head is the first job left waiting that could ever fit.
	head := -1
	for i, e := range d.Order {
		if e.State == Waiting && !e.Admit && e.GPUs <= s.Capacity {
			head = i
			break
		}
	}
	wantHead := ""
	if head >= 0 {
		wantHead = d.Order[head].Key
	}
	if d.Head != wantHead {
		t.Fatalf("Head = %q, want %q", d.Head, wantHead)
	}
	pos := 0
	for i, e := range d.Order {
		if e.State == Holding && e.Admit {
			t.Errorf("holding job %s admitted", e.Key)
		}
		if e.State == Waiting && !e.Admit {
			pos++
			if e.Position != pos {
				t.Errorf("%s: Position %d, want %d", e.Key, e.Position, pos)
			}
		} else if e.Position != 0 {
			t.Errorf("%s: Position %d, want 0", e.Key, e.Position)
		}
		// Greedy: a job left waiting that is not behind a blocking head did not fit.
		if e.State == Waiting && !e.Admit && (!d.Blocking || i <= head) && e.GPUs <= d.Free {
			t.Errorf("%s needs %d GPUs, %d are free, yet it was not admitted", e.Key, e.GPUs, d.Free)
		}
		if d.Blocking && i > head && e.Admit {
			t.Errorf("%s ranked below blocking head %s was admitted", e.Key, d.Head)
		}
	}
	if head < 0 {
		if d.Blocking || !d.HeadSince.IsZero() || !d.Wakeup.IsZero() {
			t.Errorf("no head, yet Blocking %v, HeadSince %v, Wakeup %v", d.Blocking, d.HeadSince, d.Wakeup)
		}
		return
	}
	wantSince := s.Now
	if s.Head == d.Head && !s.HeadSince.IsZero() {
		wantSince = s.HeadSince
	}
	if !d.HeadSince.Equal(wantSince) {
		t.Errorf("HeadSince = %v, want %v", d.HeadSince, wantSince)
	}
	deadline := wantSince.Add(s.MaxHeadWait)
	wantBlocking := s.MaxHeadWait >= 0 && !s.Now.Before(deadline)
	if d.Blocking != wantBlocking {
		t.Errorf("Blocking = %v, want %v (MaxHeadWait %v, HeadSince %v, Now %v)", d.Blocking, wantBlocking, s.MaxHeadWait, wantSince, s.Now)
	}
	var wantWakeup time.Time
	if s.MaxHeadWait >= 0 && !wantBlocking {
		wantWakeup = deadline
	}
	if !d.Wakeup.Equal(wantWakeup) {
		t.Errorf("Wakeup = %v, want %v", d.Wakeup, wantWakeup)
	}
}
