package controllers

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/notify"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

// preemptionEvictions turns one preemption into evictions of its victims, and reserves the node
// for the preemptor until it starts.
func preemptionEvictions(obs *observe.Observation, pr queue.Preemption, entries map[string]*queue.Entry) []observe.Eviction {
	p, pe := obs.ByKey[pr.Preemptor], entries[pr.Preemptor]
	var out []observe.Eviction
	for _, k := range pr.Victims {
		v, ve := obs.ByKey[k], entries[k]
		if v == nil || v.Live == nil || ve == nil {
			continue
		}
		msg := fmt.Sprintf("evicted for %s, %s's %s outrank%s your %s; back in the queue",
			pr.Preemptor, p.Job.Spec.User, gpuOrdinals(pe.FirstGPU, pe.LastGPU), plural(pe.FirstGPU == pe.LastGPU), gpuOrdinals(ve.FirstGPU, ve.LastGPU))
		var idleSince time.Time
		if ve.Idle { // reclaimed: any waiting job may evict an idle job (queue.Job.Idle)
			idleSince = v.GPU.Since
			msg = fmt.Sprintf("evicted for %s: your GPUs were idle (below %d%%) since %s; back in the queue",
				pr.Preemptor, v.GPU.Settings.Threshold, idleSince.UTC().Format(time.RFC3339))
		}
		out = append(out, observe.Eviction{View: v, Reason: cvlabv1alpha1.EventPreempted, Message: msg, Preemptor: p, Node: pr.Node, IdleSince: idleSince})
	}
	return out
}

