package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// DefaultStatusQPS bounds the background writes of waiting jobs' positions (--status-qps).
const DefaultStatusQPS = 100

// positionWriters is how many background position writes run at once: enough for the token
// bucket's rate when each write takes tens of milliseconds (measured: 8 writers gave ~150
// writes/s on a busy 2-core machine), bounded by the bucket anyway.
const positionWriters = 32

// positionWriter writes, in the background, the statuses of jobs that stay waiting and whose only
// change is their place in the queue (queuePosition, rank, GPU ordinals, the waiting message):
// front of the queue first, at most StatusQPS a second (a token bucket), with positionWriters
// writers. When a job ahead of thousands of others starts or a new user's job arrives, every
// position behind it changes; written inline, those writes would hold the decision loop (and so
// every admission) for as long as thousands of writes take. Each decision replaces the whole
// backlog with its own, so a position is written at most once per change, always the newest.
//
// Decisions never depend on these writes: a waiting job is judged by its spec, its pods and the
// phase of its status, which only the decision loop writes (inline, as before). A write of the
// loop and a background write of the same job never overlap (claim).
type positionWriter struct {
	r       *QueueReconciler
	limiter flowcontrol.RateLimiter

	mu   sync.Mutex
	cond *sync.Cond
	// backlog is the latest decision's writes, front first; the ones before next are taken.
	backlog []statusWrite
	taken   []bool
	next    int
	// busy are the jobs whose status is being written (in the background or by the loop).
	busy map[types.UID]bool
}

func newPositionWriter(r *QueueReconciler, qps float64) *positionWriter {
	if qps <= 0 {
		qps = DefaultStatusQPS
	}
	w := &positionWriter{r: r, limiter: flowcontrol.NewTokenBucketRateLimiter(float32(qps), max(int(qps), 1)), busy: map[types.UID]bool{}}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// replace makes writes (sorted, front first) the backlog; what was not taken yet is dropped.
func (w *positionWriter) replace(writes []statusWrite) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.backlog, w.taken, w.next = writes, make([]bool, len(writes)), 0
	w.cond.Broadcast()
}

// claim waits until no background write of uid is under way and keeps others off it until
// release: the loop's own write of that job.
func (w *positionWriter) claim(uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.busy[uid] {
		w.cond.Wait()
	}
	w.busy[uid] = true
}

func (w *positionWriter) release(uid types.UID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.busy, uid)
	w.cond.Broadcast()
}

// take returns the first write of the backlog whose job is not being written, waiting for one.
func (w *positionWriter) take(ctx context.Context) (statusWrite, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if ctx.Err() != nil {
			return statusWrite{}, false
		}
		for i := w.next; i < len(w.backlog); i++ {
			if w.taken[i] || w.busy[w.backlog[i].view.job.UID] {
				continue
			}
			w.taken[i] = true
			for w.next < len(w.backlog) && w.taken[w.next] {
				w.next++
			}
			w.busy[w.backlog[i].view.job.UID] = true
			return w.backlog[i], true
		}
		w.cond.Wait()
	}
}

// pending tells whether there is a write to take.
func (w *positionWriter) pending() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.next < len(w.backlog)
}

// run writes the backlog until ctx ends; a manager Runnable (with leader election).
func (w *positionWriter) run(ctx context.Context) error {
	go func() { // wake the writers waiting in take when ctx ends
		<-ctx.Done()
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	}()
	var wg sync.WaitGroup
	for range positionWriters {
		wg.Go(func() {
			for ctx.Err() == nil {
				w.mu.Lock()
				for w.next >= len(w.backlog) && ctx.Err() == nil {
					w.cond.Wait()
				}
				w.mu.Unlock()
				if err := w.limiter.Wait(ctx); err != nil {
					return
				}
				sw, ok := w.take(ctx)
				if !ok {
					return
				}
				w.write(ctx, sw)
				w.release(sw.view.job.UID)
			}
		})
	}
	wg.Wait()
	return nil
}

// write patches one job's status from what was last written (or what the cache showed).
func (w *positionWriter) write(ctx context.Context, sw statusWrite) {
	r, v := w.r, sw.view
	base := v.cur
	if cur, ok := r.lastWritten(v.job.UID); ok {
		base = cur
	}
	if IsFinished(base) || base.Phase != cvlabv1alpha1.PhaseQueued && base.Phase != "" || equality.Semantic.DeepEqual(base, sw.want) {
		return // the loop moved the job on, or it is written already
	}
	view := *v
	view.cur = base
	if err := r.patchStatus(ctx, &view, sw.want); err != nil {
		// Not written: a decision soon computes it again (as after a failed write of the loop).
		log.FromContext(ctx).V(1).Info("position write failed", "job", v.key(), "error", err.Error())
		time.AfterFunc(retryAfterErrors, r.wakeUp)
		return
	}
	r.setWritten(v.job.UID, sw.want)
	r.recordPhaseEvent(v.job, base, sw.want)
}

// deferrable tells whether a status change can be written in the background: the job waits
// before and after, only its place in the queue and its message change.
func deferrable(v *jobView, want *cvlabv1alpha1.CvlabJobStatus) bool {
	return !v.evicted && want.Phase == cvlabv1alpha1.PhaseQueued &&
		(v.cur.Phase == cvlabv1alpha1.PhaseQueued || v.cur.Phase == "") && v.cur.Admissions == want.Admissions
}
