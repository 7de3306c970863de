package lifecycle

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// TestRecordUtilization checks when status.gpuUtilization, status.idleSince and the GPUIdle
// condition change: only on a meaningful change, at most once per interval.
func TestRecordUtilization(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	m := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	set := observe.IdleSettings{Threshold: 5, After: time.Hour, Grace: 30 * time.Minute, Action: observe.IdleReclaim, Interval: time.Minute}
	shown := func(p int32, at time.Time) *cvlabv1alpha1.GPUUtilization {
		return &cvlabv1alpha1.GPUUtilization{Percent: p, Window: metav1.Duration{Duration: time.Minute}, MeasuredAt: metav1.Time{Time: at}, MemoryUsedMiB: 100}
	}
	gpu := func(p float64, at, since time.Time, stage observe.IdleStage) *observe.JobIdle {
		return &observe.JobIdle{IdleTrack: observe.IdleTrack{Pod: "p", Since: since,
			Last: observe.GPUSample{Percent: p, MemoryUsedMiB: 100, Window: time.Minute, At: at}}, Stage: stage, Settings: set}
	}
	type want struct {
		Util      *cvlabv1alpha1.GPUUtilization
		IdleSince *time.Time
		Cond      string // "" none, else Status/Reason
	}
	ptr := func(t time.Time) *time.Time { return &t }
	cases := map[string]struct {
		phase cvlabv1alpha1.JobPhase
		cur   *cvlabv1alpha1.GPUUtilization
		since *time.Time
		cond  string // reason of a True GPUIdle condition in cur
		gpu   *observe.JobIdle
		now   time.Time
		want  want
	}{
		"first measure is written": {gpu: gpu(42.4, m(0), time.Time{}, observe.IdleActive), now: m(0),
			want: want{Util: shown(42, m(0))}},
		"a move under 5 points is not written": {cur: shown(42, m(0)), gpu: gpu(46, m(1), time.Time{}, observe.IdleActive), now: m(1),
			want: want{Util: shown(42, m(0))}},
		"a move of 5 points is written": {cur: shown(42, m(0)), gpu: gpu(47, m(1), time.Time{}, observe.IdleActive), now: m(1),
			want: want{Util: shown(47, m(1))}},
		"not twice within an interval": {cur: shown(42, m(0)), gpu: gpu(90, m(0).Add(30*time.Second), time.Time{}, observe.IdleActive), now: m(1),
			want: want{Util: shown(42, m(0))}},
		"refreshed after 10 intervals": {cur: shown(42, m(0)), gpu: gpu(43, m(10), time.Time{}, observe.IdleActive), now: m(10),
			want: want{Util: shown(43, m(10))}},
		"becoming idle is written at once": {cur: shown(6, m(0)), gpu: gpu(4, m(1), m(1), observe.IdleActive), now: m(1),
			want: want{Util: shown(4, m(1)), IdleSince: ptr(m(1))}},
		"stale data shows no utilisation but keeps idleness": {cur: shown(0, m(0)), since: ptr(m(0)), gpu: gpu(0, m(0), m(0), observe.IdleActive), now: m(4),
			want: want{IdleSince: ptr(m(0))}},
		"unmeasured keeps what status shows": {cur: shown(30, m(0)), now: m(50), want: want{Util: shown(30, m(0))}},
		"warned": {cur: shown(0, m(0)), since: ptr(m(0)), gpu: gpu(0, m(60), m(0), observe.IdleIdle), now: m(60),
			want: want{Util: shown(0, m(60)), IdleSince: ptr(m(0)), Cond: "True/Idle"}}, // refreshed too: 10 intervals old
		"reclaimable": {cur: shown(0, m(0)), since: ptr(m(0)), cond: cvlabv1alpha1.ReasonIdle, gpu: gpu(0, m(90), m(0), observe.IdleReclaimable), now: m(90),
			want: want{Util: shown(0, m(90)), IdleSince: ptr(m(0)), Cond: "True/Reclaimable"}},
		"activity after a warning": {cur: shown(0, m(0)), since: ptr(m(0)), cond: cvlabv1alpha1.ReasonIdle, gpu: gpu(80, m(70), time.Time{}, observe.IdleActive), now: m(70),
			want: want{Util: shown(80, m(70)), Cond: "False/Active"}},
		"a job that stops running shows nothing": {phase: cvlabv1alpha1.PhaseQueued, cur: shown(0, m(0)), since: ptr(m(0)), cond: cvlabv1alpha1.ReasonIdle, now: m(90),
			want: want{}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			st := &cvlabv1alpha1.CvlabJobStatus{Phase: tc.phase, GPUUtilization: tc.cur}
			if st.Phase == "" {
				st.Phase = cvlabv1alpha1.PhaseRunning
			}
			if tc.since != nil {
				st.IdleSince = &metav1.Time{Time: *tc.since}
			}
			if tc.cond != "" {
				SetGPUIdle(st, true, tc.cond, "idle", 1, metav1.Time{Time: t0})
			}
			v := &observe.Job{Job: &cvlabv1alpha1.CvlabJob{}, Live: &corev1.Pod{}, GPU: tc.gpu}
			recordUtilization(st, v, 1, tc.now)
			got := want{Util: st.GPUUtilization}
			if st.IdleSince != nil {
				got.IdleSince = ptr(st.IdleSince.Time)
			}
			if c := meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionGPUIdle); c != nil {
				got.Cond = string(c.Status) + "/" + c.Reason
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
