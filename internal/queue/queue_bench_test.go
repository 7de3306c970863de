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
