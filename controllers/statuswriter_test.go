package controllers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// writeOf makes a status write of job name (uid = name) to phase, with a message to tell writes
// of the same job apart, at the given place in the queue.
func writeOf(name string, phase cvlabv1alpha1.JobPhase, msg string, order int) *statusWrite {
	job := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Namespace: "lab", Name: name, UID: types.UID(name)}}
	return &statusWrite{job: job, cur: &job.Status, want: &cvlabv1alpha1.CvlabJobStatus{Phase: phase, Message: msg}, order: order}
}

// TestStatusWriterQueue checks what the background writer takes, in which order, after a sequence
// of decisions: every phase change lands (the newest of each job), positions only from the latest
// decision, front of the queue first, never two writes of one job at once.
func TestStatusWriterQueue(t *testing.T) {
	type submission struct{ phase, positions []*statusWrite }
	const (
		admitted = cvlabv1alpha1.PhaseAdmitted
		running  = cvlabv1alpha1.PhaseRunning
		queued   = cvlabv1alpha1.PhaseQueued
		done     = cvlabv1alpha1.PhaseSucceeded
	)
	cases := map[string]struct {
		decisions []submission
		busy      []string // jobs being written when the writers take
		notBefore string   // a job whose phase write failed and waits to be retried
		// wantPhase and wantPositions are "job:message" in the order the writers take them.
		wantPhase, wantPositions []string
	}{
		"admitted then running before the first write: one write, the newest": {
			decisions: []submission{
				{phase: []*statusWrite{writeOf("a", admitted, "admitted", 0)}},
				{phase: []*statusWrite{writeOf("a", running, "running", 0)}},
			},
			wantPhase: []string{"a:running"},
		},
		"phase changes of earlier decisions are kept, front of the queue first within one": {
			decisions: []submission{
				{phase: []*statusWrite{writeOf("c", done, "c done", 1<<30), writeOf("b", admitted, "b admitted", 0)}},
				{phase: []*statusWrite{writeOf("d", admitted, "d admitted", 0)}},
			},
			wantPhase: []string{"b:b admitted", "c:c done", "d:d admitted"},
		},
		"positions: only the latest decision's, front first": {
			decisions: []submission{
				{positions: []*statusWrite{writeOf("x", queued, "x #1", 1), writeOf("y", queued, "y #2", 2)}},
				{positions: []*statusWrite{writeOf("y", queued, "y #1", 1), writeOf("z", queued, "z #3", 3), writeOf("x", queued, "x #2", 2)}},
			},
			wantPositions: []string{"y:y #1", "x:x #2", "z:z #3"},
		},
		"a new position of a job whose phase change is pending is written as a phase change": {
			decisions: []submission{
				{phase: []*statusWrite{writeOf("s", queued, "resumed", 1)}},
				{positions: []*statusWrite{writeOf("s", queued, "resumed #4", 4), writeOf("t", queued, "t #5", 5)}},
			},
			wantPhase:     []string{"s:resumed #4"},
			wantPositions: []string{"t:t #5"},
		},
		"a new position of a job whose failed phase write waits for its retry waits with it": {
			decisions: []submission{
				{phase: []*statusWrite{func() *statusWrite {
					w := writeOf("a", admitted, "admitted", 0)
					w.notBefore = time.Date(2026, 11, 29, 9, 0, 1, 0, time.UTC)
					return w
				}()}},
				{positions: []*statusWrite{writeOf("a", admitted, "admitted, rank 3", 0)}},
			},
		},
		"a job being written is skipped until it is done": {
			decisions: []submission{
				{phase: []*statusWrite{writeOf("a", running, "a", 0), writeOf("b", running, "b", 0)},
					positions: []*statusWrite{writeOf("c", queued, "c #1", 1), writeOf("d", queued, "d #2", 2)}},
			},
			busy:          []string{"a", "c"},
			wantPhase:     []string{"b:b"},
			wantPositions: []string{"d:d #2"},
		},
		"a failed write waits for its retry time": {
			decisions: []submission{
				{phase: []*statusWrite{writeOf("a", running, "a", 0), writeOf("b", running, "b", 0)}},
			},
			notBefore: "a",
			wantPhase: []string{"b:b"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC))
			w := newStatusWriter(nil, nil, clk, 100, func() {})
			for _, d := range tc.decisions {
				w.submit(d.phase, d.positions)
			}
			for _, b := range tc.busy {
				w.busy[types.UID(b)] = true
			}
			if tc.notBefore != "" {
				w.phase[types.UID(tc.notBefore)].notBefore = clk.Now().Add(time.Second)
			}
			var gotPhase, gotPositions []string
			for {
				sw, ok := w.takePhase(clk.Now())
				if !ok {
					break
				}
				gotPhase = append(gotPhase, sw.job.Name+":"+sw.want.Message)
			}
			for {
				sw, ok := w.takePosition()
				if !ok {
					break
				}
				gotPositions = append(gotPositions, sw.job.Name+":"+sw.want.Message)
			}
			if diff := cmp.Diff(tc.wantPhase, gotPhase); diff != "" {
				t.Errorf("phase writes taken (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantPositions, gotPositions); diff != "" {
				t.Errorf("position writes taken (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStatusWriterIntended checks what the loop decides from while a phase change is pending, and
// that an inline write (an eviction) supersedes it.
func TestStatusWriterIntended(t *testing.T) {
	w := newStatusWriter(nil, nil, clocktesting.NewFakeClock(time.Now()), 100, func() {})
	w.submit([]*statusWrite{writeOf("a", cvlabv1alpha1.PhaseRunning, "running", 0)},
		[]*statusWrite{writeOf("b", cvlabv1alpha1.PhaseQueued, "b #1", 1)})
	if st, ok := w.intended("a"); !ok || st.Phase != cvlabv1alpha1.PhaseRunning {
		t.Errorf("intended(a) = %v, %v; want the pending Running status", st, ok)
	}
	if _, ok := w.intended("b"); ok {
		t.Errorf("intended(b) is set: a position write must not stand for the job's status (it may be dropped)")
	}
	w.claim("a")
	if _, ok := w.intended("a"); ok {
		t.Errorf("intended(a) still set after claim: the inline write supersedes it")
	}
	if _, ok := w.takePhase(time.Now()); ok {
		t.Errorf("a write was taken for a claimed job")
	}
	w.release("a")
	w.submit([]*statusWrite{writeOf("c", cvlabv1alpha1.PhaseAdmitted, "c", 0)}, nil)
	w.forget(func(uid types.UID) bool { return uid != "c" })
	if n := w.pendingPhases(); n != 0 {
		t.Errorf("%d phase writes pending after their job was deleted, want 0", n)
	}
}

// TestDeferrable checks which status changes wait for the rate-limited position writer: only a
// new place in the queue (position, rank, GPU ordinals, messages), never a change of phase or of
// anything else a user or a tool acts on.
func TestDeferrable(t *testing.T) {
	i32 := func(n int32) *int32 { return &n }
	t0 := metav1.NewTime(time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC))
	running := func(rank int32, gpus, msg string) *cvlabv1alpha1.CvlabJobStatus {
		st := &cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseRunning, Rank: i32(rank), UserGPUs: gpus, Message: msg, Admissions: 1, PodName: "j-1"}
		lifecycle.SetRunning(st, true, cvlabv1alpha1.ReasonPodRunning, msg, 1, t0)
		return st
	}
	waiting := func(pos int32, msg string) *cvlabv1alpha1.CvlabJobStatus {
		st := &cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseQueued, QueuePosition: i32(pos), Rank: i32(pos + 10), Message: msg}
		lifecycle.SetQueued(st, true, cvlabv1alpha1.ReasonWaiting, msg, 1, t0)
		return st
	}
	cases := map[string]struct {
		cur, want *cvlabv1alpha1.CvlabJobStatus
		evicted   bool
		deferred  bool
	}{
		"first status of a new job":         {cur: &cvlabv1alpha1.CvlabJobStatus{}, want: waiting(7, "7th"), deferred: true},
		"waiting job moves up":              {cur: waiting(7, "7th"), want: waiting(6, "6th"), deferred: true},
		"running job's rank and GPU change": {cur: running(40, "2", "on GPU #2"), want: running(12, "1", "on GPU #1"), deferred: true},
		"waiting job starts":                {cur: waiting(1, "next"), want: running(3, "1", "on GPU #1")},
		"running job ends": {cur: running(3, "1", "x"), want: func() *cvlabv1alpha1.CvlabJobStatus {
			st := running(3, "1", "x")
			st.Phase = cvlabv1alpha1.PhaseSucceeded
			return st
		}()},
		"waiting job evicted back to the queue": {cur: waiting(4, "4th"), want: waiting(3, "3rd"), evicted: true},
		"condition turns": {cur: running(3, "1", "x"), want: func() *cvlabv1alpha1.CvlabJobStatus {
			st := running(3, "1", "x")
			lifecycle.SetRunning(st, false, cvlabv1alpha1.ReasonPodPending, "x", 1, t0)
			return st
		}()},
		"waiting job: why it waits changes with its place": {cur: waiting(7, "7th"), want: func() *cvlabv1alpha1.CvlabJobStatus {
			st := waiting(2, "2nd, preempting")
			st.WaitingReason, st.ReservedNode = cvlabv1alpha1.WaitingReserved, "gpu-3"
			return st
		}(), deferred: true},
		"running job moves to another node": {cur: running(3, "1", "x"), want: func() *cvlabv1alpha1.CvlabJobStatus {
			st := running(3, "1", "x")
			st.Node = "gpu-2"
			return st
		}()},
		"admission count changes": {cur: running(3, "1", "x"), want: func() *cvlabv1alpha1.CvlabJobStatus {
			st := running(3, "1", "x")
			st.Admissions = 2
			return st
		}()},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			v := &observe.Job{Cur: tc.cur, Evicted: tc.evicted}
			if got := deferrable(v, tc.want); got != tc.deferred {
				t.Errorf("deferrable = %v, want %v", got, tc.deferred)
			}
		})
	}
}

