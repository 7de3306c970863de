package controllers

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/notify"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/utilization"
)

// Measuring GPUs (issue 15). A manager Runnable (measurer) calls the Source every
// --utilization-interval, over a window of one interval, and leaves the samples in a store; it then
// asks for a decision. The decision loop takes them after its decision (the ledger changes only
// after a decision), maps each pod to the job whose live pod it is, and asks for one more decision
// that sees them. With no Source, nothing is measured and nothing changes.

// Rules of the status fields (desiredStatus, via recordUtilization):
const (
	// utilizationMinChange: status.gpuUtilization is rewritten when its percent moved by this
	// many points or more...
	utilizationMinChange = 5
	// utilizationRefresh: ...or when what status shows was measured this many intervals ago
	// (so that measuredAt never lies by much more), or when the idle state changed. Never more
	// than once per interval (samples come once per interval).
	utilizationRefresh = 10
	// utilizationStale: a job whose last sample is older than this many intervals shows no
	// utilisation (unknown) until measured again; its idleness is left as it was.
	utilizationStale = 3
)

// utilizationStore hands the measurer's rounds of samples to the decision loop, in order: a round
// that arrives before the loop took the previous one is queued, not lost (at most
// maxPendingRounds, the oldest dropped first).
type utilizationStore struct {
	mu     sync.Mutex
	rounds []map[utilization.PodKey]utilization.Sample
}

const maxPendingRounds = 8

func (s *utilizationStore) put(samples map[utilization.PodKey]utilization.Sample, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		samples = nil // nothing could be read: every pod unknown, nothing changes
	}
	if len(s.rounds) == maxPendingRounds {
		s.rounds = s.rounds[1:]
	}
	s.rounds = append(s.rounds, samples)
}

// take returns the rounds not taken yet, oldest first.
func (s *utilizationStore) take() []map[utilization.PodKey]utilization.Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rounds
	s.rounds = nil
	return r
}

// measurer calls the Source every interval.
type measurer struct {
	r        *QueueReconciler
	source   utilization.Source
	interval time.Duration
}

func (m *measurer) run(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("utilization")
	for {
		samples, err := m.source.Collect(ctx, m.interval)
		if err != nil {
			logger.Error(err, "GPU utilisation unknown for this round")
		}
		m.r.utilization.put(samples, err)
		m.r.wakeUp()
		select {
		case <-ctx.Done():
			return nil
		case <-m.r.opts.Clock.After(m.interval):
		}
	}
}

// measured takes the new rounds of samples, if any, into the ledger, after a decision: each sample
// of a job's live pod (Admitted or Running). It returns whether there was one (then the loop
// decides again, from them).
func (r *QueueReconciler) measured(obs *observe.Observation) bool {
	rounds := r.utilization.take()
	for _, samples := range rounds {
		r.measuredRound(obs, samples)
	}
	return len(rounds) > 0
}

func (r *QueueReconciler) measuredRound(obs *observe.Observation, samples map[utilization.PodKey]utilization.Sample) {
	byJob := map[types.UID]observe.GPUSample{}
	set := r.opts.Idle
	for _, v := range obs.Views {
		if v.Live == nil || v.Phase != cvlabv1alpha1.PhaseRunning && v.Phase != cvlabv1alpha1.PhaseAdmitted {
			continue
		}
		s, ok := samples[utilization.PodKey{Namespace: v.Live.Namespace, Name: v.Live.Name}]
		if !ok {
			continue
		}
		g := observe.GPUSample{Percent: s.Utilization * 100, MemoryUsedMiB: s.MemoryUsedMiB, Window: set.Interval, At: s.At}
		if g.At.IsZero() {
			g.At = r.opts.Clock.Now()
		}
		byJob[v.Job.UID] = g
		if g.Percent < float64(set.Threshold) {
			metricIdleGPUSeconds.WithLabelValues(v.Job.Spec.User).Add(float64(v.Job.Spec.GPUs) * set.Interval.Seconds())
		}
	}
	r.ledger.Measured(obs, byJob)
}

