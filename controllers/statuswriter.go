package controllers

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// DefaultStatusQPS bounds the background writes of waiting jobs' positions (--status-qps).
const DefaultStatusQPS = 100

const (
	// positionWriters is how many position writes run at once: enough for the token bucket's
	// rate when each write takes tens of milliseconds (measured: 8 writers gave ~150 writes/s on
	// a busy 2-core machine), bounded by the bucket anyway.
	positionWriters = 32
	// phaseWriters is how many phase-change writes run at once. They are not rate limited: each
	// follows an admission, a pod's start or end, which are bounded by the cluster's own pace.
	phaseWriters = 32
	// maxWriteRetry bounds the wait before a failed phase write is tried again.
	maxWriteRetry = 30 * time.Second
)

// Kinds of status writes, as counted by cvlab_status_writes_total.
const (
	writePhase    = "phase"
	writePosition = "position"
)

// statusWriter writes jobs' statuses in the background, so that a decision never waits for the
// API server: it decides, creates its pods, hands the status changes over and ends. Two kinds:
//
//   - Phase changes (admitted, running, finished, suspended, requeued...): every one is written,
//     front of the queue first, retried until it lands. A newer decision's status for the same job
//     replaces one not written yet, so a job admitted and started before its admission was written
//     gets one write (Running), not two. Until it lands, the loop decides from it (intended):
//     the operator is the only writer of status.
//   - Position updates of jobs that stay waiting (queuePosition, rank, GPU ordinals, the waiting
//     message): at most --status-qps a second (a token bucket), front of the queue first. When a
//     job ahead of thousands of others starts, every position behind it changes; each decision
//     replaces the whole backlog with its own, so a position is written at most once per change,
//     and always the newest. A dropped position is computed again by the next decision.
//
// Two writes of the same job never overlap (busy), so that each is a merge patch from what the
// previous one wrote.
type statusWriter struct {
	client   client.Client
	recorder events.EventRecorder
	// wake asks the decision loop for a decision (after a failed write).
	wake    func()
	limiter flowcontrol.RateLimiter
	// now and after are the loop's clock (a fake one in tests).
	now   func() time.Time
	after func(time.Duration, func())

	mu   sync.Mutex
	cond *sync.Cond
	// phase holds the phase writes not written yet, by job; phaseQueue orders them, front first
	// (entries no longer in phase are skipped).
	phase      map[types.UID]*statusWrite
	phaseQueue []*statusWrite
	// positions is the latest decision's position writes, front first; the ones before next are
	// taken.
	positions []*statusWrite
	taken     []bool
	next      int
	// busy are the jobs whose status is being written.
	busy map[types.UID]bool
	// creating counts the decisions creating pods right now (0 or 1).
	creating int

	// written is the last status written per job: the operator is the only writer of status, so
	// it is newer than what a lagging cache shows. Guarded by writtenMu.
	written   map[types.UID]*cvlabv1alpha1.CvlabJobStatus
	writtenMu sync.Mutex
	// shown are the positions of the last decision not written yet (for the dashboard); touched
	// by the decision loop only.
	shown map[types.UID]*cvlabv1alpha1.CvlabJobStatus
}

// statusWrite is one status change to write; order puts the front of the queue first.
type statusWrite struct {
	// job is the cached object the decision saw (read only): its name, and the event's subject.
	job *cvlabv1alpha1.CvlabJob
	// cur is what the decision took as the job's status; want what it should become.
	cur, want *cvlabv1alpha1.CvlabJobStatus
	order     int
	// invalid marks a job whose stored spec the API server cannot validate (see patchStatus).
	invalid string
	// disruption, when set, is told in a Warning event once the write lands.
	disruption string
	// retries counts failed attempts; notBefore is when to try again.
	retries   int
	notBefore time.Time
}

func (w *statusWrite) key() string { return w.job.Namespace + "/" + w.job.Name }

func newStatusWriter(c client.Client, recorder events.EventRecorder, clk clock.Clock, qps float64, wake func()) *statusWriter {
	if qps <= 0 {
		qps = DefaultStatusQPS
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	w := &statusWriter{
		client: c, recorder: recorder, wake: wake,
		limiter: flowcontrol.NewTokenBucketRateLimiter(float32(qps), max(int(qps), 1)),
		now:     clk.Now,
		after:   func(d time.Duration, f func()) { time.AfterFunc(d, f) },
		phase:   map[types.UID]*statusWrite{}, busy: map[types.UID]bool{},
		written: map[types.UID]*cvlabv1alpha1.CvlabJobStatus{}, shown: map[types.UID]*cvlabv1alpha1.CvlabJobStatus{},
	}
	if c, ok := clk.(clock.WithDelayedExecution); ok {
		w.after = func(d time.Duration, f func()) { c.AfterFunc(d, f) }
	}
	w.cond = sync.NewCond(&w.mu)
	return w
}

func byWriteOrder(a, b *statusWrite) int {
	return cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.key(), b.key()))
}

