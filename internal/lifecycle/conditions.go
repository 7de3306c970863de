package lifecycle

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

// SetReady summarises the job for health checks (kstatus, Argo CD, Flux): the reason is the phase,
// the message msg.
func SetReady(st *cvlabv1alpha1.CvlabJobStatus, msg string, gen int64, now metav1.Time) {
	on := st.Phase == cvlabv1alpha1.PhaseRunning || st.Phase == cvlabv1alpha1.PhaseSucceeded
	setCondition(st, cvlabv1alpha1.ConditionReady, on, string(st.Phase), msg, gen, now)
}

// WaitingCondition is the message of a waiting job's conditions. Its place in the queue and why
// it waits are in status.queuePosition and status.message only: they change whenever a job ahead
// starts, and a JSON merge patch rewrites the whole conditions list when one message in it
// changes, so position updates would cost the API server several times as much.
const WaitingCondition = "waiting in the queue: its place is status.queuePosition, why it waits status.message"

// SetQueued records whether the job waits for its turn.
func SetQueued(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionQueued, on, reason, msg, gen, now)
}

// SetAdmitted records whether the job holds its GPUs and a pod.
func SetAdmitted(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionAdmitted, on, reason, msg, gen, now)
}

// SetRunning records whether the job's pod runs.
func SetRunning(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionRunning, on, reason, msg, gen, now)
}

// SetPreempted records whether the job was evicted for a higher-ranked job and waits again.
func SetPreempted(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionPreempted, on, reason, msg, gen, now)
}

// SetGPUIdle sets the GPUIdle condition (reasons Idle, Reclaimable, Active): see
// recordUtilization.
func SetGPUIdle(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionGPUIdle, on, reason, msg, gen, now)
}

// SetDisrupted records whether the job waits again because its node lost its pod.
func SetDisrupted(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionDisrupted, on, reason, msg, gen, now)
}

// countDisruption counts a pod lost to its node (status.disruptions, apart from preemptions).
func countDisruption(st *cvlabv1alpha1.CvlabJobStatus) {
	st.Disruptions++
}

// SetFinished records that the job ended, and how.
func SetFinished(st *cvlabv1alpha1.CvlabJobStatus, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionFinished, true, reason, msg, gen, now)
}

// SetStalled records whether the job failed, for kstatus (Flux's health checks), which computes a
// Stalled=True object as Failed whatever its other conditions say; reason and msg are the
// Finished condition's. kstatus reads an absent Stalled as False ("abnormality-true"), so a job
// that has not failed has none: no condition to write to every job, and the Ready condition
// decides (Current when True, InProgress when False).
func SetStalled(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	if on {
		setCondition(st, cvlabv1alpha1.ConditionStalled, true, reason, msg, gen, now)
	} else if meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionStalled) != nil {
		meta.RemoveStatusCondition(&st.Conditions, cvlabv1alpha1.ConditionStalled)
	}
}
