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
//
// With Nodes, a job is placed on one node that has enough free GPUs (best fit, so that whole
// nodes stay free for big jobs); a job larger than every node is never admitted. A waiting job
// that the Preemption policy allows, and that cannot start otherwise, evicts running jobs ranked
// strictly below it on one node (lowest-ranked first, no more than needed, none younger than
// MinRuntime); the GPUs they free are reserved for it. Since a victim always ranks below its
// preemptor, it can never evict the preemptor back: evictions cannot loop. The one exception is a
// job whose GPUs sat idle (Job.Idle): any waiting job that fits may evict it, whatever the ranks
// and the policy (but PreemptNever); it is requeued and its measured idleness starts afresh, its
// preemptor keeps the GPUs it freed (Job.IdleClaim), and it preempts no one until it runs again
// (Job.Reclaimed), so these evictions cannot loop either.
package queue

import (
	"fmt"
	"strconv"
	"strings"
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

// Policy says which waiting jobs may evict running ones.
type Policy int

const (
	// PreemptFirstGPU lets a waiting job whose user ordinal starts at 1 evict (the lab's rule).
	PreemptFirstGPU Policy = iota
	// PreemptRank lets any waiting job evict running jobs ranked below it.
	PreemptRank
	// PreemptNever never evicts.
	PreemptNever
)

// String is the policy's name as the operator's --preemption flag spells it: "FirstGPU", "Rank"
// or "Never"; "Policy(n)" for a value that is none of them.
func (p Policy) String() string {
	switch p {
	case PreemptFirstGPU:
		return "FirstGPU"
	case PreemptRank:
		return "Rank"
	case PreemptNever:
		return "Never"
	}
	return "Policy(" + strconv.Itoa(int(p)) + ")"
}

// ParsePolicy reads a policy's name: FirstGPU, Rank or Never, in any case (the operator's flag
// and the CLI's config have always taken "never" as well as "Never").
func ParsePolicy(s string) (Policy, error) {
	for _, p := range []Policy{PreemptFirstGPU, PreemptRank, PreemptNever} {
		if strings.EqualFold(s, p.String()) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("preemption must be FirstGPU, Rank or Never, not %q", s)
}

// WaitReason says, as a value, why a job still waits after a decision; Entry.Reason says it in a
// sentence. Its values name the cases of those sentences, and fit the reason of a status
// condition.
type WaitReason string

const (
	// WaitNone is the reason of a job that does not wait: it holds its GPUs, or the decision
	// admits it.
	WaitNone WaitReason = ""
	// NoGPUsFree: too few GPUs are free in total, in the pool or on all the nodes together
	// ("3 GPUs free, needs 4").
	NoGPUsFree WaitReason = "NoGPUsFree"
	// NoNodeFits: enough GPUs are free in total, but no single node has as many free as the job
	// needs ("5 GPUs free but at most 2 on one node, needs 4").
	NoNodeFits WaitReason = "NoNodeFits"
	// NeverFits: the job cannot start even on an empty cluster: it is larger than the pool, than
	// every node or than the capacity bound, or no GPU node is ready ("needs 9 GPUs but the
	// largest GPU node has 8", "no GPU node is ready"). Such a job is never the head.
	NeverFits WaitReason = "NeverFits"
	// HeadOfLine: the job is held behind the head of the line (Decision.Head), which now blocks
	// every job ranked below it ("held behind ns/big, which waits for 8 GPUs").
	HeadOfLine WaitReason = "HeadOfLine"
	// Reserved: GPUs on Entry.Node are promised to the job (Decision.Reserved maps it there): it
	// preempts jobs ranked below it there (it is the Preemptor of one of Decision.Preemptions),
	// waits for the jobs it preempted to stop, or waits for GPUs being freed there ("preempting 2
	// lower-ranked job(s) on node n1", "waiting for the jobs it preempted to stop on node n1",
	// "waiting for GPUs being freed on node n1").
	Reserved WaitReason = "Reserved"
	// BackingOff: the job's NotBefore is after Now, after a failed start ("backing off after a
	// failed start until 2025-03-01T22:05:00Z").
	BackingOff WaitReason = "BackingOff"
	// QuotaExceeded: the capacity bound (Snapshot.Capacity, with Nodes) leaves fewer GPUs than the
	// job needs although the nodes together have enough free ("3 GPUs free, needs 4", where 3 is
	// what the bound leaves).
	QuotaExceeded WaitReason = "QuotaExceeded"
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
	// Node is where a Holding job's GPUs are ("" when unknown or in pool mode).
	Node string
	// Started is when a Holding job's pod started running; zero if it has not.
	Started time.Time
	// NotBefore holds a Waiting job back until then (backoff after a failed start).
	NotBefore time.Time
	// IdleHold says that NotBefore holds the job back because its GPUs sat idle
	// (--idle-action=Suspend), not after a failed start: only its reason's sentence differs.
	IdleHold bool
	// Evicting marks a Holding job whose pod is being stopped by a preemption: it holds its
	// GPUs until it is gone, and is not chosen as a victim again.
	Evicting bool
	// Idle marks a Holding job whose GPUs sat idle past --idle-after and --idle-grace
	// (reclaimable): it ranks last for preemption (chosen as a victim before any job that is not
	// idle), any waiting job that fits may evict it whatever its rank and the Preemption policy
	// (except PreemptNever, which evicts no one), and MinRuntime does not protect it.
	Idle bool
	// IdleClaim marks a Waiting job whose claim in Snapshot.Reserved was made by evicting idle
	// jobs: it stands whatever the Preemption policy (except PreemptNever), so that the GPUs go
	// to it and not back to the idle job, which may rank above it.
	IdleClaim bool
	// Reclaimed marks a Waiting job whose idle GPUs were taken back (given to a waiting job, or
	// suspended) and that has not been admitted since: it starts on free GPUs and may evict idle
	// jobs, but never preempts by the Preemption policy. Otherwise a reclaimed job that ranks
	// above its preemptor would take the GPUs back once the preemptor ran MinRuntime, idle on
	// them again and be reclaimed again: a loop that starves the preemptor.
	Reclaimed bool
}

// Node is one schedulable GPU node.
type Node struct {
	Name string
	// GPUs is the node's allocatable nvidia.com/gpu.
	GPUs int32
	// Busy are GPUs taken by pods that are not active jobs: other people's pods, and the
	// queue's pods being deleted.
	Busy int32
	// Terminating are the part of Busy held by the queue's pods being stopped: they will be
	// free soon, so a preemptor may count on them instead of evicting more jobs.
	Terminating int32
}

// Snapshot is everything a decision depends on.
type Snapshot struct {
	Jobs []Job
	// Nodes are the Ready GPU nodes. When nil, the queue is one pool of Capacity GPUs (minus
	// PoolBusy) and placement is left to the scheduler.
	Nodes []Node
	// Capacity is the number of GPUs the queue may hand out: the pool's size, or with Nodes an
	// upper bound on the GPUs its jobs hold (negative: no bound).
	Capacity int32
	// PoolBusy are the pool's GPUs held outside the active jobs, of which PoolTerminating by
	// the queue's pods being stopped (see Node).
	PoolBusy, PoolTerminating int32
	// Now is the decision time.
	Now time.Time
	// MaxHeadWait is how long the first waiting job may be passed by smaller jobs behind it
	// before it blocks them. Zero means it blocks at once; negative means never.
	MaxHeadWait time.Duration
	// Head is the key of the first waiting job of the previous decision and HeadSince the time it
	// became first; both come from the previous Decision.
	Head      string
	HeadSince time.Time
	// Preemption says who may evict; MinRuntime how long a job runs before it may be evicted.
	Preemption Policy
	MinRuntime time.Duration
	// Reserved maps a waiting preemptor's key to the node whose GPUs its victims free for it.
	Reserved map[string]string
	// Reuse is memory Decide may use for the decision's Order: an earlier decision's Order
	// that nobody reads any more (the simulator's); nil: it allocates.
	Reuse []Entry
}

// Entry is one active GPU job in the global order.
//
// The job is not copied: Job points into the slice the order was made from (Snapshot.Jobs), so
// that a decision over 10,000 jobs does not copy 2 MB of them (an Entry is 88 bytes, a Job 216).
// The caller must not change that slice while it uses the entries; Decide and Order never do.
type Entry struct {
	*Job
	// Node is where the job's GPUs are or will be: the Job's Node, or for a waiting job the node
	// it is admitted on or whose GPUs are promised to it. It shadows Job.Node, which Decide leaves
	// alone since it belongs to the caller's snapshot.
	Node string
	// Rank is the 1-based place in the global order.
	Rank int
	// FirstGPU and LastGPU are the user's GPU ordinals the job covers; LastGPU is its ordinal.
	FirstGPU, LastGPU int32
	// Admit is true when the job is waiting and is admitted by this decision, on Node.
	Admit bool
	// Blocking is true on the head (Decision.Head) when it now holds back every job ranked below
	// it (Decision.Blocking): its Reason then ends in "; first in line, so no job ranked below it
	// starts before it", and the jobs it holds back wait with HeadOfLine.
	Blocking bool
	// Position is the 1-based place among the jobs still waiting after this decision; 0 if none.
	Position int
	// Reason says why a job still waits; empty when it does not.
	Reason string
	// Wait says as a value what Reason says: set for every job still waiting after this
	// decision, WaitNone for the others.
	Wait WaitReason
}

// Preemption is one waiting job evicting running jobs ranked below it, on one node.
type Preemption struct {
	Preemptor string
	Node      string
	// Victims are the keys of the evicted jobs, lowest-ranked first.
	Victims []string
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
	// blocking, a backoff ends, a victim reaches its minimum run time); zero if never.
	Wakeup time.Time
	// Preemptions are the evictions this decision asks for.
	Preemptions []Preemption
	// Reserved maps each waiting preemptor's key to the node whose GPUs are promised to it:
	// the previous reservations still waiting, and the new ones. Pass it back in the next
	// Snapshot.
	Reserved map[string]string
}
