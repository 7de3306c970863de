package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// One setter per condition type, so that each condition is written in one place.

func setCondition(st *cvlabv1alpha1.CvlabJobStatus, typ string, on bool, reason, msg string, gen int64, now metav1.Time) {
	status := metav1.ConditionFalse
	if on {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: now,
	})
}

// setReady summarises the job for health checks (kstatus, Argo CD, Flux): the reason is the phase,
// the message msg.
func setReady(st *cvlabv1alpha1.CvlabJobStatus, msg string, gen int64, now metav1.Time) {
	on := st.Phase == cvlabv1alpha1.PhaseRunning || st.Phase == cvlabv1alpha1.PhaseSucceeded
	setCondition(st, cvlabv1alpha1.ConditionReady, on, string(st.Phase), msg, gen, now)
}

// waitingCondition is the message of a waiting job's conditions. Its place in the queue and why
// it waits are in status.queuePosition and status.message only: they change whenever a job ahead
// starts, and a JSON merge patch rewrites the whole conditions list when one message in it
// changes, so position updates would cost the API server several times as much.
const waitingCondition = "waiting in the queue: its place is status.queuePosition, why it waits status.message"

// setQueued records whether the job waits for its turn.
func setQueued(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionQueued, on, reason, msg, gen, now)
}

// setAdmitted records whether the job holds its GPUs and a pod.
func setAdmitted(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionAdmitted, on, reason, msg, gen, now)
}

// setRunning records whether the job's pod runs.
func setRunning(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionRunning, on, reason, msg, gen, now)
}

// setPreempted records whether the job was evicted for a higher-ranked job and waits again.
func setPreempted(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionPreempted, on, reason, msg, gen, now)
}

// setDisrupted records whether the job waits again because its node lost its pod.
// setGPUIdle sets the GPUIdle condition (reasons Idle, Reclaimable, Active): see
// recordUtilization.
func setGPUIdle(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionGPUIdle, on, reason, msg, gen, now)
}

func setDisrupted(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionDisrupted, on, reason, msg, gen, now)
}

// countDisruption counts a pod lost to its node (status.disruptions, apart from preemptions).
func countDisruption(st *cvlabv1alpha1.CvlabJobStatus) {
	st.Disruptions++
}

// setFinished records that the job ended, and how.
func setFinished(st *cvlabv1alpha1.CvlabJobStatus, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionFinished, true, reason, msg, gen, now)
}

// setStalled records whether the job failed, for kstatus (Flux's health checks), which computes a
// Stalled=True object as Failed whatever its other conditions say; reason and msg are the
// Finished condition's. kstatus reads an absent Stalled as False ("abnormality-true"), so a job
// that has not failed has none: no condition to write to every job, and the Ready condition
// decides (Current when True, InProgress when False).
func setStalled(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	if on {
		setCondition(st, cvlabv1alpha1.ConditionStalled, true, reason, msg, gen, now)
	} else if meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionStalled) != nil {
		meta.RemoveStatusCondition(&st.Conditions, cvlabv1alpha1.ConditionStalled)
	}
}

// IsFinished tells whether a job's status is terminal.
func IsFinished(st *cvlabv1alpha1.CvlabJobStatus) bool {
	return st.Phase == cvlabv1alpha1.PhaseSucceeded || st.Phase == cvlabv1alpha1.PhaseFailed
}

// statusEqual tells whether two statuses are the same, as equality.Semantic.DeepEqual would, for
// a fraction of its cost: a decision compares every job's status with what it should be, and
// reflection was a third of a decision's CPU at 5,000 jobs. TestStatusEqual fails when a field is
// added to CvlabJobStatus or metav1.Condition and not compared here.
func statusEqual(a, b *cvlabv1alpha1.CvlabJobStatus) bool {
	if a == b {
		return true
	}
	if a.Phase != b.Phase || !int32PtrEqual(a.QueuePosition, b.QueuePosition) || !int32PtrEqual(a.Rank, b.Rank) ||
		a.UserGPUs != b.UserGPUs || a.PodName != b.PodName || a.Admissions != b.Admissions ||
		a.Preemptions != b.Preemptions || a.Disruptions != b.Disruptions || a.Node != b.Node ||
		a.WaitingReason != b.WaitingReason || !a.BackoffUntil.Equal(b.BackoffUntil) || a.ReservedNode != b.ReservedNode ||
		!utilizationEqual(a.GPUUtilization, b.GPUUtilization) || !a.IdleSince.Equal(b.IdleSince) || !a.AdmittedAt.Equal(b.AdmittedAt) || !a.StartTime.Equal(b.StartTime) ||
		!a.CompletionTime.Equal(b.CompletionTime) || a.Message != b.Message ||
		a.ObservedGeneration != b.ObservedGeneration || len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.Conditions {
		x, y := &a.Conditions[i], &b.Conditions[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message ||
			x.ObservedGeneration != y.ObservedGeneration || !x.LastTransitionTime.Equal(&y.LastTransitionTime) {
			return false
		}
	}
	return true
}

func utilizationEqual(a, b *cvlabv1alpha1.GPUUtilization) bool {
	return a == nil && b == nil || a != nil && b != nil && a.Percent == b.Percent && a.MemoryUsedMiB == b.MemoryUsedMiB &&
		a.Window == b.Window && a.MeasuredAt.Equal(&b.MeasuredAt)
}

func int32PtrEqual(a, b *int32) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}