// evict writes each evicted job's status (back to Queued, and why), then deletes its pod with
// the pod's grace period, and tells the owner: an event, the Preempted condition, the webhook.
func (r *QueueReconciler) evict(ctx context.Context, obs *observe.Observation, evictions []observe.Eviction, entries map[string]*queue.Entry, now time.Time) []error {
	var errs []error
	for _, ev := range evictions {
		v := ev.View
		pod := v.Live
		v.Phase = cvlabv1alpha1.PhaseQueued
		want := desiredStatus(v, entries[v.Key()], obs.Cluster, r.ledger.Backoff[v.Job.UID].Until, now)
		if want == v.Cur {
			want = want.DeepCopy() // v.cur may be the cache's own
		}
		want.Message = ev.Message
		t := metav1.NewTime(now)
		if ev.Reason == cvlabv1alpha1.EventPreempted || ev.Reason == cvlabv1alpha1.EventGPUReclaimed {
			want.Preemptions++
			setPreempted(want, true, cvlabv1alpha1.ReasonPreempted, ev.Message, v.Job.Generation, t)
		}
		setReady(want, ev.Message, v.Job.Generation, t)
		r.writer.claim(v.Job.UID)
		err := r.writer.patch(ctx, v.Job, v.Invalid, r.writer.base(v.Job), want)
		r.writer.release(v.Job.UID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		v.Evicted = true
		r.writer.setWritten(v.Job.UID, want)
		err = r.deleteSeen(ctx, pod)
		if apierrors.IsConflict(err) {
			// The pod changed since the cache showed it (a lagging cache, or it started, ended or
			// was deleted): judge it as it is now. A pod that ended is left alone (the next
			// decision voids the eviction); one still running is stopped, and one gone counts as
			// stopped: the owner is told either way, as planned.
			var fresh corev1.Pod
			switch gerr := r.apiReader.Get(ctx, client.ObjectKeyFromObject(pod), &fresh); {
			case apierrors.IsNotFound(gerr) || gerr == nil && fresh.UID != pod.UID:
				err = nil // gone meanwhile: the eviction is done
			case gerr != nil || cluster.PodFinished(&fresh):
				continue
			default:
				pod = &fresh
				err = r.deleteSeen(ctx, pod)
			}
		}
		if apierrors.IsConflict(err) {
			continue // it changed again: the next decision finishes or voids the eviction
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		r.ledger.Evicting(v.Job.UID, pod.Name)
		if ev.Reason == cvlabv1alpha1.EventPreempted {
			metricPreemptions.WithLabelValues(r.opts.Preemption.String()).Inc()
			r.notePreemption(queueview.Preemption{Time: now, Preemptor: ev.Preemptor.Key(), PreemptorUser: ev.Preemptor.Job.Spec.User,
				Victim: v.Key(), VictimUser: v.Job.Spec.User, Node: ev.Node, Reason: ev.Message})
		}
		if r.recorder != nil {
			r.recorder.Eventf(v.Job, preemptorJob(&ev), corev1.EventTypeWarning, ev.Reason, "Evict", "%s", ev.Message)
		}
		if !ev.IdleSince.IsZero() {
			tellIdleReclaim(r, v, ev, now)
		}
		if ev.Reason == cvlabv1alpha1.EventGPUReclaimed { // --idle-action=Suspend
			r.ledger.HoldBack(v.Job.UID, now.Add(r.opts.Idle.After))
			continue
		}
		if ev.Reason != cvlabv1alpha1.EventPreempted {
			r.backOff(v.Job.UID, now)
			continue
		}
		if r.recorder != nil {
			r.recorder.Eventf(ev.Preemptor.Job, v.Job, corev1.EventTypeNormal, cvlabv1alpha1.EventPreempting, "Evict",
				"evicting %s (pod %s)%s to start", v.Key(), pod.Name, nodeSuffix(ev.Node))
		}
		if r.opts.Notifier != nil {
			pe, ve := entries[ev.Preemptor.Key()], entries[v.Key()]
			r.opts.Notifier.Notify(notify.Preemption{
				Text: fmt.Sprintf("%s: your job %s was %s", v.Job.Spec.User, v.Key(), ev.Message),
				Kind: "Preemption",
				Victim: notify.JobRef{Namespace: v.Job.Namespace, Name: v.Job.Name, User: v.Job.Spec.User,
					UserGPUs: ve.UserGPUs()},
				Preemptor: notify.JobRef{Namespace: ev.Preemptor.Job.Namespace, Name: ev.Preemptor.Job.Name,
					User: ev.Preemptor.Job.Spec.User, UserGPUs: pe.UserGPUs()},
				Node: ev.Node, Reason: ev.Message, Time: now.UTC(),
			})
		}
	}
	return errs
}

// deleteSeen deletes a pod as the decision saw it (its grace period applies). A pod that changed
// since, such as one that just ended, is not deleted (a Conflict error): the next decision judges
// it again, so that a job whose pod succeeded is never requeued to run again.
func (r *QueueReconciler) deleteSeen(ctx context.Context, p *corev1.Pod) error {
	err := r.client.Delete(ctx, p, client.Preconditions{UID: &p.UID, ResourceVersion: &p.ResourceVersion})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// preemptorJob is the event's related object: none for an unschedulable requeue. It returns an
// untyped nil then, since a typed nil pointer in the interface would make the recorder panic.
func preemptorJob(ev *observe.Eviction) runtime.Object {
	if ev.Preemptor == nil {
		return nil
	}
	return ev.Preemptor.Job
}

// createPod creates the pod of the job's next admission, pinned to node. A pod of that name that
// already exists and belongs to the job counts as created: the cache had not shown it yet.
// It runs concurrently with the decision's other creations: it touches only v; the caller
// records the expectation.
func (r *QueueReconciler) createPod(ctx context.Context, v *observe.Job, hostname, node string) error {
	n := v.LastAdmission + 1
	// A job without clusterUser runs as its owner's lab directory entry (directory.go).
	identity, derr := r.directory.identity(v.Job)
	if derr != nil {
		return derr
	}
	pod := BuildPod(v.Job, n, node, hostname, WithDirectoryUser(identity))
	err := r.client.Create(ctx, pod, FieldOwner)
	if apierrors.IsAlreadyExists(err) {
		var existing corev1.Pod
		if gerr := r.apiReader.Get(ctx, client.ObjectKeyFromObject(pod), &existing); gerr != nil {
			return fmt.Errorf("pod %s exists but cannot be read: %w", pod.Name, gerr)
		}
		if ref := metav1.GetControllerOf(&existing); ref == nil || ref.UID != v.Job.UID {
			return fmt.Errorf("a pod named %s already exists and does not belong to this job", pod.Name)
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("creating pod %s: %w", pod.Name, err)
	}
	metricAdmissions.Inc()
	v.LastAdmission = n
	v.Node = node
	return nil
}

// desiredStatus is the status the job should have after this decision.
func desiredStatus(v *observe.Job, e *queue.Entry, cluster observe.Cluster, backoffUntil, now time.Time) *cvlabv1alpha1.CvlabJobStatus {
	if IsFinished(v.Cur) && v.Cur.ObservedGeneration != v.Job.Generation && v.Cur.ObservedGeneration != 0 {
		// Final, but its spec was edited since (priority, suspend in git): say the edit was seen,
		// so that GitOps health (kstatus) does not wait for it forever. Nothing else changes.
		st := v.Cur.DeepCopy()
		st.ObservedGeneration = v.Job.Generation
		return st
	}
	if IsFinished(v.Cur) || v.Frozen {
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
		setDisrupted(st, true, cvlabv1alpha1.ReasonNodeLost, v.Disruption+"; back in the queue, not counted against the job", gen, t)
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
			setPreempted(st, false, cvlabv1alpha1.ReasonPodEnded, "its pod ended before it could be evicted", gen, t)
		}
		st.Rank, st.UserGPUs = nil, ""
		st.CompletionTime = &t
		st.Message = v.FinishMsg
		setFinished(st, v.FinishReason, v.FinishMsg, gen, t)
		setRunning(st, false, v.FinishReason, v.FinishMsg, gen, t)
		setQueued(st, false, cvlabv1alpha1.ReasonFinished, v.FinishMsg, gen, t)

	case cvlabv1alpha1.PhaseSuspended:
		st.Phase = v.Phase
		st.Rank, st.UserGPUs = nil, ""
		st.StartTime = nil
		st.WaitingReason = cvlabv1alpha1.WaitingSuspended
		st.Message = suspendedMessage
		setQueued(st, false, cvlabv1alpha1.ReasonSuspended, st.Message, gen, t)
		setAdmitted(st, false, cvlabv1alpha1.ReasonSuspended, st.Message, gen, t)
		setRunning(st, false, cvlabv1alpha1.ReasonSuspended, st.Message, gen, t)

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
		setQueued(st, false, cvlabv1alpha1.ReasonAdmitted, st.Message, gen, t)
		setAdmitted(st, true, cvlabv1alpha1.ReasonPodCreated, st.Message, gen, t)
		setRunning(st, false, cvlabv1alpha1.ReasonPodPending, st.Message, gen, t)
		if meta.IsStatusConditionTrue(st.Conditions, cvlabv1alpha1.ConditionPreempted) {
			setPreempted(st, false, cvlabv1alpha1.ReasonReadmitted, "admitted again after being preempted", gen, t)
		}
		if c := meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionDisrupted); c != nil && c.Status == metav1.ConditionTrue {
			setDisrupted(st, false, cvlabv1alpha1.ReasonReadmitted, "admitted again; before: "+c.Message, gen, t)
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
		// or end (see waitingCondition).
		condMsg = runningMessage(v, nil)
		setQueued(st, false, cvlabv1alpha1.ReasonAdmitted, condMsg, gen, t)
		setAdmitted(st, true, cvlabv1alpha1.ReasonPodCreated, fmt.Sprintf("pod %s created", v.Live.Name), gen, t)
		setRunning(st, true, cvlabv1alpha1.ReasonPodRunning, condMsg, gen, t)

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
		condMsg = waitingCondition
		if v.StartErr != nil {
			condMsg = st.Message
		}
		setQueued(st, true, cvlabv1alpha1.ReasonWaiting, condMsg, gen, t)
		setAdmitted(st, false, cvlabv1alpha1.ReasonWaiting, condMsg, gen, t)
		setRunning(st, false, cvlabv1alpha1.ReasonWaiting, condMsg, gen, t)
	}
	if condMsg == "" {
		condMsg = st.Message
	}
	recordUtilization(st, v, gen, now)
	setReady(st, condMsg, gen, t)
	setStalled(st, st.Phase == cvlabv1alpha1.PhaseFailed, v.FinishReason, v.FinishMsg, gen, t)
	return st
}

// Sentences rendered from status fields.
const suspendedMessage = "suspended by its owner: set spec.suspend to false to queue it again"

func admittedMessage(st *cvlabv1alpha1.CvlabJobStatus) string {
	return fmt.Sprintf("admitted: pod %s created%s, waiting for it to start", st.PodName, nodeSuffix(st.Node))
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
	where := nodeSuffix(v.Live.Spec.NodeName)
	if e == nil {
		return fmt.Sprintf("running: pod %s%s", v.Live.Name, where)
	}
	return fmt.Sprintf("running: pod %s%s, on %s's GPU #%s", v.Live.Name, where, v.Job.Spec.User, e.UserGPUs())
}

func nodeSuffix(node string) string {
	if node == "" {
		return ""
	}
	return " on node " + node
}

// writeOrder puts the front of the queue first: phase changes of admitted and running jobs, then
// waiting jobs by position, then the rest (running jobs' new ranks among them).
func writeOrder(v *observe.Job, want *cvlabv1alpha1.CvlabJobStatus, e *queue.Entry) int {
	switch {
	case (v.Phase == cvlabv1alpha1.PhaseAdmitted || v.Phase == cvlabv1alpha1.PhaseRunning) && v.Cur.Phase != want.Phase:
		return 0
	case e != nil && e.Position > 0:
		return e.Position
	default:
		return 1 << 30
	}
}

// patchStatus merge-patches the fields of a job's status that differ from base, the status the
// API server has. job is only read.
func (w *statusWriter) patch(ctx context.Context, job *cvlabv1alpha1.CvlabJob, invalid string, base, want *cvlabv1alpha1.CvlabJobStatus) error {
	from := &cvlabv1alpha1.CvlabJob{TypeMeta: job.TypeMeta, ObjectMeta: metav1.ObjectMeta{Namespace: job.Namespace, Name: job.Name}, Status: *base}
	to := &cvlabv1alpha1.CvlabJob{TypeMeta: job.TypeMeta, ObjectMeta: metav1.ObjectMeta{Namespace: job.Namespace, Name: job.Name}, Status: *want}
	if l := log.FromContext(ctx).V(3); l.Enabled() {
		data, _ := client.MergeFrom(from).Data(to)
		l.Info("status patch", "job", job.Namespace+"/"+job.Name, "patch", string(data))
	}
	if err := w.client.Status().Patch(ctx, to, client.MergeFrom(from), FieldOwner); client.IgnoreNotFound(err) != nil {
		if invalid != "" && apierrors.IsInvalid(err) {
			// The API server refuses every write to a job whose stored spec its CRD's rules cannot
			// evaluate (a field of another type), status included: the Warning event of the phase
			// change says why instead, and the write is not retried (see jobs.go).
			log.FromContext(ctx).Info("the status of an invalid job cannot be written", "job", job.Namespace+"/"+job.Name, "invalid", invalid, "error", err.Error())
			return nil
		}
		return fmt.Errorf("writing status of %s/%s: %w", job.Namespace, job.Name, err)
	}
	return nil
}

func (w *statusWriter) recordPhaseEvent(job *cvlabv1alpha1.CvlabJob, old, cur *cvlabv1alpha1.CvlabJobStatus) {
	if w.recorder == nil || old.Phase == cur.Phase {
		return
	}
	typ, reason := corev1.EventTypeNormal, ""
	switch cur.Phase {
	case cvlabv1alpha1.PhaseQueued:
		reason = cvlabv1alpha1.EventQueued
	case cvlabv1alpha1.PhaseAdmitted:
		reason = cvlabv1alpha1.EventAdmitted
	case cvlabv1alpha1.PhaseRunning:
		reason = cvlabv1alpha1.EventStarted
	case cvlabv1alpha1.PhaseSuspended:
		reason = cvlabv1alpha1.EventSuspended
	case cvlabv1alpha1.PhaseSucceeded:
		reason = cvlabv1alpha1.EventFinished
	case cvlabv1alpha1.PhaseFailed:
		typ, reason = corev1.EventTypeWarning, cvlabv1alpha1.EventFinished
	default:
		return
	}
	w.recorder.Eventf(job, nil, typ, reason, reason, "%s", cur.Message)
}

// gpuOrdinals names a user's GPU ordinals: "1st GPU", "2nd-3rd GPUs".
func gpuOrdinals(first, last int32) string {
	if first == last {
		return queue.Ordinal(last) + " GPU"
	}
	return queue.Ordinal(first) + "-" + queue.Ordinal(last) + " GPUs"
}

func plural(single bool) string {
	if single {
		return "s"
	}
	return ""
}

func ptrInt32(n int) *int32 {
	v := int32(n)
	return &v
}
