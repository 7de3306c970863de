// Package queue is the lab's fair-share rule as a pure function: a Snapshot of jobs and capacity
// goes in, a Decision (the global order, ranks, positions and the jobs to admit) comes out.
//
// It has no client, no clock and no goroutines, so every sentence of the rule is unit-tested on
// plain values. The controller builds the Snapshot from its caches, calls Decide, then acts.
//
// The rule:
//  1. The active GPU jobs of each user (waiting or holding GPUs) are sorted by priority (desc), then
//     creation time, then namespace/name. Walking that list, a job's ordinal is the user's GPU count
//     through this job: a user's 2-GPU first job has ordinal 2 and covers the user's GPUs "1-2".
//  2. The global order sorts all active GPU jobs by ordinal (asc), then creation time, then
//     namespace/name. A job's rank is its 1-based index in that order.
//  3. Admission walks the global order: a waiting job is admitted when the free GPUs (capacity
//     minus GPUs held) cover it. A job that does not fit does not block smaller jobs behind it,
//     until it has been the first waiting job for MaxHeadWait; then nothing ranked below it is
//     admitted until it starts.
//  4. CPU-only jobs (0 GPUs) are admitted at once and take no part in the order.
package queue

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// State is where a job stands from the queue's point of view.
type State int

const (
	// Waiting jobs want GPUs and hold none.
	Waiting State = iota
	// Holding jobs hold their GPUs: admitted, running, or terminating but not gone yet.
	Holding
)

// Job is one active job (not finished, not suspended) as the queue sees it.
type Job struct {
	// Key is "namespace/name": unique, and the last tie-break.
	Key      string
	User     string
	Priority int32
	Created  time.Time
	GPUs     int32
	State    State
}

// Snapshot is everything a decision depends on.
type Snapshot struct {
	Jobs []Job
	// Capacity is the number of GPUs the queue may hand out.
	Capacity int32
	// Now is the decision time.
	Now time.Time
	// MaxHeadWait is how long the first waiting job may be passed by smaller jobs behind it
	// before it blocks them. Zero means it blocks at once; negative means never.
	MaxHeadWait time.Duration
	// Head is the key of the first waiting job of the previous decision and HeadSince the time it
	// became first; both come from the previous Decision.
	Head      string
	HeadSince time.Time
}

// Entry is one active GPU job in the global order.
type Entry struct {
	Job
	// Rank is the 1-based place in the global order.
	Rank int
	// FirstGPU and LastGPU are the user's GPU ordinals the job covers; LastGPU is its ordinal.
	FirstGPU, LastGPU int32
	// Admit is true when the job is waiting and is admitted by this decision.
	Admit bool
	// Position is the 1-based place among the jobs still waiting after this decision; 0 if none.
	Position int
	// Reason says why a job still waits; empty when it does not.
	Reason string
}

// UserGPUs renders the user's GPU ordinals the job covers: "1", "2-3".
func (e Entry) UserGPUs() string {
	if e.FirstGPU == e.LastGPU {
		return strconv.Itoa(int(e.LastGPU))
	}
	return fmt.Sprintf("%d-%d", e.FirstGPU, e.LastGPU)
}

// Decision is the outcome of Decide.
type Decision struct {
	// Order is the global fair-share order of the active GPU jobs.
	Order []Entry
	// AdmitCPU are the keys of waiting CPU-only jobs: they are admitted at once.
	AdmitCPU []string
	// Used is the number of GPUs held, and Free the number left after this decision's admissions.
	Used, Free int32
	// Head is the first job still waiting after this decision ("" if none), HeadSince when it
	// became first, and Blocking whether it now holds back every job ranked below it.
	Head      string
	HeadSince time.Time
	Blocking  bool
	// Wakeup is when the decision changes by itself with no other input (the head starts
	// blocking); zero if never.
	Wakeup time.Time
}

// CompareInUser orders the jobs of one user: higher priority first, then the earlier job, then
// namespace/name.
func CompareInUser(a, b *Job) int {
	if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
		return c
	}
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	return cmp.Compare(a.Key, b.Key)
}

// CompareGlobal orders entries across users: lower ordinal first, then the earlier job, then
// namespace/name.
func CompareGlobal(a, b *Entry) int {
	if c := cmp.Compare(a.LastGPU, b.LastGPU); c != 0 {
		return c
	}
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	return cmp.Compare(a.Key, b.Key)
}

// Order returns the global fair-share order of the GPU jobs in jobs, with ranks and ordinals set.
// Jobs with no GPUs are left out.
func Order(jobs []Job) []Entry {
	byUser := map[string][]*Job{}
	n := 0
	for i := range jobs {
		if jobs[i].GPUs > 0 {
			byUser[jobs[i].User] = append(byUser[jobs[i].User], &jobs[i])
			n++
		}
	}
	order := make([]Entry, 0, n)
	for _, list := range byUser {
		slices.SortFunc(list, CompareInUser)
		var through int32
		for _, j := range list {
			first := through + 1
			through += j.GPUs
			order = append(order, Entry{Job: *j, FirstGPU: first, LastGPU: through})
		}
	}
	slices.SortFunc(order, func(a, b Entry) int { return CompareGlobal(&a, &b) })
	for i := range order {
		order[i].Rank = i + 1
	}
	return order
}

// Decide applies the rule to a snapshot.
func Decide(s Snapshot) Decision {
	d := Decision{Order: Order(s.Jobs)}
	for _, j := range s.Jobs {
		if j.GPUs <= 0 && j.State == Waiting {
			d.AdmitCPU = append(d.AdmitCPU, j.Key)
		}
	}
	slices.Sort(d.AdmitCPU)

	for _, e := range d.Order {
		if e.State == Holding {
			d.Used += e.GPUs
		}
	}
	free := max(s.Capacity-d.Used, 0)

	// The first waiting job that does not fit this round is the head. It blocks the jobs behind
	// it once it has been head for MaxHeadWait, unless it can never fit at all.
	headIdx := -1
	for i := range d.Order {
		e := &d.Order[i]
		if e.State != Waiting {
			continue
		}
		if d.Blocking {
			e.Reason = fmt.Sprintf("held behind %s, which waits for %s", d.Head, gpus(d.Order[headIdx].GPUs))
			continue
		}
		if e.GPUs <= free {
			e.Admit = true
			free -= e.GPUs
			continue
		}
		if e.GPUs > s.Capacity {
			e.Reason = fmt.Sprintf("needs %s but the capacity is %d", gpus(e.GPUs), s.Capacity)
			continue
		}
		e.Reason = fmt.Sprintf("%s free, needs %d", gpus(free), e.GPUs)
		if headIdx >= 0 {
			continue
		}
		headIdx = i
		d.Head = e.Key
		d.HeadSince = s.Now
		if s.Head == e.Key && !s.HeadSince.IsZero() {
			d.HeadSince = s.HeadSince
		}
		if s.MaxHeadWait >= 0 {
			deadline := d.HeadSince.Add(s.MaxHeadWait)
			if !s.Now.Before(deadline) {
				d.Blocking = true
				e.Reason += "; first in line, so no job ranked below it starts before it"
			} else {
				d.Wakeup = deadline
			}
		}
	}
	d.Free = free

	pos := 0
	for i := range d.Order {
		if e := &d.Order[i]; e.State == Waiting && !e.Admit {
			pos++
			e.Position = pos
		}
	}
	return d
}

// gpus renders a GPU count for messages: "1 GPU", "3 GPUs".
func gpus(n int32) string {
	if n == 1 {
		return "1 GPU"
	}
	return fmt.Sprintf("%d GPUs", n)
}
