package observe

import (
	"time"

	"k8s.io/apimachinery/pkg/types"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// Ledger is everything the decision loop remembers between decisions that no status holds yet:
// one type, owned by the loop, read by Observe and changed only by its methods, after a decision
// (Learn, Expect, Evicting, BackOff, Reserve). The CLI builds one from what the operator wrote
// (FromStatus), the operator keeps its own.
type Ledger struct {
	// Expected are pods created but not shown by the cache yet.
	Expected map[types.UID]Expectation
	// Evicted are pods the operator deleted on purpose (preemption, unschedulable), by job: their
	// job goes back to the queue rather than failing.
	Evicted map[types.UID]string
	// Reserved are the nodes whose GPUs preempted jobs free for their preemptor.
	Reserved map[types.UID]Reservation
	// Backoff holds back jobs whose start failed.
	Backoff map[types.UID]Backoff
	// PodNode is the node of each job's pod as last seen, to tell a pod that vanished with its
	// node from one deleted by a person (status.node after a restart).
	PodNode map[types.UID]string
	// Idle is what the measured GPUs of running jobs did (idle.go); nil until measured.
	Idle map[types.UID]IdleTrack
	// Head is the first waiting job of the last decision and HeadSince when it became first.
	Head      string
	HeadSince time.Time
}

// Expectation is a pod the operator created that the cache may not show yet.
type Expectation struct {
	Pod string
	// Node is where the pod was placed: its GPUs count there until the cache shows the pod.
	Node  string
	Since time.Time
}

// Reservation is a node whose GPUs are promised to a preemptor, since when.
type Reservation struct {
	Node  string
	Since time.Time
	// Idle is set when the GPUs were reclaimed from idle jobs (queue.Job.IdleClaim).
	Idle bool
}

// Backoff holds a job back until Until after Failures failed starts, or because its GPUs sat
// idle (Idle, --idle-action=Suspend).
type Backoff struct {
	Until    time.Time
	Failures int
	Idle     bool
}

const (
	// ExpectationTimeout is how long a created pod that the cache does not show yet still
	// counts as existing. Past it, the job is judged on what the cache shows.
	ExpectationTimeout = 10 * time.Second
	// ReservationTimeout bounds how long a preemptor keeps GPUs that its victims free.
	ReservationTimeout = 15 * time.Minute
	// BackoffMax bounds the wait before a job whose start failed is tried again.
	BackoffMax = 10 * time.Minute
)

// NewLedger is an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{Expected: map[types.UID]Expectation{}, Evicted: map[types.UID]string{},
		Reserved: map[types.UID]Reservation{}, Backoff: map[types.UID]Backoff{}, PodNode: map[types.UID]string{}}
}

// FromStatus is the ledger as the operator's written word shows it: backoffs and reservations
// from their status fields, and the head of the line from what the operator published. Jobs that
// status shows Admitted or Running count as expected on status.node until their pod is seen (so
// that a reader who cannot list pods sees them hold their GPUs).
func FromStatus(jobs []*cvlabv1alpha1.CvlabJob, pub Published, now time.Time) *Ledger {
	l := NewLedger()
	l.Head, l.HeadSince = pub.Head, pub.HeadSince
	for _, j := range jobs {
		st := &j.Status
		if st.BackoffUntil != nil {
			l.Backoff[j.UID] = Backoff{Until: st.BackoffUntil.Time, Failures: 1}
		}
		if st.ReservedNode != "" && st.Phase == cvlabv1alpha1.PhaseQueued {
			// The operator keeps only the claims that stand, those made on idle jobs included.
			l.Reserved[j.UID] = Reservation{Node: st.ReservedNode, Since: now, Idle: true}
		}
		if st.Phase == cvlabv1alpha1.PhaseAdmitted || st.Phase == cvlabv1alpha1.PhaseRunning {
			l.Expected[j.UID] = Expectation{Pod: st.PodName, Node: st.Node, Since: now}
		}
		if t, ok := idleFromStatus(st, pub.Settings.Idle); ok {
			if st.GPUUtilization != nil && t.Last.At.Before(now) {
				// The operator shows a utilisation only while it has recent data (it removes it after
				// three intervals without): it has measured this job up to about now.
				t.Last.At = now
			}
			if l.Idle == nil {
				l.Idle = map[types.UID]IdleTrack{}
			}
			l.Idle[j.UID] = t
		}
	}
	return l
}