// submit hands over a decision's writes: phase changes (added to those pending, replacing any of
// the same job) and position updates (replacing the whole backlog). A job appears in one of them
// at most.
func (w *statusWriter) submit(phase, positions []*statusWrite) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// A new position for a job whose phase change is not written yet (nor being written) is
	// written with it, as a phase write: the position writer skips jobs whose phase differs from
	// what was written. Behind a write under way it stays a position write.
	positions = slices.DeleteFunc(positions, func(p *statusWrite) bool {
		if old, ok := w.phase[p.job.UID]; ok && !w.busy[p.job.UID] {
			p.notBefore = old.notBefore // a failed write keeps its wait before the retry
			phase = append(phase, p)
			return true
		}
		return false
	})
	slices.SortFunc(phase, byWriteOrder)
	slices.SortFunc(positions, byWriteOrder)
	for _, p := range phase {
		w.phase[p.job.UID] = p
	}
	// The queue keeps only live entries: the older pending ones, then this decision's.
	queue := make([]*statusWrite, 0, len(w.phase))
	for _, p := range w.phaseQueue {
		if w.phase[p.job.UID] == p {
			queue = append(queue, p)
		}
	}
	w.phaseQueue = append(queue, phase...)
	w.positions, w.taken, w.next = positions, make([]bool, len(positions)), 0
	w.cond.Broadcast()
	var later time.Time
	for _, p := range phase {
		if p.notBefore.After(later) {
			later = p.notBefore
		}
	}
	if d := later.Sub(w.now()); d > 0 {
		w.after(d, func() { w.mu.Lock(); w.cond.Broadcast(); w.mu.Unlock() })
	}
}

// intended is the status a pending phase write will give the job: what the loop decides from.
func (w *statusWriter) intended(uid types.UID) (*cvlabv1alpha1.CvlabJobStatus, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p, ok := w.phase[uid]; ok {
		return p.want, true
	}
	return nil, false
}

// pendingPhases counts the phase writes not written yet.
func (w *statusWriter) pendingPhases() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.phase)
}

// forget drops the pending writes of jobs that are gone.
func (w *statusWriter) forget(exists func(types.UID) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for uid := range w.phase {
		if !exists(uid) {
			delete(w.phase, uid)
		}
	}
	w.writtenMu.Lock()
	defer w.writtenMu.Unlock()
	for uid := range w.written {
		if !exists(uid) {
			delete(w.written, uid)
		}
	}
}

// claim waits until no write of uid is under way, drops the ones pending (the caller's write is
// newer) and keeps others off the job until release: the loop's own inline write (evictions).
func (w *statusWriter) claim(uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.busy[uid] {
		w.cond.Wait()
	}
	delete(w.phase, uid)
	w.busy[uid] = true
}

func (w *statusWriter) release(uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.busy, uid)
	w.cond.Broadcast()
}

// takePhase returns the first pending phase write whose job is not being written and whose retry
// time has come; ok is false when there is none now.
func (w *statusWriter) takePhase(now time.Time) (*statusWrite, bool) {
	for len(w.phaseQueue) > 0 && w.phase[w.phaseQueue[0].job.UID] != w.phaseQueue[0] {
		w.phaseQueue = w.phaseQueue[1:] // written or superseded
	}
	for _, p := range w.phaseQueue {
		if w.phase[p.job.UID] != p || w.busy[p.job.UID] || now.Before(p.notBefore) {
			continue
		}
		w.busy[p.job.UID] = true
		return p, true
	}
	return nil, false
}

// takePosition returns the first position write whose job is not being written.
func (w *statusWriter) takePosition() (*statusWrite, bool) {
	for i := w.next; i < len(w.positions); i++ {
		if w.taken[i] || w.busy[w.positions[i].job.UID] {
			continue
		}
		w.taken[i] = true
		for w.next < len(w.positions) && w.taken[w.next] {
			w.next++
		}
		w.busy[w.positions[i].job.UID] = true
		return w.positions[i], true
	}
	return nil, false
}

