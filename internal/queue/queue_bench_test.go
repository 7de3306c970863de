package queue

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkDecide10kJobs200Users decides a busy cluster: 10,000 active GPU jobs from 200 users,
// about 300 of them holding GPUs, on a queue of 30 GPUs.
func BenchmarkDecide10kJobs200Users(b *testing.B) {
	const (
		jobs    = 10_000
		users   = 200
		holding = 300
	)
	r := rand.New(rand.NewPCG(10_000, 200))
	origin := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	s := Snapshot{
		Jobs:        make([]Job, 0, jobs),
		Capacity:    30,
		Now:         origin.Add(7 * 24 * time.Hour),
		MaxHeadWait: 30 * time.Minute,
	}
	for i := range jobs {
		j := Job{
			Key:      fmt.Sprintf("lab-%03d/job-%05d", i%users, i),
			User:     fmt.Sprintf("user-%03d", i%users),
			Priority: int32(r.IntN(5) - 2),
			Created:  origin.Add(time.Duration(r.IntN(7*24*3600)) * time.Second),
			GPUs:     int32(1 + r.IntN(4)),
		}
		if i%(jobs/holding) == 0 && i/(jobs/holding) < holding {
			j.State = Holding
		}
		s.Jobs = append(s.Jobs, j)
	}
	d := Decide(s)
	s.Head, s.HeadSince = d.Head, s.Now.Add(-time.Minute)

	b.ReportAllocs()
	for b.Loop() {
		Decide(s)
	}
}

// BenchmarkDecide10kJobs200Users100Nodes decides a busy node-aware cluster: 10,000 active GPU
// jobs from 200 users over 100 nodes of 8 GPUs. About 700 jobs hold GPUs on a node, most of
// them started long ago, some within MinRuntime, some not started yet, a few being evicted; a
// few nodes run foreign pods. First-GPU jobs may preempt.
func BenchmarkDecide10kJobs200Users100Nodes(b *testing.B) {
	const (
		jobs    = 10_000
		users   = 200
		nodes   = 100
		perNode = 8
		holding = 700
	)
	r := rand.New(rand.NewPCG(10_000, 100))
	origin := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	s := Snapshot{
		Jobs:        make([]Job, 0, jobs),
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
	placed := 0
	for i := range jobs {
		j := Job{
			Key:      fmt.Sprintf("lab-%03d/job-%05d", i%users, i),
			User:     fmt.Sprintf("user-%03d", i%users),
			Priority: int32(r.IntN(5) - 2),
			Created:  origin.Add(time.Duration(r.IntN(7*24*3600)) * time.Second),
			GPUs:     int32(1 + r.IntN(4)),
		}
		if placed < holding && i%(jobs/holding) == 0 {
			g := int32(1) // running jobs are mostly 1-GPU: 700 of them fill the 800 GPUs
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

	b.ReportAllocs()
	for b.Loop() {
		Decide(s)
	}
}