// Learn records what an observation showed: the memory of deleted jobs goes, expectations that
// the cache fulfilled or that expired go, evictions whose pod is gone are done, the node of
// each pod is noted, and a job that runs needs no backoff any more.
func (l *Ledger) Learn(obs *Observation) {
	forgetGone(l.Expected, obs.byUID)
	forgetGone(l.Evicted, obs.byUID)
	forgetGone(l.Reserved, obs.byUID)
	forgetGone(l.Backoff, obs.byUID)
	forgetGone(l.PodNode, obs.byUID)
	for _, v := range obs.Views {
		uid := v.Job.UID
		if v.expectationDone {
			delete(l.Expected, uid)
		}
		if v.evictionDone {
			delete(l.Evicted, uid)
		}
		if v.Live != nil && (v.Phase == cvlabv1alpha1.PhaseAdmitted || v.Phase == cvlabv1alpha1.PhaseRunning) {
			l.PodNode[uid] = v.Node
		}
		if v.Phase == cvlabv1alpha1.PhaseRunning {
			delete(l.Backoff, uid)
		}
	}
}

// forgetGone drops what the ledger remembers of deleted jobs.
func forgetGone[V any](m map[types.UID]V, jobs map[types.UID]*cvlabv1alpha1.CvlabJob) {
	for uid := range m {
		if _, ok := jobs[uid]; !ok {
			delete(m, uid)
		}
	}
}

// Expect records a pod created for a job on node.
func (l *Ledger) Expect(uid types.UID, pod, node string, now time.Time) {
	l.Expected[uid] = Expectation{Pod: pod, Node: node, Since: now}
}

// Evicting records that the operator deleted a job's pod on purpose.
func (l *Ledger) Evicting(uid types.UID, pod string) { l.Evicted[uid] = pod }

// BackOff holds a job back after a failed start, doubling the wait each time from base up to
// BackoffMax, and returns when it may start again.
func (l *Ledger) BackOff(uid types.UID, base time.Duration, now time.Time) time.Time {
	b := l.Backoff[uid]
	b.Failures, b.Idle = b.Failures+1, false
	wait := base << min(b.Failures-1, 10)
	b.Until = now.Add(min(wait, BackoffMax))
	l.Backoff[uid] = b
	return b.Until
}

// Decided records a decision's head of the line and the GPUs it promised to preemptors, as the
// engine left them; a promise kept on the same node keeps its age, so that one that outlasts
// ReservationTimeout (a victim that never stops) is dropped by the next snapshot.
func (l *Ledger) Decided(obs *Observation, d queue.Decision, now time.Time) {
	l.Head, l.HeadSince = d.Head, d.HeadSince
	next := make(map[types.UID]Reservation, len(d.Reserved))
	var idleClaim map[string]bool // preemptors of idle jobs
	for _, pr := range d.Preemptions {
		for _, k := range pr.Victims {
			if v := obs.ByKey[k]; v != nil && v.GPU != nil && v.GPU.Stage == IdleReclaimable {
				if idleClaim == nil {
					idleClaim = map[string]bool{}
				}
				idleClaim[pr.Preemptor] = true
			}
		}
	}
	for key, node := range d.Reserved {
		v := obs.ByKey[key]
		if v == nil {
			continue
		}
		res := Reservation{Node: node, Since: now, Idle: idleClaim[key]}
		if old, ok := l.Reserved[v.Job.UID]; ok && old.Node == node {
			res.Since, res.Idle = old.Since, old.Idle || res.Idle
		}
		next[v.Job.UID] = res
	}
	l.Reserved = next
}

// reservation is the node promised to a waiting job, if the promise still holds at now.
func (l *Ledger) reservation(uid types.UID, now time.Time) (Reservation, bool) {
	res, ok := l.Reserved[uid]
	if !ok || now.Sub(res.Since) > ReservationTimeout {
		return Reservation{}, false
	}
	return res, true
}
