package queue

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
)

// The engine's cost as the queue grows: one full decision (re-rank, admission, placement and
// preemption checks) for 1k, 10k and 100k active GPU jobs of 200 users on 100 nodes of 8 GPUs,
// and the cost of the decision that follows one job arriving or one job finishing.
//
// The engine has no incremental mode: every decision recomputes the order from scratch, so the
// cost after one change is the cost of a full decision on the changed snapshot. The "arrive" and
// "finish" benchmarks measure exactly that, so that an incremental engine would show up there.
//
//	go test -run '^$' -bench 'Scale|After' -benchmem ./internal/queue/

// scaleSnapshot is a saturated node-aware cluster: jobs active GPU jobs of users users on nodes
// nodes of 8 GPUs, about 7 in 8 GPUs held (mostly 1-GPU jobs started long ago, some younger than
// MinRuntime, some admitted but not started, a few being evicted), a few foreign pods, and every
// other job waiting with 1-4 GPUs and a priority in -2..2. First-GPU jobs may preempt.
func scaleSnapshot(jobs, users, nodes int, seed uint64) Snapshot {
	const perNode = 8
	r := rand.New(rand.NewPCG(seed, uint64(jobs)))
	origin := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	s := Snapshot{
		Jobs:        make([]Job, 0, jobs+1),
		Nodes:       make([]Node, 0, nodes),
		Capacity:    -1,
		Now:         origin.Add(7 * 24 * time.Hour),
		MaxHeadWait: 30 * time.Minute,
		Preemption:  PreemptFirstGPU,
		MinRuntime:  10 * time.Minute,
	}
	free := make([]int32, nodes)
	for i := range nodes {
		n := Node{Name: fmt.Sprintf("gpu-%03d", i), GPUs: perNode}
		if i%10 == 0 {
			n.Busy = 1 // someone else's pod
		}
		free[i] = n.GPUs - n.Busy
		s.Nodes = append(s.Nodes, n)
	}
	holding := nodes * perNode * 7 / 8
	every := max(jobs/holding, 1)
	placed := 0
	for i := range jobs {
		j := Job{
			Key:      fmt.Sprintf("lab-%03d/job-%06d", i%users, i),
			User:     fmt.Sprintf("user-%03d", i%users),
			Priority: int32(r.IntN(5) - 2),
			Created:  origin.Add(time.Duration(r.IntN(7*24*3600)) * time.Second),
			GPUs:     int32(1 + r.IntN(4)),
		}
		if placed < holding && i%every == 0 {
			g := int32(1)
			if r.IntN(10) == 0 {
				g = 2
			}
			for k, start := 0, r.IntN(nodes); k < nodes; k++ {
				if n := (start + k) % nodes; free[n] >= g {
					free[n] -= g
					j.GPUs, j.State, j.Node = g, Holding, s.Nodes[n].Name
					switch k := r.IntN(20); {
					case k == 0: // not started yet
					case k < 3:
						j.Started = s.Now.Add(-time.Duration(r.IntN(600)) * time.Second)
					default:
						j.Started = j.Created.Add(time.Duration(r.IntN(3600)) * time.Second)
						if j.Started.After(s.Now) {
							j.Started = s.Now
						}
					}
					j.Evicting = r.IntN(50) == 0
					placed++
					break
				}
			}
		}
		s.Jobs = append(s.Jobs, j)
	}
	d := Decide(s)
	s.Head, s.HeadSince = d.Head, s.Now.Add(-time.Minute)
	return s
}

var scaleSizes = []int{1_000, 10_000, 100_000}

func sizeName(n int) string { return fmt.Sprintf("jobs=%dk", n/1000) }

// BenchmarkDecideScale is one full decision at each size.
func BenchmarkDecideScale(b *testing.B) {
	for _, n := range scaleSizes {
		s := scaleSnapshot(n, 200, 100, 1)
		b.Run(sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Decide(s)
			}
		})
	}
}

// BenchmarkDecideAfterArrival is the decision after one new job arrives: a new user's first job,
// which ranks near the front and moves every waiting job behind it one position down.
func BenchmarkDecideAfterArrival(b *testing.B) {
	for _, n := range scaleSizes {
		s := scaleSnapshot(n, 200, 100, 1)
		s.Jobs = append(s.Jobs, Job{Key: "lab-new/arrival", User: "user-new", Created: s.Now, GPUs: 1})
		b.Run(sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Decide(s)
			}
		})
	}
}

