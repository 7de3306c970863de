package lifecycle

import (
	"fmt"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// DesiredStatus is the status the job should have after this decision: typed fields first, the
// sentences rendered from them. v.Cur is never changed (it may be the cache's own).
func DesiredStatus(v *observe.Job, e *queue.Entry, cluster observe.Cluster, backoffUntil, now time.Time) *cvlabv1alpha1.CvlabJobStatus {
	if observe.IsFinished(v.Cur) && v.Cur.ObservedGeneration != v.Job.Generation && v.Cur.ObservedGeneration != 0 {
		// Final, but its spec was edited since (priority, suspend in git): say the edit was seen,
		// so that GitOps health (kstatus) does not wait for it forever. Nothing else changes.
		st := v.Cur.DeepCopy()
		st.ObservedGeneration = v.Job.Generation
		return st
	}
	if observe.IsFinished(v.Cur) || v.Frozen {
		return v.Cur // final: never rewritten; or left as it is until its pod is gone
	}
	st := v.Cur.DeepCopy()
	gen := v.Job.Generation
	// condMsg is the message of the conditions that describe the phase, when it is not st.Message.
	var condMsg string
	t := metav1.NewTime(now)
	st.ObservedGeneration = gen
	st.QueuePosition, st.Rank, st.UserGPUs = nil, nil, ""
	st.Node, st.WaitingReason, st.BackoffUntil, st.ReservedNode = "", "", nil, ""
	if v.Disruption != "" && (st.Phase == cvlabv1alpha1.PhaseAdmitted || st.Phase == cvlabv1alpha1.PhaseRunning) {
		// Its node lost its pod: counted once, whether it waits now or is admitted again at once.
		countDisruption(st)
		SetDisrupted(st, true, cvlabv1alpha1.ReasonNodeLost, v.Disruption+"; back in the queue, not counted against the job", gen, t)
	}
	if e != nil {
		st.Rank = ptrInt32(e.Rank)
		st.UserGPUs = e.UserGPUs()
	}

	switch v.Phase {
	case cvlabv1alpha1.PhaseSucceeded, cvlabv1alpha1.PhaseFailed:
		st.Phase = v.Phase
		if v.Live != nil { // it may have ended before its admission was recorded (manager restarted)
			st.PodName, st.Admissions = v.Live.Name, v.LastAdmission
			if st.StartTime == nil {
				st.StartTime = v.Live.Status.StartTime
			}
		}
		if v.EvictionVoid && meta.IsStatusConditionTrue(st.Conditions, cvlabv1alpha1.ConditionPreempted) {
			st.Preemptions = max(st.Preemptions-1, 0)
			SetPreempted(st, false, cvlabv1alpha1.ReasonPodEnded, "its pod ended before it could be evicted", gen, t)
		}
		st.Rank, st.UserGPUs = nil, ""
		st.CompletionTime = &t
		st.Message = v.FinishMsg
		SetFinished(st, v.FinishReason, v.FinishMsg, gen, t)
		SetRunning(st, false, v.FinishReason, v.FinishMsg, gen, t)
		SetQueued(st, false, cvlabv1alpha1.ReasonFinished, v.FinishMsg, gen, t)

	case cvlabv1alpha1.PhaseSuspended:
		st.Phase = v.Phase
		st.Rank, st.UserGPUs = nil, ""
		st.StartTime = nil
		st.WaitingReason = cvlabv1alpha1.WaitingSuspended
		st.Message = suspendedMessage
		SetQueued(st, false, cvlabv1alpha1.ReasonSuspended, st.Message, gen, t)
		SetAdmitted(st, false, cvlabv1alpha1.ReasonSuspended, st.Message, gen, t)
		SetRunning(st, false, cvlabv1alpha1.ReasonSuspended, st.Message, gen, t)

	case cvlabv1alpha1.PhaseAdmitted:
		podName := PodName(v.Job, v.LastAdmission)
		if st.Admissions != v.LastAdmission || st.Phase != cvlabv1alpha1.PhaseAdmitted && st.Phase != cvlabv1alpha1.PhaseRunning {
			st.Admissions = v.LastAdmission
			st.AdmittedAt = &t
			st.StartTime = nil
		}
		st.Phase = v.Phase
		st.PodName = podName
		st.Node = v.Node
		st.Message = admittedMessage(st)
		SetQueued(st, false, cvlabv1alpha1.ReasonAdmitted, st.Message, gen, t)
		SetAdmitted(st, true, cvlabv1alpha1.ReasonPodCreated, st.Message, gen, t)
		SetRunning(st, false, cvlabv1alpha1.ReasonPodPending, st.Message, gen, t)
		if meta.IsStatusConditionTrue(st.Conditions, cvlabv1alpha1.ConditionPreempted) {
			SetPreempted(st, false, cvlabv1alpha1.ReasonReadmitted, "admitted again after being preempted", gen, t)
		}
		if c := meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionDisrupted); c != nil && c.Status == metav1.ConditionTrue {
			SetDisrupted(st, false, cvlabv1alpha1.ReasonReadmitted, "admitted again; before: "+c.Message, gen, t)
		}

	case cvlabv1alpha1.PhaseRunning:
		st.Phase = v.Phase
		st.PodName = v.Live.Name
		st.Node = v.Live.Spec.NodeName
		st.Admissions = v.LastAdmission
		if st.AdmittedAt == nil {
			st.AdmittedAt = &t
		}
		if st.StartTime == nil {
			st.StartTime = &t
		}
		st.Message = runningMessage(v, e)
		// The conditions leave out the user's GPU ordinals, which move when their other jobs start
		// or end (see WaitingCondition).
		condMsg = runningMessage(v, nil)
		SetQueued(st, false, cvlabv1alpha1.ReasonAdmitted, condMsg, gen, t)
		SetAdmitted(st, true, cvlabv1alpha1.ReasonPodCreated, fmt.Sprintf("pod %s created", v.Live.Name), gen, t)
		SetRunning(st, true, cvlabv1alpha1.ReasonPodRunning, condMsg, gen, t)

	case cvlabv1alpha1.PhaseQueued:
		st.Phase = v.Phase
		st.StartTime = nil
		if e != nil {
			st.WaitingReason = waitingReason(e.Wait)
			if e.Wait == queue.Reserved {
				st.ReservedNode = e.Node
			}
		}
		if v.StartErr != nil || st.WaitingReason == cvlabv1alpha1.WaitingBackingOff {
			st.WaitingReason = cvlabv1alpha1.WaitingBackingOff
			until := metav1.NewTime(backoffUntil)
			st.BackoffUntil = &until
		}
		switch {
		case v.StartErr != nil:
			st.Message = startFailedMessage(st, v.StartErr)
		case e != nil && e.Position > 0:
			st.QueuePosition = ptrInt32(e.Position)
			st.Message = waitingMessage(e, cluster.Foreign)
		case e != nil && e.Reason != "":
			st.Message = "waiting: " + e.Reason
		case v.Job.Spec.GPUs > 0:
			st.Message = "waiting for the next decision"
		default:
			st.Message = "waiting to be admitted"
		}
		condMsg = WaitingCondition
		if v.StartErr != nil {
			condMsg = st.Message
		}
		SetQueued(st, true, cvlabv1alpha1.ReasonWaiting, condMsg, gen, t)
		SetAdmitted(st, false, cvlabv1alpha1.ReasonWaiting, condMsg, gen, t)
		SetRunning(st, false, cvlabv1alpha1.ReasonWaiting, condMsg, gen, t)
	}
	if condMsg == "" {
		condMsg = st.Message
	}
	recordUtilization(st, v, gen, now)
	SetReady(st, condMsg, gen, t)
	SetStalled(st, st.Phase == cvlabv1alpha1.PhaseFailed, v.FinishReason, v.FinishMsg, gen, t)
	return st
}