// TestStatusWriterPositionBehindWrite checks that a new position of a job whose phase change is
// being written waits for it as a rate-limited position write, not as a second phase write.
func TestStatusWriterPositionBehindWrite(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC))
	w := newStatusWriter(nil, nil, clk, 100, func() {})
	w.submit([]*statusWrite{writeOf("a", cvlabv1alpha1.PhaseAdmitted, "admitted", 0)}, nil)
	if _, ok := w.takePhase(clk.Now()); !ok {
		t.Fatal("the admission was not taken")
	}
	w.submit(nil, []*statusWrite{writeOf("a", cvlabv1alpha1.PhaseAdmitted, "admitted, rank 3", 0)})
	if sw, ok := w.takePosition(); ok {
		t.Errorf("position write %q taken while the job's phase write is under way", sw.want.Message)
	}
	w.mu.Lock()
	delete(w.phase, "a") // the phase write landed
	delete(w.busy, "a")
	w.mu.Unlock()
	if sw, ok := w.takePhase(clk.Now()); ok {
		t.Errorf("a second phase write %q was queued", sw.want.Message)
	}
	if sw, ok := w.takePosition(); !ok || sw.want.Message != "admitted, rank 3" {
		t.Errorf("takePosition = %v, %v; want the new rank", sw, ok)
	}
}