// BenchmarkDecideAfterFinish is the decision after one running job finishes: its GPUs are free,
// and the decision admits the job(s) that fit.
func BenchmarkDecideAfterFinish(b *testing.B) {
	for _, n := range scaleSizes {
		s := scaleSnapshot(n, 200, 100, 1)
		i := slices.IndexFunc(s.Jobs, func(j Job) bool { return j.State == Holding && !j.Evicting && !j.Started.IsZero() })
		s.Jobs = slices.Delete(slices.Clone(s.Jobs), i, i+1)
		b.Run(sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Decide(s)
			}
		})
	}
}

// BenchmarkDecidePoolScale is one full decision in pool mode (no nodes, 800 GPUs) at each size.
func BenchmarkDecidePoolScale(b *testing.B) {
	for _, n := range scaleSizes {
		s := scaleSnapshot(n, 200, 100, 1)
		s.Nodes, s.Capacity = nil, 800
		for i := range s.Jobs {
			s.Jobs[i].Node = ""
		}
		b.Run(sizeName(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Decide(s)
			}
		})
	}
}

// referenceOrder is Order written the plain way, with CompareInUser and CompareGlobal.
func referenceOrder(jobs []Job) []Entry {
	byUser := map[string][]*Job{}
	for i := range jobs {
		if jobs[i].GPUs > 0 {
			byUser[jobs[i].User] = append(byUser[jobs[i].User], &jobs[i])
		}
	}
	order := []Entry{}
	for _, list := range byUser {
		slices.SortFunc(list, CompareInUser)
		var through int32
		for _, j := range list {
			order = append(order, Entry{Job: j, Node: j.Node, FirstGPU: through + 1, LastGPU: through + j.GPUs})
			through += j.GPUs
		}
	}
	slices.SortFunc(order, func(a, b Entry) int { return CompareGlobal(&a, &b) })
	for i := range order {
		order[i].Rank = i + 1
	}
	return order
}

// TestOrderMatchesReference checks Order's packed keys and radix sorts against the plain sort,
// including the inputs whose keys do not fit in 64 bits (the comparison-sort fallback): creation
// times with nanoseconds, centuries apart, the zero time, extreme priorities, ties everywhere.
func TestOrderMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	kinds := map[string]func() (time.Time, int32){
		"seconds": func() (time.Time, int32) {
			return base.Add(time.Duration(r.IntN(50)) * time.Second), int32(r.IntN(5) - 2)
		},
		"same second":     func() (time.Time, int32) { return base, 0 },
		"nanoseconds":     func() (time.Time, int32) { return base.Add(time.Duration(r.IntN(5_000_000_000))), int32(r.IntN(3)) },
		"centuries apart": func() (time.Time, int32) { return base.AddDate(r.IntN(3)*300-300, 0, r.IntN(3)), int32(r.IntN(3)) },
		"centuries, nanos": func() (time.Time, int32) {
			return base.AddDate(r.IntN(3)*300, 0, 0).Add(time.Duration(r.IntN(1000))), 0
		},
		"zero time":        func() (time.Time, int32) { return [...]time.Time{{}, base}[r.IntN(2)], 0 },
		"extreme priority": func() (time.Time, int32) { return base, [...]int32{math.MinInt32, 0, math.MaxInt32}[r.IntN(3)] },
		"extreme, nanos": func() (time.Time, int32) {
			return base.Add(time.Duration(r.IntN(1 << 40))), [...]int32{math.MinInt32, math.MaxInt32}[r.IntN(2)]
		},
		"wide, many users":  func() (time.Time, int32) { return base.Add(time.Duration(r.Int64N(1 << 62))), int32(r.IntN(1 << 20)) },
		"1000 users' jobs ": func() (time.Time, int32) { return base.Add(time.Duration(r.IntN(3)) * time.Second), int32(r.IntN(2)) },
	}
	for name, gen := range kinds {
		t.Run(name, func(t *testing.T) {
			for round := range 50 {
				var jobs []Job
				users := 1 + r.IntN(8)
				if strings.HasPrefix(name, "1000") || strings.HasPrefix(name, "wide") {
					users = 1000
				}
				for i := range r.IntN(300) {
					created, prio := gen()
					jobs = append(jobs, Job{Key: fmt.Sprintf("ns%d/j%03d", r.IntN(3), i), User: fmt.Sprintf("u%d", r.IntN(users)),
						Priority: prio, Created: created, GPUs: int32(r.IntN(5))})
				}
				if diff := gocmp.Diff(referenceOrder(jobs), Order(jobs)); diff != "" {
					t.Fatalf("round %d: Order differs from the reference (-want +got):\n%s", round, diff)
				}
			}
		})
	}
}