// warnIdle gives the warning of each job idle for --idle-after, once per idle period: a Warning
// event GPUIdle, and the notifier. It returns the evictions --idle-action=Suspend asks for.
func (r *QueueReconciler) warnIdle(obs *observe.Observation, now time.Time) []observe.Eviction {
	var out []observe.Eviction
	set := r.opts.Idle
	for _, v := range obs.Views {
		g := v.GPU
		if g == nil || g.Stage == observe.IdleActive || v.Phase != cvlabv1alpha1.PhaseRunning {
			continue
		}
		if !g.Warned {
			msg := fmt.Sprintf("the GPUs of %s have been idle (below %d%%) since %s: %s", v.Key(), set.Threshold,
				g.Since.UTC().Format(time.RFC3339), idleConsequence(set))
			if r.recorder != nil {
				r.recorder.Eventf(v.Job, nil, corev1.EventTypeWarning, cvlabv1alpha1.EventGPUIdle, "Warn", "%s", msg)
			}
			if r.opts.Notifier != nil {
				r.opts.Notifier.Notify(notify.Preemption{Text: v.Job.Spec.User + ": " + msg, Kind: "GPUIdle",
					Victim: notify.JobRef{Namespace: v.Job.Namespace, Name: v.Job.Name, User: v.Job.Spec.User},
					Reason: msg, Time: now.UTC()})
			}
			r.ledger.Warned(v.Job.UID)
		}
		if g.Stage == observe.IdleReclaimable && set.Action == observe.IdleSuspend && v.Live != nil {
			msg := fmt.Sprintf("suspended: its GPUs were idle (below %d%%) since %s; back in the queue, held back until %s",
				set.Threshold, g.Since.UTC().Format(time.RFC3339), now.Add(set.After).UTC().Format(time.RFC3339))
			out = append(out, observe.Eviction{View: v, Reason: cvlabv1alpha1.EventGPUReclaimed, Message: msg, IdleSince: g.Since})
		}
	}
	return out
}

// idleConsequence says what happens next to a job warned for idleness.
func idleConsequence(set observe.IdleSettings) string {
	switch set.Action {
	case observe.IdleWarn:
		return "please delete it if you do not use it"
	case observe.IdleSuspend:
		return fmt.Sprintf("it will be stopped and requeued after a further %s unless they work again", observe.ShortDuration(set.Grace))
	}
	return fmt.Sprintf("after a further %s its GPUs count as free and any waiting job may evict it", observe.ShortDuration(set.Grace))
}

