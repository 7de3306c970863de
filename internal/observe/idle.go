package observe

import (
	"math"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// AnnotationIdleExempt on a CvlabJob, set to "true", exempts it from the idle policy: it is
// measured and shown, but never warned, reclaimed nor suspended. Only admins may set or change it
// (the ValidatingAdmissionPolicy config/policies/job_idle_exempt.yaml).
const AnnotationIdleExempt = "cvlab.epfl.ch/idle-exempt"

// GPUSample is what one job's pod's GPUs did over a measuring window (the operator's
// utilization.Sample, without the package: observe stays free of the Prometheus libraries).
type GPUSample struct {
	// Percent is the average utilisation, 0-100.
	Percent float64
	// MemoryUsedMiB is the GPU memory in use; -1 when unknown.
	MemoryUsedMiB int64
	Window        time.Duration
	At            time.Time
}

// IdleTrack is what the loop remembers of one running job's GPUs (Ledger.Idle).
//
// The rule, for the samples of the job's current pod in time order:
//   - a sample at or above the threshold is activity: it resets everything (Since zero, Warned
//     false);
//   - a sample below the threshold starts idleness (Since = its time) unless it was idle already;
//   - a missing sample (the exporter down, the pod without series) changes nothing: it neither
//     starts nor resets idleness, and does not advance it toward action either, since idleness
//     is measured up to the last sample (Last.At - Since), never up to now;
//   - a new pod (the job was readmitted) starts afresh.
type IdleTrack struct {
	// Pod is the pod the samples are of.
	Pod string
	// Last is the last sample.
	Last GPUSample
	// Since is the time of the first of the samples below the threshold since the last one at or
	// above it; zero while active.
	Since time.Time
	// Warned is set once the warning of this idle period was given (the GPUIdle event).
	Warned bool
}

// IdleStage is where a job stands in the idle policy.
type IdleStage int

const (
	// IdleActive: busy, unmeasured, idle for less than After, or exempt.
	IdleActive IdleStage = iota
	// IdleIdle: idle for After: the warning.
	IdleIdle
	// IdleReclaimable: idle for After plus Grace: the action (Reclaim, Suspend) is due; never
	// reached with Action Warn.
	IdleReclaimable
)

// Track adds one sample of pod to t.
func (s IdleSettings) Track(t IdleTrack, pod string, sample GPUSample) IdleTrack {
	if t.Pod != pod {
		t = IdleTrack{Pod: pod}
	}
	t.Last = sample
	if sample.Percent >= float64(s.Threshold) {
		t.Since, t.Warned = time.Time{}, false
	} else if t.Since.IsZero() {
		t.Since = sample.At
	}
	return t
}

// Stage is where t stands: idleness counts from Since to the last sample.
func (s IdleSettings) Stage(t IdleTrack, exempt bool) IdleStage {
	if exempt || t.Since.IsZero() || s.After <= 0 {
		return IdleActive
	}
	idle := t.Last.At.Sub(t.Since)
	switch {
	case idle < s.After:
		return IdleActive
	case s.Action == IdleWarn || idle < s.After+s.Grace:
		return IdleIdle
	}
	return IdleReclaimable
}

// IdleDue is when t reaches its next stage if its GPUs stay idle and are measured (zero: never).
func (s IdleSettings) IdleDue(t IdleTrack, exempt bool) time.Time {
	if exempt || t.Since.IsZero() || s.After <= 0 {
		return time.Time{}
	}
	switch s.Stage(t, false) {
	case IdleActive:
		return t.Since.Add(s.After)
	case IdleIdle:
		if s.Action != IdleWarn {
			return t.Since.Add(s.After + s.Grace)
		}
	}
	return time.Time{}
}

// RoundPercent rounds a sample's utilisation for status: 0-100.
func (g GPUSample) RoundPercent() int32 {
	return int32(min(max(math.Round(g.Percent), 0), 100))
}

// JobIdle is a job's measured GPUs as one observation sees them (Job.GPU).
type JobIdle struct {
	IdleTrack
	Stage IdleStage
	// Exempt is set by the job's AnnotationIdleExempt.
	Exempt bool
	// Settings are the idle settings it was judged by.
	Settings IdleSettings
}

// Measured records the samples of one measuring round, after a decision: samples maps each job
// whose current pod was measured to its sample. A job that was not measured keeps its track as it
// was (unknown data changes nothing); a job that no longer holds a pod, or finished, or is gone,
// loses its track.
func (l *Ledger) Measured(obs *Observation, samples map[types.UID]GPUSample) {
	if l.Idle == nil {
		l.Idle = map[types.UID]IdleTrack{}
	}
	// Only a running pod is measured: before it runs (image pull, init containers) its GPUs are
	// idle by necessity, and that is no reason to take them back.
	holding := make(map[types.UID]*Job, len(obs.Views)) // the view of each job that holds a running pod
	for _, v := range obs.Views {
		if v.Live != nil && !v.Evicted && !IsFinished(v.Cur) && v.Phase == cvlabv1alpha1.PhaseRunning {
			holding[v.Job.UID] = v
		}
	}
	for uid, t := range l.Idle {
		if v, ok := holding[uid]; !ok || v.Live.Name != t.Pod {
			delete(l.Idle, uid)
		}
	}
	for uid, s := range samples {
		v, ok := holding[uid]
		if !ok {
			continue
		}
		pod := v.Live.Name
		t, known := l.Idle[uid]
		if !known {
			// After a restart or a change of leader, idleness goes on from what the status says
			// (idleSince, the GPUIdle condition): neither a fresh idle period nor a second warning.
			if st, ok := idleFromStatus(v.Cur, obs.settings.Idle); ok && st.Pod == pod {
				t = st
			}
		}
		l.Idle[uid] = obs.settings.Idle.Track(t, pod, s)
	}
}

// Warned records that the warning of the job's current idle period was given.
func (l *Ledger) Warned(uid types.UID) {
	if t, ok := l.Idle[uid]; ok {
		t.Warned = true
		l.Idle[uid] = t
	}
}

// HoldBack keeps a requeued job waiting until until (--idle-action=Suspend), as a backoff does.
func (l *Ledger) HoldBack(uid types.UID, until time.Time) {
	l.Backoff[uid] = Backoff{Until: until, Failures: l.Backoff[uid].Failures, Idle: true}
}

// observeIdle sets v.GPU from the ledger, for a job with a live pod that was measured.
func (obs *Observation) observeIdle(v *Job) {
	if v.Live == nil || obs.ledger.Idle == nil {
		return
	}
	t, ok := obs.ledger.Idle[v.Job.UID]
	if !ok || t.Pod != v.Live.Name {
		return
	}
	exempt := v.Job.Annotations[AnnotationIdleExempt] == "true"
	stage := obs.settings.Idle.Stage(t, exempt)
	if obs.settings.Idle.Stale(t, obs.now) {
		stage = IdleActive // no recent data: never acted on (its GPUs may work again)
	}
	if len(obs.gpus) == cap(obs.gpus) {
		// A new chunk; the views that point into the last one keep it.
		obs.gpus = make([]JobIdle, 0, max(16, 2*cap(obs.gpus)))
	}
	obs.gpus = append(obs.gpus, JobIdle{IdleTrack: t, Stage: stage, Exempt: exempt, Settings: obs.settings.Idle})
	v.GPU = &obs.gpus[len(obs.gpus)-1]
}

// Stale tells whether t's last sample is too old to act on at now: older than three measuring
// intervals (the status shows the utilisation as unknown by then).
func (s IdleSettings) Stale(t IdleTrack, now time.Time) bool {
	return s.Interval > 0 && now.Sub(t.Last.At) > 3*s.Interval
}

// idleFromStatus is a running job's idle track as its status shows it (for FromStatus): idleSince,
// the last utilisation written, and how far the GPUIdle condition says idleness went (status is
// written only on meaningful change, so measuredAt may be older than the operator's last sample).
func idleFromStatus(st *cvlabv1alpha1.CvlabJobStatus, set IdleSettings) (IdleTrack, bool) {
	if st.Phase != cvlabv1alpha1.PhaseRunning || st.GPUUtilization == nil && st.IdleSince == nil {
		return IdleTrack{}, false
	}
	t := IdleTrack{Pod: st.PodName, Last: GPUSample{MemoryUsedMiB: -1}}
	if u := st.GPUUtilization; u != nil {
		t.Last = GPUSample{Percent: float64(u.Percent), MemoryUsedMiB: u.MemoryUsedMiB, Window: u.Window.Duration, At: u.MeasuredAt.Time}
	}
	if st.IdleSince != nil {
		t.Since = st.IdleSince.Time
		if c := meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionGPUIdle); c != nil && c.Status == metav1.ConditionTrue {
			reached := t.Since.Add(set.After)
			if c.Reason == cvlabv1alpha1.ReasonReclaimable {
				reached = reached.Add(set.Grace)
			}
			if reached.After(t.Last.At) {
				t.Last.At = reached
			}
			t.Warned = true
		}
		if t.Last.At.Before(t.Since) {
			t.Last.At = t.Since
		}
	}
	return t, true
}
