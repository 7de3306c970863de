package queue

import (
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The engine reuses scratch slices across decisions and shares what it returns (the jobs behind
// Order, the victims' array, the reasons' strings). These tests check that none of it leaks from
// one decision, or one caller, into another.

// TestDecideConcurrent decides snapshots of different sizes at once, again and again, and checks
// that each decision is the one made alone.
func TestDecideConcurrent(t *testing.T) {
	snaps := []Snapshot{scaleSnapshot(300, 20, 10, 1), scaleSnapshot(2000, 50, 30, 2), scaleSnapshot(5000, 200, 100, 3)}
	pool := scaleSnapshot(2000, 50, 30, 4)
	pool.Nodes, pool.Capacity = nil, 240
	for i := range pool.Jobs {
		pool.Jobs[i].Node = ""
	}
	snaps = append(snaps, pool)
	want := make([]Decision, len(snaps))
	for i, s := range snaps {
		want[i] = Decide(s)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for round := range 5 {
				i := (g + round) % len(snaps)
				if diff := cmp.Diff(want[i], Decide(snaps[i])); diff != "" {
					t.Errorf("snapshot %d decided concurrently differs (-alone +concurrent):\n%s", i, diff)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestDecideResultsIndependent checks that a decision's parts can be changed by the caller
// without changing another's: the next decision's, or another preemption's victims.
func TestDecideResultsIndependent(t *testing.T) {
	s := scaleSnapshot(3000, 100, 50, 5)
	d := Decide(s)
	if len(d.Preemptions) < 2 {
		t.Fatalf("want a decision with 2 preemptions or more, got %d", len(d.Preemptions))
	}
	again := Decide(s)
	victims := func() [][]string {
		var all [][]string
		for _, pr := range d.Preemptions {
			all = append(all, slices.Clone(pr.Victims))
		}
		return all
	}
	want := victims()
	for i := range d.Preemptions {
		d.Preemptions[i].Victims = append(d.Preemptions[i].Victims, "ns/appended")
		want[i] = append(want[i], "ns/appended")
		if diff := cmp.Diff(want, victims()); diff != "" {
			t.Fatalf("appending to preemption %d's victims changed the victims (-want +got):\n%s", i, diff)
		}
	}
	for i := range d.Order {
		d.Order[i].Reason, d.Order[i].Node = "changed", "changed"
	}
	if diff := cmp.Diff(again, Decide(s)); diff != "" {
		t.Errorf("changing a decision changed the next one (-want +got):\n%s", diff)
	}
}

// TestOrderPointsIntoJobs checks that the entries share the caller's jobs (see Entry) and that
// Decide writes its placements to the entries only.
func TestOrderPointsIntoJobs(t *testing.T) {
	s := scaleSnapshot(1000, 50, 20, 6)
	before := slices.Clone(s.Jobs)
	d := Decide(s)
	admitted := 0
	for _, e := range d.Order {
		i := slices.IndexFunc(s.Jobs, func(j Job) bool { return j.Key == e.Key })
		if e.Job != &s.Jobs[i] {
			t.Fatalf("%s: Entry.Job does not point at the snapshot's job", e.Key)
		}
		if e.Admit {
			admitted++
			if e.Node == "" || s.Jobs[i].Node != "" {
				t.Errorf("%s admitted: Entry.Node %q, Job.Node %q; want the node on the entry only", e.Key, e.Node, s.Jobs[i].Node)
			}
		}
	}
	if admitted == 0 {
		t.Fatal("want a decision that admits jobs")
	}
	if diff := cmp.Diff(before, s.Jobs); diff != "" {
		t.Errorf("Decide changed the snapshot's jobs (-want +got):\n%s", diff)
	}
}