// recordUtilization renders status.gpuUtilization, status.idleSince and the GPUIdle condition of
// a job (in desiredStatus), at a bounded rate: see utilizationMinChange and the rules beside it.
// A job that does not run shows none of them.
func recordUtilization(st *cvlabv1alpha1.CvlabJobStatus, v *observe.Job, gen int64, now time.Time) {
	if st.Phase != cvlabv1alpha1.PhaseRunning {
		st.GPUUtilization, st.IdleSince = nil, nil
		meta.RemoveStatusCondition(&st.Conditions, cvlabv1alpha1.ConditionGPUIdle)
		return
	}
	g := v.GPU
	if g == nil {
		return // unmeasured: status keeps what it showed (nothing new is known)
	}
	set := g.Settings
	interval := max(set.Interval, time.Second)
	wasIdle := st.IdleSince != nil
	if g.Since.IsZero() {
		st.IdleSince = nil
	} else if !st.IdleSince.Equal(&metav1.Time{Time: g.Since}) {
		st.IdleSince = &metav1.Time{Time: g.Since}
	}
	idleChanged := wasIdle != (st.IdleSince != nil)
	switch cur := st.GPUUtilization; {
	case now.Sub(g.Last.At) > utilizationStale*interval:
		st.GPUUtilization = nil // unknown now
	case cur == nil || idleChanged || g.Last.At.Sub(cur.MeasuredAt.Time) >= interval &&
		(abs32(g.Last.RoundPercent()-cur.Percent) >= utilizationMinChange || g.Last.At.Sub(cur.MeasuredAt.Time) >= utilizationRefresh*interval):
		u := &cvlabv1alpha1.GPUUtilization{Percent: g.Last.RoundPercent(), Window: metav1.Duration{Duration: g.Last.Window},
			MeasuredAt: metav1.Time{Time: g.Last.At}}
		if g.Last.MemoryUsedMiB > 0 {
			u.MemoryUsedMiB = g.Last.MemoryUsedMiB
		}
		st.GPUUtilization = u
	}
	t := metav1.NewTime(now)
	since := g.Since.UTC().Format(time.RFC3339)
	switch {
	case g.Stage == observe.IdleIdle:
		setGPUIdle(st, true, cvlabv1alpha1.ReasonIdle, fmt.Sprintf("its GPUs have been below %d%% since %s: %s", set.Threshold, since, idleConsequence(set)), gen, t)
	case g.Stage == observe.IdleReclaimable:
		setGPUIdle(st, true, cvlabv1alpha1.ReasonReclaimable, fmt.Sprintf("its GPUs have been below %d%% since %s: they count as free for the queue", set.Threshold, since), gen, t)
	case g.Since.IsZero() && meta.IsStatusConditionTrue(st.Conditions, cvlabv1alpha1.ConditionGPUIdle):
		setGPUIdle(st, false, cvlabv1alpha1.ReasonActive, "its GPUs work again", gen, t)
	}
}

func abs32(x int32) int32 {
	if x < 0 {
		return -x
	}
	return x
}

// recordUtilizationMetrics sets cvlab_job_gpu_utilization (measured jobs, fresh data only) and
// cvlab_idle_gpus.
func recordUtilizationMetrics(obs *observe.Observation, now time.Time) {
	metricJobUtilization.Reset()
	var idle int32
	for _, v := range obs.Views {
		g := v.GPU
		if g == nil || v.Phase != cvlabv1alpha1.PhaseRunning || now.Sub(g.Last.At) > utilizationStale*max(g.Settings.Interval, time.Second) {
			continue
		}
		metricJobUtilization.WithLabelValues(v.Job.Namespace, v.Job.Name, v.Job.Spec.User).Set(math.Round(g.Last.Percent*10) / 10)
		if g.Stage != observe.IdleActive {
			idle += v.Job.Spec.GPUs
		}
	}
	metricIdleGPUs.Set(float64(idle))
}

// tellIdleReclaim tells the owner of a job evicted for its idle GPUs that they were given back:
// a Warning event GPUReclaimed besides the eviction's own, and the notifier for a suspension (a
// reclaim by a preemptor is notified as a preemption).
func tellIdleReclaim(r *QueueReconciler, v *observe.Job, ev observe.Eviction, now time.Time) {
	if r.recorder != nil && ev.Reason != cvlabv1alpha1.EventGPUReclaimed {
		r.recorder.Eventf(v.Job, preemptorJob(&ev), corev1.EventTypeWarning, cvlabv1alpha1.EventGPUReclaimed, "Reclaim", "%s", ev.Message)
	}
	if r.opts.Notifier != nil && ev.Reason == cvlabv1alpha1.EventGPUReclaimed {
		r.opts.Notifier.Notify(notify.Preemption{Text: fmt.Sprintf("%s: your job %s was %s", v.Job.Spec.User, v.Key(), ev.Message),
			Kind: "GPUReclaimed", Victim: notify.JobRef{Namespace: v.Job.Namespace, Name: v.Job.Name, User: v.Job.Spec.User},
			Reason: ev.Message, Time: now.UTC()})
	}
}