// run writes until ctx ends; a manager Runnable (with leader election).
func (w *statusWriter) run(ctx context.Context) error {
	go func() { // wake the writers waiting when ctx ends
		<-ctx.Done()
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	}()
	var wg sync.WaitGroup
	for range phaseWriters {
		wg.Go(func() { w.runPhases(ctx) })
	}
	for range positionWriters {
		wg.Go(func() { w.runPositions(ctx) })
	}
	wg.Wait()
	return nil
}

func (w *statusWriter) runPhases(ctx context.Context) {
	for {
		w.mu.Lock()
		var sw *statusWrite
		for ctx.Err() == nil {
			var ok bool
			if sw, ok = w.takePhase(w.now()); ok {
				break
			}
			w.cond.Wait()
		}
		w.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		err := w.write(ctx, sw, writePhase)
		w.mu.Lock()
		if w.phase[sw.job.UID] == sw {
			if err == nil {
				delete(w.phase, sw.job.UID)
			} else {
				// Kept (unless superseded meanwhile) and tried again after a doubling wait.
				sw.retries++
				wait := min(retryAfterErrors<<min(sw.retries-1, 5), maxWriteRetry)
				sw.notBefore = w.now().Add(wait) // it keeps its place in phaseQueue
				w.after(wait, func() { w.mu.Lock(); w.cond.Broadcast(); w.mu.Unlock() })
			}
		}
		delete(w.busy, sw.job.UID)
		w.cond.Broadcast()
		w.mu.Unlock()
	}
}

// creatingPods tells the writer that the loop creates pods (on) or is done (off): positions wait
// meanwhile, so that an admission never queues behind them at the API server.
func (w *statusWriter) creatingPods(on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if on {
		w.creating++
	} else {
		w.creating--
		w.cond.Broadcast()
	}
}

// yieldToPhases tells whether a position write must wait: pods are being created, or a phase
// write is ready to go. Positions come last: when the API server is the bottleneck (it is on a
// small control plane), every position write issued during a drain delays the next admission, and
// the position is likely stale before it lands; they catch up as soon as the queue settles.
func (w *statusWriter) yieldToPhases(now time.Time) bool {
	if w.creating > 0 {
		return true
	}
	for _, p := range w.phaseQueue {
		if w.phase[p.job.UID] == p && !w.busy[p.job.UID] && !now.Before(p.notBefore) {
			return true
		}
	}
	return false
}

func (w *statusWriter) runPositions(ctx context.Context) {
	for ctx.Err() == nil {
		w.mu.Lock()
		for (w.next >= len(w.positions) || w.yieldToPhases(w.now())) && ctx.Err() == nil {
			w.cond.Wait()
		}
		w.mu.Unlock()
		if err := w.limiter.Wait(ctx); err != nil {
			return
		}
		w.mu.Lock()
		var sw *statusWrite
		for ctx.Err() == nil {
			if w.yieldToPhases(w.now()) {
				break
			}
			var ok bool
			if sw, ok = w.takePosition(); ok || w.next >= len(w.positions) {
				break
			}
			w.cond.Wait()
		}
		w.mu.Unlock()
		if sw == nil {
			continue
		}
		if err := w.write(ctx, sw, writePosition); err != nil {
			// Not written: a decision soon computes it again.
			time.AfterFunc(retryAfterErrors, w.wake)
		}
		w.release(sw.job.UID)
	}
}

// write patches one job's status from what was last written (or what the decision saw), then
// tells of a phase change in an event.
func (w *statusWriter) write(ctx context.Context, sw *statusWrite, kind string) error {
	base := sw.cur
	if cur, ok := w.lastWritten(sw.job.UID); ok {
		base = cur
	}
	if kind == writePosition && base.Phase != sw.want.Phase && base.Phase != "" {
		return nil // the loop moved the job on
	}
	if statusEqual(base, sw.want) {
		return nil // written already
	}
	if err := w.patch(ctx, sw.job, sw.invalid, base, sw.want); err != nil {
		log.FromContext(ctx).V(1).Info("status write failed", "job", sw.key(), "kind", kind, "error", err.Error())
		return err
	}
	metricStatusWrites.WithLabelValues(kind).Inc()
	log.FromContext(ctx).V(2).Info("status written", "job", sw.key(), "kind", kind, "from", base.Phase, "to", sw.want.Phase)
	w.setWritten(sw.job.UID, sw.want)
	w.recordPhaseEvent(sw.job, base, sw.want)
	if sw.disruption != "" && w.recorder != nil {
		w.recorder.Eventf(sw.job, nil, corev1.EventTypeWarning, cvlabv1alpha1.EventDisrupted, "Requeue", "%s; back in the queue", sw.disruption)
	}
	if sw.want.Phase == cvlabv1alpha1.PhaseRunning && base.Phase != cvlabv1alpha1.PhaseRunning && sw.want.StartTime != nil {
		metricWait.Observe(sw.want.StartTime.Sub(sw.job.CreationTimestamp.Time).Seconds())
	}
	return nil
}

