// Package queueview holds the queue as the decision loop last saw and decided it: a read-only
// snapshot that the dashboard and its JSON API serve without touching the API server.
package queueview

import (
	"sync"
	"time"
)

// Job is one job of the queue, as shown to people.
type Job struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	User      string `json:"user"`
	GPUs      int32  `json:"gpus"`
	// UserGPUs are the user's GPU ordinals the job covers ("2-3"); empty for CPU-only jobs.
	UserGPUs string `json:"userGPUs,omitempty"`
	Priority int32  `json:"priority"`
	Phase    string `json:"phase"`
	// Rank is the place in the fair-share order (0 for CPU-only jobs); Position the place among
	// waiting jobs (0 when not waiting).
	Rank     int    `json:"rank,omitempty"`
	Position int    `json:"position,omitempty"`
	Node     string `json:"node,omitempty"`
	// Since is when the job started waiting (creation) or running (start).
	Since       time.Time `json:"since"`
	Message     string    `json:"message"`
	Preemptions int32     `json:"preemptions,omitempty"`
	// InCapacity is true when the job ranks inside the capacity: the GPUs of the jobs ranked
	// up to it fit in the capacity. The capacity cut falls after the last such job.
	InCapacity bool `json:"inCapacity"`
	// Utilization is what the job's GPUs did over the last measuring window (status.gpuUtilization);
	// absent when unknown, which is never taken for idleness.
	Utilization *Utilization `json:"utilization,omitempty"`
	// IdleSince is since when the job's GPUs have been below --idle-threshold (status.idleSince).
	IdleSince *time.Time `json:"idleSince,omitempty"`
	// Idle is the GPUIdle condition's reason while it is True: "Idle" (warned) or "Reclaimable"
	// (its GPUs count as free for the queue); empty otherwise.
	Idle string `json:"idle,omitempty"`
	// EstimatedStart is a waiting job's estimated start. The decision loop never sets it: the
	// dashboard computes it when it serves (Snapshot.Estimate).
	EstimatedStart *Estimate `json:"estimatedStart,omitempty"`
}

// Estimate is when a waiting job should start if the running jobs end at their timeout (or the
// expected runtime their owner gave) and no job ranked above it arrives: an estimate, never a
// promise (EstimateAssumption says so to people).
type Estimate struct {
	// At is the estimated start; zero when unknown, and Unknown then says why.
	At      time.Time `json:"at,omitzero"`
	Unknown string    `json:"unknown,omitempty"`
}

// EstimateAssumption is what every estimated start assumes; kubectl cvlab why and the dashboard
// show it with each estimate.
const EstimateAssumption = "if running jobs use their full timeout (or the expected runtime their owner gave) and no job ranked above it arrives: an estimate, not a promise"

// Utilization is one job's measured GPU utilisation.
type Utilization struct {
	// Percent is the average over Window of the job's GPUs, 0-100.
	Percent       int32     `json:"percent"`
	MemoryUsedMiB int64     `json:"memoryUsedMiB,omitempty"`
	Window        string    `json:"window,omitempty"`
	MeasuredAt    time.Time `json:"measuredAt"`
}

// User sums up one user's jobs.
type User struct {
	User        string `json:"user"`
	GPUsInUse   int32  `json:"gpusInUse"`
	RunningJobs int    `json:"runningJobs"`
	WaitingJobs int    `json:"waitingJobs"`
	WaitingGPUs int32  `json:"waitingGPUs"`
	// Utilization is the GPU-weighted average utilisation of the user's running jobs whose
	// utilisation is known (absent when none is); MeasuredGPUs the GPUs it averages over.
	Utilization  *int32 `json:"utilization,omitempty"`
	MeasuredGPUs int32  `json:"measuredGPUs,omitempty"`
	// IdleGPUs are the GPUs of the user's running jobs that are idle (idleSince set).
	IdleGPUs int32 `json:"idleGPUs"`
}

// Node is one GPU node (or the pool, named "", without GPU nodes).
type Node struct {
	Name string `json:"name"`
	GPUs int32  `json:"gpus"`
	// Used by the queue's jobs, Foreign by other pods, Free for new jobs.
	Used    int32 `json:"used"`
	Foreign int32 `json:"foreign"`
	Free    int32 `json:"free"`
	// Utilization is the GPU-weighted average utilisation of the queue's running jobs on the node
	// whose utilisation is known (absent when none is); MeasuredGPUs the GPUs it averages over;
	// IdleGPUs the GPUs of its idle jobs.
	Utilization  *int32 `json:"utilization,omitempty"`
	MeasuredGPUs int32  `json:"measuredGPUs,omitempty"`
	IdleGPUs     int32  `json:"idleGPUs"`
}

// Preemption is one eviction, for the "last preemptions" list.
type Preemption struct {
	Time          time.Time `json:"time"`
	Preemptor     string    `json:"preemptor"`
	PreemptorUser string    `json:"preemptorUser"`
	Victim        string    `json:"victim"`
	VictimUser    string    `json:"victimUser"`
	Node          string    `json:"node,omitempty"`
	Reason        string    `json:"reason"`
}

// Snapshot is the queue after one decision.
type Snapshot struct {
	Time time.Time `json:"time"`
	// Capacity is the GPUs the queue may hand out now; Used those its jobs hold; Foreign those
	// other pods hold; Free those left.
	Capacity  int32 `json:"capacity"`
	Used      int32 `json:"used"`
	Foreign   int32 `json:"foreign"`
	Free      int32 `json:"free"`
	NodeAware bool  `json:"nodeAware"`
	// Jobs are the active jobs: GPU jobs in fair-share order, then CPU-only jobs.
	Jobs        []Job        `json:"jobs"`
	Users       []User       `json:"users"`
	Nodes       []Node       `json:"nodes"`
	Preemptions []Preemption `json:"preemptions"`
	// Estimate computes the waiting jobs' estimated starts, by "namespace/name", by simulating
	// the queue forward from this decision. It is left to the reader to call (it costs a
	// simulation): the decision loop only sets it. Nil when estimates are not available.
	Estimate func() map[string]Estimate `json:"-"`
}

// MaxPreemptions is how many past preemptions a snapshot keeps.
const MaxPreemptions = 50

// Store keeps the latest snapshot and wakes subscribers when it changes. The zero value is ready.
type Store struct {
	mu      sync.Mutex
	cur     *Snapshot
	changed chan struct{}
}

// Publish replaces the latest snapshot. The caller must not modify it afterwards.
func (s *Store) Publish(snap *Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = snap
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// Latest returns the latest snapshot (nil before the first decision) and a channel closed at the
// next Publish.
func (s *Store) Latest() (*Snapshot, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.cur, s.changed
}
