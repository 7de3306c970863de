package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// ConditionDisrupted is True while a job waits again because its pod was lost to its node (node
// deleted or NotReady, kubelet eviction, drain): not its owner's doing.
const ConditionDisrupted = "Disrupted"

// Condition reasons.
const (
	ReasonWaiting          = "Waiting"
	ReasonSuspended        = "Suspended"
	ReasonPodCreated       = "PodCreated"
	ReasonPodRunning       = "PodRunning"
	ReasonPodPending       = "PodPending"
	ReasonSucceeded        = "Succeeded"
	ReasonFailed           = "Failed"
	ReasonDeadlineExceeded = "DeadlineExceeded"
	ReasonPodDeleted       = "PodDeleted"
	ReasonAdmitted         = "Admitted"
	ReasonFinished         = "Finished"
	ReasonPreempted        = "Preempted"
	ReasonReadmitted       = "Readmitted"
	// ReasonPodEnded voids a preemption whose victim ended on its own before it was stopped.
	ReasonPodEnded = "PodEnded"
	// ReasonInvalidSpec fails a job whose stored spec the queue cannot run (see jobView.invalid).
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonNodeLost is the Disrupted condition's reason.
	ReasonNodeLost = "NodeLost"
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

// setReady summarises the job for health checks (kstatus, Argo CD, Flux): the reason is the phase.
func setReady(st *cvlabv1alpha1.CvlabJobStatus, gen int64, now metav1.Time) {
	on := st.Phase == cvlabv1alpha1.PhaseRunning || st.Phase == cvlabv1alpha1.PhaseSucceeded
	setCondition(st, cvlabv1alpha1.ConditionReady, on, string(st.Phase), st.Message, gen, now)
}

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
func setDisrupted(st *cvlabv1alpha1.CvlabJobStatus, on bool, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, ConditionDisrupted, on, reason, msg, gen, now)
}

// countDisruption counts a pod lost to its node. Until the API has a field of its own for it
// (status.disruptions), it is counted with the evictions in status.preemptions; the Disrupted
// condition tells them apart.
func countDisruption(st *cvlabv1alpha1.CvlabJobStatus) {
	st.Preemptions++
}

// setFinished records that the job ended, and how.
func setFinished(st *cvlabv1alpha1.CvlabJobStatus, reason, msg string, gen int64, now metav1.Time) {
	setCondition(st, cvlabv1alpha1.ConditionFinished, true, reason, msg, gen, now)
}

// IsFinished tells whether a job's status is terminal.
func IsFinished(st *cvlabv1alpha1.CvlabJobStatus) bool {
	return st.Phase == cvlabv1alpha1.PhaseSucceeded || st.Phase == cvlabv1alpha1.PhaseFailed
}
