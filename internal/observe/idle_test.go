package observe

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

func TestIdleTrack(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	min := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	set := IdleSettings{Threshold: 5, After: time.Hour, Grace: 30 * time.Minute, Action: IdleReclaim, Interval: time.Minute}
	// a step is a sample at minute m of pod (p-1 by default), or none that round (missing).
	type step struct {
		m       int
		percent float64
		missing bool
		pod     string
	}
	type want struct {
		Since  time.Time
		Stage  IdleStage
		Due    time.Time
		LastAt time.Time
	}
	cases := map[string]struct {
		set    IdleSettings
		exempt bool
		steps  []step
		want   want
	}{
		"exactly at the threshold is active": {set: set, steps: []step{{m: 0, percent: 5}, {m: 90, percent: 5}},
			want: want{LastAt: min(90)}},
		"just below the threshold starts idleness": {set: set, steps: []step{{m: 0, percent: 4.99}},
			want: want{Since: min(0), Due: min(60), LastAt: min(0)}},
		"idle for After: warned": {set: set, steps: []step{{m: 0}, {m: 60}},
			want: want{Since: min(0), Stage: IdleIdle, Due: min(90), LastAt: min(60)}},
		"idle for After and Grace: reclaimable": {set: set, steps: []step{{m: 0}, {m: 60}, {m: 90}},
			want: want{Since: min(0), Stage: IdleReclaimable, LastAt: min(90)}},
		"activity resets everything": {set: set, steps: []step{{m: 0}, {m: 90}, {m: 91, percent: 50}, {m: 92}},
			want: want{Since: min(92), Due: min(152), LastAt: min(92)}},
		"missing data does not advance idleness": {set: set, steps: []step{{m: 0}, {m: 30}, {m: 200, missing: true}},
			want: want{Since: min(0), Due: min(60), LastAt: min(30)}},
		"missing data does not start idleness": {set: set, steps: []step{{m: 0, percent: 80}, {m: 100, missing: true}},
			want: want{LastAt: min(0)}},
		"missing data does not reset idleness": {set: set, steps: []step{{m: 0}, {m: 10, missing: true}, {m: 60}},
			want: want{Since: min(0), Stage: IdleIdle, Due: min(90), LastAt: min(60)}},
		"Warn mode stops at the warning": {set: IdleSettings{Threshold: 5, After: time.Hour, Grace: time.Minute, Action: IdleWarn},
			steps: []step{{m: 0}, {m: 300}}, want: want{Since: min(0), Stage: IdleIdle, LastAt: min(300)}},
		"Suspend mode becomes due": {set: IdleSettings{Threshold: 5, After: time.Hour, Grace: 30 * time.Minute, Action: IdleSuspend},
			steps: []step{{m: 0}, {m: 90}}, want: want{Since: min(0), Stage: IdleReclaimable, LastAt: min(90)}},
		"exempt jobs are never warned": {set: set, exempt: true, steps: []step{{m: 0}, {m: 300}},
			want: want{Since: min(0), LastAt: min(300)}},
		"a new pod starts afresh": {set: set, steps: []step{{m: 0}, {m: 90}, {m: 100, pod: "p-2"}},
			want: want{Since: min(100), Due: min(160), LastAt: min(100)}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var tr IdleTrack
			for _, s := range tc.steps {
				if s.missing {
					continue
				}
				pod := s.pod
				if pod == "" {
					pod = "p-1"
				}
				tr = tc.set.Track(tr, pod, GPUSample{Percent: s.percent, At: min(s.m)})
			}
			got := want{Since: tr.Since, Stage: tc.set.Stage(tr, tc.exempt), Due: tc.set.IdleDue(tr, tc.exempt), LastAt: tr.Last.At}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIdleWarnedResetByActivity(t *testing.T) {
	set := DefaultSettings().Idle
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	tr := set.Track(IdleTrack{}, "p", GPUSample{At: t0})
	tr.Warned = true
	if tr = set.Track(tr, "p", GPUSample{At: t0.Add(time.Minute)}); !tr.Warned {
		t.Errorf("an idle sample cleared Warned")
	}
	if tr = set.Track(tr, "p", GPUSample{Percent: 5, At: t0.Add(2 * time.Minute)}); tr.Warned || !tr.Since.IsZero() {
		t.Errorf("activity kept %+v", tr)
	}
}

func TestIdleFromStatus(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	set := IdleSettings{Threshold: 5, After: time.Hour, Grace: 30 * time.Minute, Action: IdleReclaim, Interval: time.Minute}
	mt := func(m int) *metav1.Time { return &metav1.Time{Time: t0.Add(time.Duration(m) * time.Minute)} }
	running := func(since *metav1.Time, reason string) *cvlabv1alpha1.CvlabJobStatus {
		st := &cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseRunning, PodName: "p-1", IdleSince: since,
			GPUUtilization: &cvlabv1alpha1.GPUUtilization{Percent: 0, MeasuredAt: *mt(0)}}
		if reason != "" {
			st.Conditions = []metav1.Condition{{Type: cvlabv1alpha1.ConditionGPUIdle, Status: metav1.ConditionTrue, Reason: reason}}
		}
		return st
	}
	cases := map[string]struct {
		st   *cvlabv1alpha1.CvlabJobStatus
		want IdleStage
		ok   bool
	}{
		"not measured":     {st: &cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseRunning}},
		"measured, busy":   {st: running(nil, ""), ok: true, want: IdleActive},
		"idle, no warning": {st: running(mt(0), ""), ok: true, want: IdleActive},
		"warned":           {st: running(mt(0), cvlabv1alpha1.ReasonIdle), ok: true, want: IdleIdle},
		"reclaimable":      {st: running(mt(0), cvlabv1alpha1.ReasonReclaimable), ok: true, want: IdleReclaimable},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tr, ok := idleFromStatus(tc.st, set)
			if ok != tc.ok || ok && set.Stage(tr, false) != tc.want {
				t.Errorf("idleFromStatus = %+v, %v; stage %v, want %v, %v", tr, ok, set.Stage(tr, false), tc.want, tc.ok)
			}
		})
	}
}

