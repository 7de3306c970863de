package simulate

import (
	"cmp"
	"math"
	"slices"
	"time"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

const (
	// BigJob is the size from which a job counts as big (Result.BigJobWait, HeadOfLine).
	BigJob = 4
	// MaxHeadOfLine bounds Result.HeadOfLine.
	MaxHeadOfLine = 20
)

// Waits summarises waits: p50 and p95 by the nearest-rank method (the smallest wait that at
// least that share of the waits do not exceed).
func Waits(waits []time.Duration) WaitStats {
	if len(waits) == 0 {
		return WaitStats{}
	}
	w := slices.Clone(waits)
	slices.Sort(w)
	rank := func(p float64) time.Duration { return w[max(int(math.Ceil(p*float64(len(w))))-1, 0)] }
	return WaitStats{Count: len(w), P50: rank(0.5), P95: rank(0.95), Max: w[len(w)-1]}
}

// jain is Jain's fairness index of x: (Σx)² / (n·Σx²), 1 when all are equal (all zero too).
func jain(x []float64) float64 {
	var sum, sq float64
	for _, v := range x {
		sum += v
		sq += v * v
	}
	if sq == 0 {
		return 1
	}
	return sum * sum / (float64(len(x)) * sq)
}

// result sums the simulation up at its end.
func (s *sim) result() *Result {
	r := s.res
	r.End, r.Capacity = s.now, s.capacity
	all := slices.Clone(s.done)
	for _, j := range s.active {
		job := j.job
		s.stopRun(j, false)
		j.out.Phase = string(job.Status.Phase)
		if j.out.Phase == "" {
			j.out.Phase = string(cvlabv1alpha1.PhaseQueued)
		}
		if j.out.Start == nil || job.Status.Phase == cvlabv1alpha1.PhaseQueued {
			j.out.Wait += max(s.now.Sub(j.waitSince), 0) // still waiting: its wait so far
		}
		if j.out.Start == nil {
			j.out.FirstWait = max(s.now.Sub(j.t.Submit), 0)
		}
		all = append(all, j)
	}
	slices.SortFunc(all, func(a, b *simJob) int {
		if c := a.out.Submit.Compare(b.out.Submit); c != 0 {
			return c
		}
		return cmp.Compare(a.out.Namespace+"/"+a.out.Name, b.out.Namespace+"/"+b.out.Name)
	})
	type user struct {
		stats UserStats
		waits []time.Duration
	}
	users := map[string]*user{}
	byOrdinal := map[int32][]time.Duration{}
	var allWaits, first, big []time.Duration
	var hol []HeadOfLineWait
	r.Jobs = make([]JobOutcome, 0, len(all))
	for _, j := range all {
		o := j.out
		r.Jobs = append(r.Jobs, o)
		u := users[o.User]
		if u == nil {
			u = &user{stats: UserStats{User: o.User}}
			users[o.User] = u
		}
		u.stats.Jobs++
		u.stats.GPUHours += j.gpuHours
		if o.GPUs == 0 {
			continue
		}
		u.waits = append(u.waits, o.FirstWait)
		allWaits = append(allWaits, o.FirstWait)
		if o.Ordinal > 0 {
			byOrdinal[o.Ordinal] = append(byOrdinal[o.Ordinal], o.FirstWait)
		}
		if o.Ordinal == 1 {
			first = append(first, o.FirstWait)
		}
		if o.GPUs >= BigJob {
			big = append(big, o.FirstWait)
		}
		if o.GPUs >= BigJob || j.blocked {
			hol = append(hol, HeadOfLineWait{Job: o.Namespace + "/" + o.Name, User: o.User, GPUs: o.GPUs, Wait: o.FirstWait})
		}
	}
	for _, u := range users {
		u.stats.Wait = Waits(u.waits)
		r.Users = append(r.Users, u.stats)
	}
	slices.SortFunc(r.Users, func(a, b UserStats) int {
		if c := cmp.Compare(b.GPUHours, a.GPUHours); c != 0 {
			return c
		}
		return cmp.Compare(a.User, b.User)
	})
	for o, w := range byOrdinal {
		r.Ordinals = append(r.Ordinals, OrdinalStats{Ordinal: o, Wait: Waits(w)})
	}
	slices.SortFunc(r.Ordinals, func(a, b OrdinalStats) int { return cmp.Compare(a.Ordinal, b.Ordinal) })
	r.AllWait, r.FirstGPUWait, r.BigJobWait = Waits(allWaits), Waits(first), Waits(big)
	slices.SortStableFunc(hol, func(a, b HeadOfLineWait) int { return cmp.Compare(b.Wait, a.Wait) })
	r.HeadOfLine = hol[:min(len(hol), MaxHeadOfLine)]
	if hours := r.End.Sub(r.Start).Hours() * float64(r.Capacity); hours > 0 {
		r.Utilization = r.UsedGPUHours / hours
	}
	r.Fairness = 1
	if s.fairPoints > 0 {
		r.Fairness = s.fairSum / float64(s.fairPoints)
	}
	return r
}
