package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

// evict writes each evicted job's status (back to Queued, and why), then deletes its pod with
// the pod's grace period, and tells the owner: an event, the Preempted condition, the webhook.
func (r *QueueReconciler) evict(ctx context.Context, obs *observe.Observation, evictions []observe.Eviction, entries map[string]*queue.Entry, now time.Time) []error {
	var errs []error
	for _, ev := range evictions {
		v := ev.View
		pod := v.Live
		want := lifecycle.EvictedStatus(v, entries[v.Key()], obs.Cluster, r.ledger.Backoff[v.Job.UID].Until, ev, now)
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
			tellIdleReclaim(r, v, ev)
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
				"evicting %s (pod %s)%s to start", v.Key(), pod.Name, lifecycle.NodeSuffix(ev.Node))
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