// TestIdleOnlyWhatIsKnownAndRunning: what the policy acts on is recent data of a running pod; a
// restarted operator goes on from the status.
func TestIdleOnlyWhatIsKnownAndRunning(t *testing.T) {
	set := DefaultSettings()
	set.Idle = IdleSettings{Threshold: 5, After: time.Hour, Grace: 30 * time.Minute, Action: IdleReclaim, Interval: time.Minute}
	idleFor := func(d time.Duration) IdleTrack {
		return IdleTrack{Pod: "a-1", Since: now.Add(-d), Last: GPUSample{Percent: 0, At: now}}
	}
	running := func(opts ...jobOpt) *cvlabv1alpha1.CvlabJob {
		return newJob("a", 2, append([]jobOpt{status(cvlabv1alpha1.PhaseRunning, 1, "n1")}, opts...)...)
	}
	cases := map[string]struct {
		job     *cvlabv1alpha1.CvlabJob
		phase   corev1.PodPhase
		track   *IdleTrack
		samples map[types.UID]GPUSample // a measuring round after the observation, if any
		want    IdleStage
	}{
		"idle for After+Grace, measured now: reclaimable": {job: running(), phase: corev1.PodRunning,
			track: ptrTo(idleFor(2 * time.Hour)), want: IdleReclaimable},
		"idle for After+Grace, but the last sample is 4 intervals old: not acted on": {job: running(), phase: corev1.PodRunning,
			track: func() *IdleTrack { tr := idleFor(2 * time.Hour); tr.Last.At = now.Add(-4 * time.Minute); return &tr }(), want: IdleActive},
		"a pod not running yet is not measured": {job: newJob("a", 2, status(cvlabv1alpha1.PhaseAdmitted, 1, "n1")), phase: corev1.PodPending,
			samples: map[types.UID]GPUSample{uidOf("a"): {Percent: 0, At: now}}, want: -1},
		"after a restart, idleness goes on from the status": {job: running(func(j *cvlabv1alpha1.CvlabJob) {
			since := metav1.NewTime(now.Add(-2 * time.Hour))
			j.Status.IdleSince = &since
		}), phase: corev1.PodRunning, samples: map[types.UID]GPUSample{uidOf("a"): {Percent: 0, At: now}}, want: IdleReclaimable},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			l := NewLedger()
			if tc.track != nil {
				l.Idle = map[types.UID]IdleTrack{uidOf("a"): *tc.track}
			}
			in := Input{Jobs: []*cvlabv1alpha1.CvlabJob{tc.job}, Pods: []corev1.Pod{newPod(tc.job, 1, tc.phase, "n1")},
				Nodes: oneNode(), Settings: set, Ledger: l, Now: now}
			obs := Observe(in)
			if tc.samples != nil {
				l.Measured(obs, tc.samples)
				obs = Observe(in)
			}
			v := obs.ByKey[keyOf("a")]
			switch {
			case tc.want < 0 && v.GPU != nil:
				t.Errorf("measured: %+v", v.GPU)
			case tc.want >= 0 && (v.GPU == nil || v.GPU.Stage != tc.want):
				t.Errorf("stage %+v, want %v", v.GPU, tc.want)
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }
