package controllers

import (
	"context"
	"math"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/utilization"
)

// Measuring GPUs (issue 15). A manager Runnable (measurer) calls the Source every
// --utilization-interval, over a window of one interval, and leaves the samples in a store; it then
// asks for a decision. The decision loop takes them after its decision (the ledger changes only
// after a decision), maps each pod to the job whose live pod it is, and asks for one more decision
// that sees them. With no Source, nothing is measured and nothing changes.

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
// event GPUIdle (the owner's message comes from the GPUIdle condition, notifications.go). It returns the evictions --idle-action=Suspend asks for.
func (r *QueueReconciler) warnIdle(obs *observe.Observation, now time.Time) []observe.Eviction {
	warnings, out := lifecycle.IdleWarnings(obs, r.opts.Idle, now)
	for _, w := range warnings {
		v, msg := w.View, w.Message
		if r.recorder != nil {
			r.recorder.Eventf(v.Job, nil, corev1.EventTypeWarning, cvlabv1alpha1.EventGPUIdle, "Warn", "%s", msg)
		}
		r.ledger.Warned(v.Job.UID)
	}
	return out
}

// recordUtilizationMetrics sets cvlab_job_gpu_utilization (measured jobs, fresh data only) and
// cvlab_idle_gpus.
func recordUtilizationMetrics(obs *observe.Observation, now time.Time) {
	metricJobUtilization.Reset()
	var idle int32
	for _, v := range obs.Views {
		g := v.GPU
		if g == nil || v.Phase != cvlabv1alpha1.PhaseRunning || now.Sub(g.Last.At) > lifecycle.UtilizationStale*max(g.Settings.Interval, time.Second) {
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
// a Warning event GPUReclaimed besides the eviction's own (a suspension's own event is
// GPUReclaimed). The owner's message comes from status.lastEviction (notifications.go).
func tellIdleReclaim(r *QueueReconciler, v *observe.Job, ev observe.Eviction) {
	if r.recorder != nil && ev.Reason != cvlabv1alpha1.EventGPUReclaimed {
		r.recorder.Eventf(v.Job, preemptorJob(&ev), corev1.EventTypeWarning, cvlabv1alpha1.EventGPUReclaimed, "Reclaim", "%s", ev.Message)
	}
}