// Sentences rendered from status fields.
const suspendedMessage = "suspended by its owner: set spec.suspend to false to queue it again"

func admittedMessage(st *cvlabv1alpha1.CvlabJobStatus) string {
	return fmt.Sprintf("admitted: pod %s created%s, waiting for it to start", st.PodName, NodeSuffix(st.Node))
}

func startFailedMessage(st *cvlabv1alpha1.CvlabJobStatus, err error) string {
	return fmt.Sprintf("waiting: the pod could not be created, will retry after %s: %v", st.BackoffUntil.UTC().Format(time.RFC3339), err)
}

// waitingReason is the API's name of the engine's reason: the same word (TestWaitingReasons).
func waitingReason(w queue.WaitReason) cvlabv1alpha1.WaitingReason {
	return cvlabv1alpha1.WaitingReason(w)
}

func waitingMessage(e *queue.Entry, foreign int32) string {
	ahead := "next in line"
	switch e.Position {
	case 0, 1:
	case 2:
		ahead = "1 job ahead"
	default:
		ahead = strconv.Itoa(e.Position-1) + " jobs ahead"
	}
	msg := fmt.Sprintf("waiting: %s; %s", e.Reason, ahead)
	if foreign > 0 {
		verb := "are"
		if foreign == 1 {
			verb = "is"
		}
		msg += fmt.Sprintf("; %s %s used by pods outside the queue (foreign)", queue.GPUCount(foreign), verb)
	}
	return msg
}

