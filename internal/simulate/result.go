package simulate

import "time"

// WaitStats summarises jobs' waits (JobOutcome.FirstWait): p50 and p95 by the nearest-rank
// method (Waits).
type WaitStats struct {
	Count int           `json:"count"`
	P50   time.Duration `json:"p50"`
	P95   time.Duration `json:"p95"`
	Max   time.Duration `json:"max"`
}

// JobOutcome is one trace job's fate in a simulation.
type JobOutcome struct {
	Name string `json:"name"`
	// Namespace is the job's namespace (its user's, for trace jobs).
	Namespace string    `json:"namespace"`
	User      string    `json:"user"`
	GPUs      int32     `json:"gpus"`
	Priority  int32     `json:"priority"`
	Submit    time.Time `json:"submit"`
	// Start is the first start; nil when the job never started within the horizon.
	Start *time.Time `json:"start,omitempty"`
	// End is when the job finished (succeeded, failed or was deleted); nil when unfinished at the
	// end.
	End *time.Time `json:"end,omitempty"`
	// Wait is the total time spent waiting, summed over all admissions.
	Wait time.Duration `json:"wait"`
	// FirstWait is submission to first start (or to the end of the horizon).
	FirstWait time.Duration `json:"firstWait"`
	// Ordinal is the user's GPU ordinal of the job's first GPU when it was submitted (the
	// first decision that saw it; 1 = the user's 1st GPU: the user held and awaited no other
	// GPU); 0 for CPU-only jobs.
	Ordinal int32 `json:"ordinal"`
	// Preemptions counts its evictions (for a higher-ranked job, or for idle GPUs), as its
	// status.preemptions would.
	Preemptions int `json:"preemptions"`
	// Phase is the job's phase at the end: Succeeded, Failed, Running, Admitted or Queued, or
	// Deleted by its owner (TraceJob.Cancel).
	Phase string `json:"phase"`
	Node  string `json:"node,omitempty"`
	// Interactive is the trace's mark of an interactive session.
	Interactive bool `json:"interactive,omitempty"`
}

// UserStats summarises one user's jobs.
type UserStats struct {
	User     string    `json:"user"`
	Jobs     int       `json:"jobs"`
	GPUHours float64   `json:"gpuHours"`
	Wait     WaitStats `json:"wait"`
}

// OrdinalStats summarises the first waits of jobs whose first GPU was the
// user's Ordinal-th GPU.
type OrdinalStats struct {
	Ordinal int32     `json:"ordinal"`
	Wait    WaitStats `json:"wait"`
}

// TimelinePoint is the cluster state sampled every Result.Step.
type TimelinePoint struct {
	At time.Time `json:"at"`
	// ByUser is the GPUs held per user.
	ByUser map[string]int32 `json:"byUser"`
	// Busy is the GPUs held by jobs (including pods still terminating).
	Busy int32 `json:"busy"`
	// Idle is, of Busy, the GPUs whose job's utilisation is below the idle threshold.
	Idle     int32 `json:"idle"`
	Capacity int32 `json:"capacity"`
	// Waiting is the number of GPU jobs waiting.
	Waiting int `json:"waiting"`
}

// HeadOfLineWait is the wait of a big job (one that became the head of line).
type HeadOfLineWait struct {
	Job  string        `json:"job"`
	User string        `json:"user"`
	GPUs int32         `json:"gpus"`
	Wait time.Duration `json:"wait"`
}

// Result is one simulation under one setting.
type Result struct {
	// Label names the setting, e.g. "preemption=Rank" or "current".
	Label string `json:"label"`
	// Settings is the operator flags used, by flag name.
	Settings map[string]string `json:"settings"`
	Start    time.Time         `json:"start"`
	End      time.Time         `json:"end"`
	// Step is the timeline sampling interval.
	Step     time.Duration  `json:"step"`
	Jobs     []JobOutcome   `json:"jobs"`
	Users    []UserStats    `json:"users"`
	Ordinals []OrdinalStats `json:"ordinals"`
	// FirstGPUWait summarises the first waits of jobs that used their owner's 1st GPU.
	FirstGPUWait WaitStats `json:"firstGPUWait"`
	// AllWait summarises the first waits of all GPU jobs.
	AllWait WaitStats `json:"allWait"`
	// BigJobWait summarises the first waits of jobs of BigJob GPUs or more.
	BigJobWait   WaitStats       `json:"bigJobWait"`
	Timeline     []TimelinePoint `json:"timeline"`
	Preemptions  int             `json:"preemptions"`
	IdleReclaims int             `json:"idleReclaims"`
	// WastedGPUHours is the GPU-hours of runs cut by evictions (work lost).
	WastedGPUHours float64 `json:"wastedGPUHours"`
	UsedGPUHours   float64 `json:"usedGPUHours"`
	// Utilization is UsedGPUHours over capacity-hours, 0..1.
	Utilization float64 `json:"utilization"`
	// HeadOfLine lists the longest waits (at most MaxHeadOfLine) of big jobs: of BigJob GPUs or
	// more, or that held back the jobs ranked below them as head of the line (--max-head-wait).
	HeadOfLine []HeadOfLineWait `json:"headOfLine"`
	// Fairness is Jain's index over the GPU-hours of users with waiting work, 0..1
	// (see docs/simulate.md).
	Fairness float64 `json:"fairness"`
	// Capacity is the GPUs the queue hands out (the nodes', bounded by --gpu-capacity).
	Capacity  int32         `json:"capacity"`
	Decisions int           `json:"decisions"`
	WallTime  time.Duration `json:"wallTime"`
}