// deferrable tells whether a status change is only a new place in the queue, to be written at
// --status-qps: a job's first status (Queued), or a change of queuePosition, rank, GPU ordinals
// messages and why it waits (waitingReason, reservedNode, backoffUntil) alone, the job staying in
// its phase. A running job's rank and GPU ordinals move
// whenever a job ahead of it or of its owner starts or ends: written at once, those were most of
// the status writes of a busy queue.
func deferrable(v *observe.Job, want *cvlabv1alpha1.CvlabJobStatus) bool {
	cur := v.Cur
	switch {
	case v.Evicted:
		return false
	case cur.Phase == "" && want.Phase == cvlabv1alpha1.PhaseQueued:
		return true
	case cur.Phase != want.Phase || IsFinished(want):
		return false
	}
	n := *want // shallow: only fields of n itself and a new Conditions slice are set below
	n.QueuePosition, n.Rank, n.UserGPUs, n.Message = cur.QueuePosition, cur.Rank, cur.UserGPUs, cur.Message
	// Why a job waits changes with its place, as its message does: written with it.
	n.WaitingReason, n.ReservedNode, n.BackoffUntil = cur.WaitingReason, cur.ReservedNode, cur.BackoffUntil
	// A running job's new utilisation alone, its idle state unchanged (idleSince, the GPUIdle
	// condition), is a position-like write too (recordUtilization bounds how often it changes).
	n.GPUUtilization = cur.GPUUtilization
	n.Conditions = slices.Clone(want.Conditions)
	for i := range n.Conditions {
		c := &n.Conditions[i]
		if old := meta.FindStatusCondition(cur.Conditions, c.Type); old != nil && old.Status == c.Status && old.Reason == c.Reason {
			c.Message = old.Message
		}
	}
	return statusEqual(&n, cur)
}

// lastWritten is the status last written for a job, if any.
func (w *statusWriter) lastWritten(uid types.UID) (*cvlabv1alpha1.CvlabJobStatus, bool) {
	w.writtenMu.Lock()
	defer w.writtenMu.Unlock()
	st, ok := w.written[uid]
	return st, ok
}

// setWritten records a status that landed.
func (w *statusWriter) setWritten(uid types.UID, st *cvlabv1alpha1.CvlabJobStatus) {
	w.writtenMu.Lock()
	defer w.writtenMu.Unlock()
	w.written[uid] = st
}

// latest is the newest status the operator has for a job: being written, or the last written.
func (w *statusWriter) latest(uid types.UID) (*cvlabv1alpha1.CvlabJobStatus, bool) {
	if st, ok := w.intended(uid); ok {
		return st, true
	}
	return w.lastWritten(uid)
}

// current is the operator's latest word on a job's status: being written, written, or the cache's.
// The operator is the only writer of status, so its own word is newer than the cache's.
func (w *statusWriter) current(job *cvlabv1alpha1.CvlabJob) *cvlabv1alpha1.CvlabJobStatus {
	if st, ok := w.latest(job.UID); ok {
		return st
	}
	return &job.Status
}

// base is the job's status as the API server has it: the last one written, or the cache's.
func (w *statusWriter) base(job *cvlabv1alpha1.CvlabJob) *cvlabv1alpha1.CvlabJobStatus {
	if st, ok := w.lastWritten(job.UID); ok {
		return st
	}
	return &job.Status
}

// show notes a position write handed over but not written yet, and clearShown forgets them at
// the start of the next decision's hand-over.
func (w *statusWriter) show(uid types.UID, st *cvlabv1alpha1.CvlabJobStatus) { w.shown[uid] = st }

func (w *statusWriter) clearShown() { clear(w.shown) }

// status is the job's status after the last decision, for the dashboard: its new position being
// written in the background, its new phase being written, the last written, or cur.
func (w *statusWriter) status(job *cvlabv1alpha1.CvlabJob, cur *cvlabv1alpha1.CvlabJobStatus) *cvlabv1alpha1.CvlabJobStatus {
	if st, ok := w.shown[job.UID]; ok {
		return st
	}
	if st, ok := w.latest(job.UID); ok {
		return st
	}
	return cur
}
