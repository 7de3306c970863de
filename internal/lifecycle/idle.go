package lifecycle

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// Rules of the status fields (DesiredStatus, via recordUtilization):
const (
	// utilizationMinChange: status.gpuUtilization is rewritten when its percent moved by this
	// many points or more...
	utilizationMinChange = 5
	// utilizationRefresh: ...or when what status shows was measured this many intervals ago
	// (so that measuredAt never lies by much more), or when the idle state changed. Never more
	// than once per interval (samples come once per interval).
	utilizationRefresh = 10
	// UtilizationStale: a job whose last sample is older than this many intervals shows no
	// utilisation (unknown) until measured again; its idleness is left as it was.
	UtilizationStale = 3
)

// IdleWarning is the warning due to the owner of a job idle for --idle-after, once per idle
// period.
type IdleWarning struct {
	View    *observe.Job
	Message string
}

// IdleWarnings are the warnings due now (the loop gives them, then records Ledger.Warned), and the
// evictions --idle-action=Suspend asks for.
func IdleWarnings(obs *observe.Observation, set observe.IdleSettings, now time.Time) ([]IdleWarning, []observe.Eviction) {
	var warn []IdleWarning
	var out []observe.Eviction
	for _, v := range obs.Views {
		g := v.GPU
		if g == nil || g.Stage == observe.IdleActive || v.Phase != cvlabv1alpha1.PhaseRunning {
			continue
		}
		if !g.Warned {
			warn = append(warn, IdleWarning{View: v, Message: fmt.Sprintf("the GPUs of %s have been idle (below %d%%) since %s: %s",
				v.Key(), set.Threshold, g.Since.UTC().Format(time.RFC3339), idleConsequence(set))})
		}
		if g.Stage == observe.IdleReclaimable && set.Action == observe.IdleSuspend && v.Live != nil {
			msg := fmt.Sprintf("suspended: its GPUs were idle (below %d%%) since %s; back in the queue, held back until %s",
				set.Threshold, g.Since.UTC().Format(time.RFC3339), now.Add(set.After).UTC().Format(time.RFC3339))
			out = append(out, observe.Eviction{View: v, Reason: cvlabv1alpha1.EventGPUReclaimed, Message: msg, IdleSince: g.Since})
		}
	}
	return warn, out
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
// a job (in DesiredStatus), at a bounded rate: see utilizationMinChange and the rules beside it.
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
	case now.Sub(g.Last.At) > UtilizationStale*interval:
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
		SetGPUIdle(st, true, cvlabv1alpha1.ReasonIdle, fmt.Sprintf("its GPUs have been below %d%% since %s: %s", set.Threshold, since, idleConsequence(set)), gen, t)
	case g.Stage == observe.IdleReclaimable:
		SetGPUIdle(st, true, cvlabv1alpha1.ReasonReclaimable, fmt.Sprintf("its GPUs have been below %d%% since %s: they count as free for the queue", set.Threshold, since), gen, t)
	case g.Since.IsZero() && meta.IsStatusConditionTrue(st.Conditions, cvlabv1alpha1.ConditionGPUIdle):
		SetGPUIdle(st, false, cvlabv1alpha1.ReasonActive, "its GPUs work again", gen, t)
	}
}

func abs32(x int32) int32 {
	if x < 0 {
		return -x
	}
	return x
}