func runningMessage(v *observe.Job, e *queue.Entry) string {
	where := NodeSuffix(v.Live.Spec.NodeName)
	if e == nil {
		return fmt.Sprintf("running: pod %s%s", v.Live.Name, where)
	}
	return fmt.Sprintf("running: pod %s%s, on %s's GPU #%s", v.Live.Name, where, v.Job.Spec.User, e.UserGPUs())
}

// NodeSuffix is " on node NAME", or nothing without a node.
func NodeSuffix(node string) string {
	if node == "" {
		return ""
	}
	return " on node " + node
}

// EvictedStatus is the status an evicted job is written before its pod is deleted: back to Queued
// (v.Phase is set so), with the eviction's sentence, and a preemption counted when it is one
// (a preemption or an idle reclaim).
func EvictedStatus(v *observe.Job, e *queue.Entry, cluster observe.Cluster, backoffUntil time.Time, ev observe.Eviction, now time.Time) *cvlabv1alpha1.CvlabJobStatus {
	v.Phase = cvlabv1alpha1.PhaseQueued
	want := DesiredStatus(v, e, cluster, backoffUntil, now)
	if want == v.Cur {
		want = want.DeepCopy() // v.cur may be the cache's own
	}
	want.Message = ev.Message
	t := metav1.NewTime(now)
	want.LastEviction = lastEviction(ev, v, t)
	if ev.Reason == cvlabv1alpha1.EventPreempted || ev.Reason == cvlabv1alpha1.EventGPUReclaimed {
		want.Preemptions++
		SetPreempted(want, true, cvlabv1alpha1.ReasonPreempted, ev.Message, v.Job.Generation, t)
	}
	SetReady(want, ev.Message, v.Job.Generation, t)
	return want
}

// lastEviction records an eviction in status, as typed fields (the owner's notification is
// rendered from them, after a restart too).
func lastEviction(ev observe.Eviction, v *observe.Job, t metav1.Time) *cvlabv1alpha1.Eviction {
	rec := &cvlabv1alpha1.Eviction{Reason: cvlabv1alpha1.EvictionUnschedulable, Node: v.Live.Spec.NodeName, Admission: v.LastAdmission, Time: t}
	switch {
	case ev.Reason == cvlabv1alpha1.EventGPUReclaimed:
		rec.Reason = cvlabv1alpha1.EvictionIdleSuspended
	case ev.Reason == cvlabv1alpha1.EventPreempted && !ev.IdleSince.IsZero():
		rec.Reason = cvlabv1alpha1.EvictionIdleReclaimed
	case ev.Reason == cvlabv1alpha1.EventPreempted:
		rec.Reason = cvlabv1alpha1.EvictionPreempted
	}
	if ev.Preemptor != nil {
		rec.Preemptor, rec.PreemptorUser = ev.Preemptor.Key(), ev.Preemptor.Job.Spec.User
	}
	return rec
}
