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
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

// preemptionEvictions turns one preemption into evictions of its victims, and reserves the node
// for the preemptor until it starts.
func (r *QueueReconciler) preemptionEvictions(obs *observation, pr queue.Preemption, entries map[string]*queue.Entry, now time.Time) []eviction {
	p, pe := obs.byKey[pr.Preemptor], entries[pr.Preemptor]
	var out []eviction
	for _, k := range pr.Victims {
		v, ve := obs.byKey[k], entries[k]
		if v == nil || v.live == nil || ve == nil {
			continue
		}
		msg := fmt.Sprintf("evicted for %s, %s's %s outrank%s your %s; back in the queue",
			pr.Preemptor, p.job.Spec.User, gpuOrdinals(pe.FirstGPU, pe.LastGPU), plural(pe.FirstGPU == pe.LastGPU), gpuOrdinals(ve.FirstGPU, ve.LastGPU))
		out = append(out, eviction{view: v, reason: ReasonPreempted, message: msg, preemptor: p, node: pr.Node})
	}
	return out
}

// evict writes each evicted job's status (back to Queued, and why), then deletes its pod with
// the pod's grace period, and tells the owner: an event, the Preempted condition, the webhook.
func (r *QueueReconciler) evict(ctx context.Context, obs *observation, evictions []eviction, entries map[string]*queue.Entry, now time.Time) []error {
	var errs []error
	for _, ev := range evictions {
		v := ev.view
		pod := v.live
		v.phase = cvlabv1alpha1.PhaseQueued
		want := r.desiredStatus(v, entries[v.key()], obs.cluster, now)
		if want == v.cur {
			want = want.DeepCopy() // v.cur may be the cache's own
		}
		want.Message = ev.message
		t := metav1.NewTime(now)
		if ev.reason == ReasonPreempted {
			want.Preemptions++
			setPreempted(want, true, ReasonPreempted, ev.message, v.job.Generation, t)
		}
		setReady(want, ev.message, v.job.Generation, t)
		r.writer.claim(v.job.UID)
		err := r.patchStatus(ctx, v.job, v.invalid, r.baseStatus(v), want)
		r.writer.release(v.job.UID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		v.evicted = true
		r.setWritten(v.job.UID, want)
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
		r.evicted[v.job.UID] = pod.Name
		if ev.reason == ReasonPreempted {
			policy := "FirstGPU"
			if r.opts.Preemption == queue.PreemptRank {
				policy = "Rank"
			}
			metricPreemptions.WithLabelValues(policy).Inc()
			r.notePreemption(queueview.Preemption{Time: now, Preemptor: ev.preemptor.key(), PreemptorUser: ev.preemptor.job.Spec.User,
				Victim: v.key(), VictimUser: v.job.Spec.User, Node: ev.node, Reason: ev.message})
		}
		if r.recorder != nil {
			r.recorder.Eventf(v.job, ev.preemptorJob(), corev1.EventTypeWarning, ev.reason, "Evict", "%s", ev.message)
		}
		if ev.reason != ReasonPreempted {
			r.backOff(v.job.UID, now)
			continue
		}
		if r.recorder != nil {
			r.recorder.Eventf(ev.preemptor.job, v.job, corev1.EventTypeNormal, "Preempting", "Evict",
				"evicting %s (pod %s)%s to start", v.key(), pod.Name, nodeSuffix(ev.node))
		}
		if r.opts.Notifier != nil {
			pe, ve := entries[ev.preemptor.key()], entries[v.key()]
			r.opts.Notifier.Notify(notify.Preemption{
				Text: fmt.Sprintf("%s: your job %s was %s", v.job.Spec.User, v.key(), ev.message),
				Kind: "Preemption",
				Victim: notify.JobRef{Namespace: v.job.Namespace, Name: v.job.Name, User: v.job.Spec.User,
					UserGPUs: ve.UserGPUs()},
				Preemptor: notify.JobRef{Namespace: ev.preemptor.job.Namespace, Name: ev.preemptor.job.Name,
					User: ev.preemptor.job.Spec.User, UserGPUs: pe.UserGPUs()},
				Node: ev.node, Reason: ev.message, Time: now.UTC(),
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
func (ev *eviction) preemptorJob() runtime.Object {
	if ev.preemptor == nil {
		return nil
	}
	return ev.preemptor.job
}

// createPod creates the pod of the job's next admission, pinned to node. A pod of that name that
// already exists and belongs to the job counts as created: the cache had not shown it yet.
// It runs concurrently with the decision's other creations: it touches only v; the caller
// records the expectation.
func (r *QueueReconciler) createPod(ctx context.Context, v *jobView, hostname, node string) error {
	n := v.lastAdmission + 1
	pod := BuildPod(v.job, n, node, hostname)
	err := r.client.Create(ctx, pod, FieldOwner)
	if apierrors.IsAlreadyExists(err) {
		var existing corev1.Pod
		if gerr := r.apiReader.Get(ctx, client.ObjectKeyFromObject(pod), &existing); gerr != nil {
			return fmt.Errorf("pod %s exists but cannot be read: %w", pod.Name, gerr)
		}
		if ref := metav1.GetControllerOf(&existing); ref == nil || ref.UID != v.job.UID {
			return fmt.Errorf("a pod named %s already exists and does not belong to this job", pod.Name)
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("creating pod %s: %w", pod.Name, err)
	}
	metricAdmissions.Inc()
	v.lastAdmission = n
	v.node = node
	return nil
}

// desiredStatus is the status the job should have after this decision.
func (r *QueueReconciler) desiredStatus(v *jobView, e *queue.Entry, cluster clusterView, now time.Time) *cvlabv1alpha1.CvlabJobStatus {
	if IsFinished(v.cur) || v.frozen {
		return v.cur // final: never rewritten; or left as it is until its pod is gone
	}
	st := v.cur.DeepCopy()
	gen := v.job.Generation
	// condMsg is the message of the conditions that describe the phase, when it is not st.Message.
	var condMsg string
	t := metav1.NewTime(now)
	st.ObservedGeneration = gen
	st.QueuePosition, st.Rank, st.UserGPUs = nil, nil, ""
	if v.disruption != "" && (st.Phase == cvlabv1alpha1.PhaseAdmitted || st.Phase == cvlabv1alpha1.PhaseRunning) {
		// Its node lost its pod: counted once, whether it waits now or is admitted again at once.
		countDisruption(st)
		setDisrupted(st, true, ReasonNodeLost, v.disruption+"; back in the queue, not counted against the job", gen, t)
	}
	if e != nil {
		st.Rank = ptrInt32(e.Rank)
		st.UserGPUs = e.UserGPUs()
	}

	switch v.phase {
	case cvlabv1alpha1.PhaseSucceeded, cvlabv1alpha1.PhaseFailed:
		st.Phase = v.phase
		if v.live != nil { // it may have ended before its admission was recorded (manager restarted)
			st.PodName, st.Admissions = v.live.Name, v.lastAdmission
			if st.StartTime == nil {
				st.StartTime = v.live.Status.StartTime
			}
		}
		if v.evictionVoid && meta.IsStatusConditionTrue(st.Conditions, cvlabv1alpha1.ConditionPreempted) {
			st.Preemptions = max(st.Preemptions-1, 0)
			setPreempted(st, false, ReasonPodEnded, "its pod ended before it could be evicted", gen, t)
		}
		st.Rank, st.UserGPUs = nil, ""
		st.CompletionTime = &t
		st.Message = v.finishMsg
		setFinished(st, v.finishReason, v.finishMsg, gen, t)
		setRunning(st, false, v.finishReason, v.finishMsg, gen, t)
		setQueued(st, false, ReasonFinished, v.finishMsg, gen, t)

	case cvlabv1alpha1.PhaseSuspended:
		st.Phase = v.phase
		st.Rank, st.UserGPUs = nil, ""
		st.StartTime = nil
		st.Message = "suspended by its owner: set spec.suspend to false to queue it again"
		setQueued(st, false, ReasonSuspended, st.Message, gen, t)
		setAdmitted(st, false, ReasonSuspended, st.Message, gen, t)
		setRunning(st, false, ReasonSuspended, st.Message, gen, t)

	case cvlabv1alpha1.PhaseAdmitted:
		podName := PodName(v.job, v.lastAdmission)
		if st.Admissions != v.lastAdmission || st.Phase != cvlabv1alpha1.PhaseAdmitted && st.Phase != cvlabv1alpha1.PhaseRunning {
			st.Admissions = v.lastAdmission
			st.AdmittedAt = &t
			st.StartTime = nil
		}
		st.Phase = v.phase
		st.PodName = podName
		st.Message = fmt.Sprintf("admitted: pod %s created%s, waiting for it to start", podName, nodeSuffix(v.node))
		setQueued(st, false, ReasonAdmitted, st.Message, gen, t)
		setAdmitted(st, true, ReasonPodCreated, st.Message, gen, t)
		setRunning(st, false, ReasonPodPending, st.Message, gen, t)
		if meta.IsStatusConditionTrue(st.Conditions, cvlabv1alpha1.ConditionPreempted) {
			setPreempted(st, false, ReasonReadmitted, "admitted again after being preempted", gen, t)
		}
		if c := meta.FindStatusCondition(st.Conditions, ConditionDisrupted); c != nil && c.Status == metav1.ConditionTrue {
			setDisrupted(st, false, ReasonReadmitted, "admitted again; before: "+c.Message, gen, t)
		}

	case cvlabv1alpha1.PhaseRunning:
		st.Phase = v.phase
		st.PodName = v.live.Name
		st.Admissions = v.lastAdmission
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
		setQueued(st, false, ReasonAdmitted, condMsg, gen, t)
		setAdmitted(st, true, ReasonPodCreated, fmt.Sprintf("pod %s created", v.live.Name), gen, t)
		setRunning(st, true, ReasonPodRunning, condMsg, gen, t)

	case cvlabv1alpha1.PhaseQueued:
		st.Phase = v.phase
		st.StartTime = nil
		switch {
		case v.startErr != nil:
			st.Message = fmt.Sprintf("waiting: the pod could not be created, will retry after %s: %v",
				r.backoff[v.job.UID].until.UTC().Format(time.RFC3339), v.startErr)
		case e != nil && e.Position > 0:
			st.QueuePosition = ptrInt32(e.Position)
			st.Message = waitingMessage(e, cluster.foreign)
		case e != nil && e.Reason != "":
			st.Message = "waiting: " + e.Reason
		case v.job.Spec.GPUs > 0:
			st.Message = "waiting for the next decision"
		default:
			st.Message = "waiting to be admitted"
		}
		condMsg = waitingCondition
		if v.startErr != nil {
			condMsg = st.Message
		}
		setQueued(st, true, ReasonWaiting, condMsg, gen, t)
		setAdmitted(st, false, ReasonWaiting, condMsg, gen, t)
		setRunning(st, false, ReasonWaiting, condMsg, gen, t)
	}
	if condMsg == "" {
		condMsg = st.Message
	}
	setReady(st, condMsg, gen, t)
	return st
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

func runningMessage(v *jobView, e *queue.Entry) string {
	where := nodeSuffix(v.live.Spec.NodeName)
	if e == nil {
		return fmt.Sprintf("running: pod %s%s", v.live.Name, where)
	}
	return fmt.Sprintf("running: pod %s%s, on %s's GPU #%s", v.live.Name, where, v.job.Spec.User, e.UserGPUs())
}

func nodeSuffix(node string) string {
	if node == "" {
		return ""
	}
	return " on node " + node
}

// writeOrder puts the front of the queue first: phase changes of admitted and running jobs, then
// waiting jobs by position, then the rest (running jobs' new ranks among them).
func writeOrder(v *jobView, want *cvlabv1alpha1.CvlabJobStatus, e *queue.Entry) int {
	switch {
	case (v.phase == cvlabv1alpha1.PhaseAdmitted || v.phase == cvlabv1alpha1.PhaseRunning) && v.cur.Phase != want.Phase:
		return 0
	case e != nil && e.Position > 0:
		return e.Position
	default:
		return 1 << 30
	}
}

// baseStatus is the job's status as the API server has it: the last one written, or the cache's.
func (r *QueueReconciler) baseStatus(v *jobView) *cvlabv1alpha1.CvlabJobStatus {
	if w, ok := r.lastWritten(v.job.UID); ok {
		return w
	}
	return &v.job.Status
}

// patchStatus merge-patches the fields of a job's status that differ from base, the status the
// API server has. job is only read.
func (r *QueueReconciler) patchStatus(ctx context.Context, job *cvlabv1alpha1.CvlabJob, invalid string, base, want *cvlabv1alpha1.CvlabJobStatus) error {
	from := &cvlabv1alpha1.CvlabJob{TypeMeta: job.TypeMeta, ObjectMeta: metav1.ObjectMeta{Namespace: job.Namespace, Name: job.Name}, Status: *base}
	to := &cvlabv1alpha1.CvlabJob{TypeMeta: job.TypeMeta, ObjectMeta: metav1.ObjectMeta{Namespace: job.Namespace, Name: job.Name}, Status: *want}
	if l := log.FromContext(ctx).V(3); l.Enabled() {
		data, _ := client.MergeFrom(from).Data(to)
		l.Info("status patch", "job", job.Namespace+"/"+job.Name, "patch", string(data))
	}
	if err := r.client.Status().Patch(ctx, to, client.MergeFrom(from), FieldOwner); client.IgnoreNotFound(err) != nil {
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

func (r *QueueReconciler) recordPhaseEvent(job *cvlabv1alpha1.CvlabJob, old, cur *cvlabv1alpha1.CvlabJobStatus) {
	if r.recorder == nil || old.Phase == cur.Phase {
		return
	}
	typ, reason := corev1.EventTypeNormal, ""
	switch cur.Phase {
	case cvlabv1alpha1.PhaseQueued:
		reason = "Queued"
	case cvlabv1alpha1.PhaseAdmitted:
		reason = "Admitted"
	case cvlabv1alpha1.PhaseRunning:
		reason = "Started"
	case cvlabv1alpha1.PhaseSuspended:
		reason = "Suspended"
	case cvlabv1alpha1.PhaseSucceeded:
		reason = "Finished"
	case cvlabv1alpha1.PhaseFailed:
		typ, reason = corev1.EventTypeWarning, "Finished"
	default:
		return
	}
	r.recorder.Eventf(job, nil, typ, reason, reason, "%s", cur.Message)
}

// podFailure explains a failed pod in a sentence.
func podFailure(p *corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			msg := fmt.Sprintf("pod %s failed: container %s exited with code %d", p.Name, cs.Name, t.ExitCode)
			if t.Reason != "" {
				msg += " (" + t.Reason + ")"
			}
			return msg
		}
	}
	if p.Status.Message != "" {
		return fmt.Sprintf("pod %s failed: %s", p.Name, p.Status.Message)
	}
	return fmt.Sprintf("pod %s failed", p.Name)
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
