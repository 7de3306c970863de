package notify

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

func TestDue(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { m := metav1.NewTime(t0.Add(d)); return &m }
	pos := func(n int32) *int32 { return &n }
	set := DueSettings{Defaults: []Kind{KindPreempted, KindGPUIdle, KindFailed, KindDeadlineSoon}, StartedAfter: time.Hour,
		DeadlineShare: 0.2, MaxAge: 24 * time.Hour, Since: t0.Add(-time.Hour), IdleThreshold: 5, IdleAction: "Reclaim",
		IdleAfter: time.Hour, IdleGrace: 30 * time.Minute}
	job := func(mod func(*cvlabv1alpha1.CvlabJob)) *cvlabv1alpha1.CvlabJob {
		j := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "train", UID: "u1", CreationTimestamp: metav1.NewTime(t0)},
			Spec: cvlabv1alpha1.CvlabJobSpec{User: "alice", GPUs: 1}}
		mod(j)
		return j
	}
	preempted := func(j *cvlabv1alpha1.CvlabJob) {
		j.Status = cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseQueued, Admissions: 1, QueuePosition: pos(2),
			LastEviction: &cvlabv1alpha1.Eviction{Reason: cvlabv1alpha1.EvictionPreempted, Preemptor: "ns2/big", PreemptorUser: "bob", Node: "n1", Admission: 1, Time: *at(2 * time.Hour)},
			Conditions:   []metav1.Condition{{Type: cvlabv1alpha1.ConditionPreempted, Status: metav1.ConditionTrue, Reason: cvlabv1alpha1.ReasonPreempted, Message: "evicted for ns2/big"}}}
	}
	running := func(j *cvlabv1alpha1.CvlabJob) {
		j.Status = cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseRunning, Admissions: 1, StartTime: at(90 * time.Minute), Node: "n1"}
	}
	failed := func(j *cvlabv1alpha1.CvlabJob) {
		j.Status = cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseFailed, Admissions: 1, PodName: "train-1", CompletionTime: at(3 * time.Hour), Message: "pod train-1 failed",
			Conditions: []metav1.Condition{{Type: cvlabv1alpha1.ConditionFinished, Status: metav1.ConditionTrue, Reason: cvlabv1alpha1.ReasonFailed}}}
	}
	code := int32(137)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "train-1"}, Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
		{Name: "job", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}}}}}
	ref := JobRef{Namespace: "ns", Name: "train", User: "alice"}
	cases := map[string]struct {
		job      *cvlabv1alpha1.CvlabJob
		pod      *corev1.Pod
		now      time.Time
		want     []Event
		wantNext time.Time
	}{
		"queued: nothing": {job: job(func(*cvlabv1alpha1.CvlabJob) {}), now: t0},
		"preempted: who, where, position": {job: job(preempted), now: t0.Add(2 * time.Hour), want: []Event{{Key: "u1.Preempted.1", Kind: KindPreempted, Job: ref,
			At: t0.Add(2 * time.Hour), Reason: "Preempted", Detail: "evicted for ns2/big", Preemptor: &JobRef{Namespace: "ns2", Name: "big", User: "bob"}, Node: "n1", QueuePosition: 2}}},
		"preempted, a day later: too old": {job: job(preempted), now: t0.Add(27 * time.Hour)},
		"preempted, its new place not written yet: later": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			preempted(j)
			j.Status.QueuePosition = nil
		}), now: t0.Add(2*time.Hour + time.Second), wantNext: t0.Add(2*time.Hour + PlaceWait)},
		"preempted, still no place after PlaceWait: told without it": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			preempted(j)
			j.Status.QueuePosition = nil
		}), now: t0.Add(2*time.Hour + PlaceWait), want: []Event{{Key: "u1.Preempted.1", Kind: KindPreempted, Job: ref,
			At: t0.Add(2 * time.Hour), Reason: "Preempted", Detail: "evicted for ns2/big", Preemptor: &JobRef{Namespace: "ns2", Name: "big", User: "bob"}, Node: "n1"}}},
		"preempted and admitted again at once: told at once": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			preempted(j)
			j.Status.QueuePosition, j.Status.Phase, j.Status.Admissions = nil, cvlabv1alpha1.PhaseAdmitted, 2
		}), now: t0.Add(2*time.Hour + time.Second), want: []Event{{Key: "u1.Preempted.1", Kind: KindPreempted, Job: ref,
			At: t0.Add(2 * time.Hour), Reason: "Preempted", Detail: "evicted for ns2/big", Preemptor: &JobRef{Namespace: "ns2", Name: "big", User: "bob"}, Node: "n1"}}},
		"preempted before notifications started": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			preempted(j)
			j.Status.LastEviction.Time = metav1.NewTime(t0.Add(-2 * time.Hour))
		}), now: t0},
		"preempted, but notify None": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			preempted(j)
			j.Spec.Notify = []cvlabv1alpha1.NotifyKind{cvlabv1alpha1.NotifyNone}
		}), now: t0.Add(2 * time.Hour)},
		"preempted, but notify only Failed": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			preempted(j)
			j.Spec.Notify = []cvlabv1alpha1.NotifyKind{cvlabv1alpha1.NotifyFailed}
		}), now: t0.Add(2 * time.Hour)},
		"requeued as unschedulable: not a preemption": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			preempted(j)
			j.Status.LastEviction.Reason = cvlabv1alpha1.EvictionUnschedulable
		}), now: t0.Add(2 * time.Hour)},
		"failed: reason, exit code, pod": {job: job(failed), pod: pod, now: t0.Add(3 * time.Hour), want: []Event{{Key: "u1.Failed.final", Kind: KindFailed, Job: ref,
			At: t0.Add(3 * time.Hour), Reason: "Failed", Detail: "pod train-1 failed", Pod: "train-1", ExitCode: &code}}},
		"failed, pod gone: no exit code": {job: job(failed), now: t0.Add(3 * time.Hour), want: []Event{{Key: "u1.Failed.final", Kind: KindFailed, Job: ref,
			At: t0.Add(3 * time.Hour), Reason: "Failed", Detail: "pod train-1 failed", Pod: "train-1"}}},
		"succeeded: only on request": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			failed(j)
			j.Status.Phase = cvlabv1alpha1.PhaseSucceeded
		}), now: t0.Add(3 * time.Hour)},
		"succeeded, asked for": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			failed(j)
			j.Status.Phase, j.Status.Message = cvlabv1alpha1.PhaseSucceeded, "pod train-1 succeeded"
			j.Status.Conditions[0].Reason = cvlabv1alpha1.ReasonSucceeded
			j.Spec.Notify = []cvlabv1alpha1.NotifyKind{cvlabv1alpha1.NotifySucceeded}
		}), now: t0.Add(3 * time.Hour), want: []Event{{Key: "u1.Succeeded.final", Kind: KindSucceeded, Job: ref,
			At: t0.Add(3 * time.Hour), Reason: "Succeeded", Detail: "pod train-1 succeeded", Pod: "train-1"}}},
		"running with a timeout: DeadlineSoon comes at 80%": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			running(j)
			j.Spec.Timeout = &metav1.Duration{Duration: 10 * time.Hour}
		}), now: t0.Add(2 * time.Hour), wantNext: t0.Add(90*time.Minute + 8*time.Hour)},
		"running with a timeout, at 80%": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			running(j)
			j.Spec.Timeout = &metav1.Duration{Duration: 10 * time.Hour}
		}), now: t0.Add(90*time.Minute + 8*time.Hour), want: []Event{{Key: "u1.DeadlineSoon.1", Kind: KindDeadlineSoon, Job: ref,
			At: t0.Add(90*time.Minute + 8*time.Hour), NextAt: t0.Add(90*time.Minute + 10*time.Hour), Timeout: 10 * time.Hour, Node: "n1"}}},
		"started after 90 minutes, asked for": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			running(j)
			j.Spec.Notify = []cvlabv1alpha1.NotifyKind{cvlabv1alpha1.NotifyStarted}
		}), now: t0.Add(2 * time.Hour), want: []Event{{Key: "u1.Started.1", Kind: KindStarted, Job: ref, At: t0.Add(90 * time.Minute), Waited: 90 * time.Minute, Node: "n1"}}},
		"started quickly after a preemption: no message": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			running(j)
			j.Status.Admissions = 2
			j.Status.LastEviction = &cvlabv1alpha1.Eviction{Reason: cvlabv1alpha1.EvictionPreempted, Admission: 1, Time: *at(80 * time.Minute)}
			j.Spec.Notify = []cvlabv1alpha1.NotifyKind{cvlabv1alpha1.NotifyStarted}
		}), now: t0.Add(2 * time.Hour)},
		"idle: since when, what happens when": {job: job(func(j *cvlabv1alpha1.CvlabJob) {
			running(j)
			j.Status.IdleSince = at(2 * time.Hour)
			j.Status.Conditions = []metav1.Condition{{Type: cvlabv1alpha1.ConditionGPUIdle, Status: metav1.ConditionTrue, Reason: cvlabv1alpha1.ReasonIdle, Message: "idle", LastTransitionTime: *at(3 * time.Hour)}}
		}), now: t0.Add(3 * time.Hour), want: []Event{{Key: "u1.GPUIdle." + itoa(t0.Add(2*time.Hour).Unix()), Kind: KindGPUIdle, Job: ref, At: t0.Add(3 * time.Hour),
			Reason: "Idle", Detail: "idle", IdleSince: t0.Add(2 * time.Hour), IdlePercent: 5, NextAction: "Reclaim", NextAt: t0.Add(2*time.Hour + 90*time.Minute), Node: "n1"}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, next := Due(tc.job, tc.pod, set, tc.now)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Due (-want +got):\n%s", diff)
			}
			if !next.Equal(tc.wantNext) {
				t.Errorf("next = %v, want %v", next, tc.wantNext)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
