// Package controllers holds the operator's decision loop: it turns CvlabJobs into pods in the
// lab's fair-share order.
package controllers

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// FieldOwner is the field manager of everything the operator writes.
const FieldOwner = client.FieldOwner("cvlab-queue")

// expectationTimeout is how long a created pod that the cache does not show yet still counts as
// existing. Past it, the job is judged on what the cache shows.
const expectationTimeout = time.Minute

// queueRequest is the one request of the decision loop: every watched change enqueues it, and the
// work queue folds a burst of changes into one decision.
var queueRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "cvlab-queue"}}

// Options configure the decision loop.
type Options struct {
	// GPUCapacity is the number of GPUs the queue hands out.
	GPUCapacity int32
	// MaxHeadWait is how long the first waiting job may be passed by smaller jobs behind it.
	MaxHeadWait time.Duration
	// StatusWriters is how many status writes run at once.
	StatusWriters int
	// Clock is the time source; a fake one in tests.
	Clock clock.Clock
}

// QueueReconciler is the single decision loop of the queue: it observes all CvlabJobs and their
// pods, decides with the pure queue package, then acts (creates and deletes pods) and records
// (writes status that changed, emits events).
type QueueReconciler struct {
	client    client.Client
	apiReader client.Reader
	recorder  events.EventRecorder
	opts      Options

	// State of the loop, touched only by its single worker.
	// written is the last status written per job: the operator is the only writer of status, so
	// it is newer than what a lagging cache shows.
	written map[types.UID]*cvlabv1alpha1.CvlabJobStatus
	// expected are pods created but not yet seen in the cache.
	expected  map[types.UID]expectation
	head      string
	headSince time.Time
}

type expectation struct {
	pod   string
	since time.Time
}

// NewQueueReconciler makes the decision loop.
func NewQueueReconciler(c client.Client, apiReader client.Reader, recorder events.EventRecorder, opts Options) *QueueReconciler {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.StatusWriters <= 0 {
		opts.StatusWriters = 8
	}
	return &QueueReconciler{
		client: c, apiReader: apiReader, recorder: recorder, opts: opts,
		written:  map[types.UID]*cvlabv1alpha1.CvlabJobStatus{},
		expected: map[types.UID]expectation{},
	}
}

// SetupWithManager registers the loop, fed by watches on CvlabJobs and the pods they own.
func (r *QueueReconciler) SetupWithManager(mgr ctrl.Manager) error {
	enqueue := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{queueRequest}
	})
	jobPods := predicate.NewPredicateFuncs(func(o client.Object) bool {
		_, ok := o.GetLabels()[LabelJob]
		return ok
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("cvlabqueue").
		Watches(&cvlabv1alpha1.CvlabJob{}, enqueue).
		Watches(&corev1.Pod{}, enqueue, builder.WithPredicates(jobPods)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
}

// +kubebuilder:rbac:groups=cvlab.epfl.ch,resources=cvlabjobs,verbs=get;list;watch
// +kubebuilder:rbac:groups=cvlab.epfl.ch,resources=cvlabjobs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// jobView is one job as observed at the start of a decision.
type jobView struct {
	job *cvlabv1alpha1.CvlabJob
	// cur is the job's current status (our last write, or the cache's).
	cur *cvlabv1alpha1.CvlabJobStatus
	// live is the job's current pod (not being deleted), if any.
	live *corev1.Pod
	// phase is where the job stands now, before this decision's admissions.
	phase cvlabv1alpha1.JobPhase
	// finishReason and finishMsg explain a job that finished in this observation.
	finishReason, finishMsg string
	// lastAdmission is the highest admission number seen in status or on pods.
	lastAdmission int32
}

func (v *jobView) key() string { return v.job.Namespace + "/" + v.job.Name }

// Reconcile runs one decision for the whole queue.
func (r *QueueReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	now := r.opts.Clock.Now()

	var jobs cvlabv1alpha1.CvlabJobList
	if err := r.client.List(ctx, &jobs); err != nil {
		return reconcile.Result{}, err
	}
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, client.HasLabels{LabelJob}); err != nil {
		return reconcile.Result{}, err
	}

	// Observe.
	byUID := make(map[types.UID]*cvlabv1alpha1.CvlabJob, len(jobs.Items))
	for i := range jobs.Items {
		byUID[jobs.Items[i].UID] = &jobs.Items[i]
	}
	podsOf := map[types.UID][]*corev1.Pod{}
	var toDelete []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		ref := metav1.GetControllerOf(p)
		if ref == nil || ref.Kind != "CvlabJob" || ref.APIVersion != cvlabv1alpha1.GroupVersion.String() {
			continue
		}
		if _, ok := byUID[ref.UID]; ok {
			podsOf[ref.UID] = append(podsOf[ref.UID], p)
		} else if p.DeletionTimestamp == nil {
			toDelete = append(toDelete, p) // its job is gone
		}
	}
	for uid := range r.written {
		if _, ok := byUID[uid]; !ok {
			delete(r.written, uid)
		}
	}
	for uid := range r.expected {
		if _, ok := byUID[uid]; !ok {
			delete(r.expected, uid)
		}
	}

	views := make([]*jobView, 0, len(jobs.Items))
	var terminating int32 // GPUs of pods being deleted: held until they are gone
	snap := queue.Snapshot{
		Now: now, MaxHeadWait: r.opts.MaxHeadWait, Head: r.head, HeadSince: r.headSince,
	}
	for i := range jobs.Items {
		v, held, del := r.observe(&jobs.Items[i], podsOf[jobs.Items[i].UID], now)
		views = append(views, v)
		terminating += held
		toDelete = append(toDelete, del...)
		switch v.phase {
		case cvlabv1alpha1.PhaseQueued:
			snap.Jobs = append(snap.Jobs, queueJob(v, queue.Waiting))
		case cvlabv1alpha1.PhaseAdmitted, cvlabv1alpha1.PhaseRunning:
			snap.Jobs = append(snap.Jobs, queueJob(v, queue.Holding))
		}
	}
	snap.Capacity = max(r.opts.GPUCapacity-terminating, 0)

	// Decide.
	d := queue.Decide(snap)
	r.head, r.headSince = d.Head, d.HeadSince

	// Act: pods first, so that a status never claims a pod that was not created.
	var errs []error
	for _, p := range toDelete {
		if err := r.client.Delete(ctx, p); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting pod %s/%s: %w", p.Namespace, p.Name, err))
		}
	}
	entries := make(map[string]*queue.Entry, len(d.Order))
	for i := range d.Order {
		entries[d.Order[i].Key] = &d.Order[i]
	}
	admit := map[string]bool{}
	for _, k := range d.AdmitCPU {
		admit[k] = true
	}
	for _, e := range d.Order {
		if e.Admit {
			admit[e.Key] = true
		}
	}
	createErr := map[string]error{}
	for _, v := range views {
		if !admit[v.key()] {
			continue
		}
		if err := r.createPod(ctx, v, now); err != nil {
			createErr[v.key()] = err
			errs = append(errs, err)
			continue
		}
		v.phase = cvlabv1alpha1.PhaseAdmitted
	}

	// Record.
	var writes []statusWrite
	for _, v := range views {
		want := r.desiredStatus(v, entries[v.key()], createErr[v.key()], now)
		if equality.Semantic.DeepEqual(v.cur, want) {
			continue
		}
		writes = append(writes, statusWrite{view: v, want: want, order: writeOrder(v, entries[v.key()])})
	}
	slices.SortFunc(writes, func(a, b statusWrite) int {
		return cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.view.key(), b.view.key()))
	})
	errs = append(errs, r.writeStatuses(ctx, writes)...)

	if len(errs) > 0 {
		logger.Error(errs[0], "decision applied with errors", "errors", len(errs))
		return reconcile.Result{}, errs[0]
	}
	var res reconcile.Result
	if !d.Wakeup.IsZero() {
		res.RequeueAfter = max(d.Wakeup.Sub(now), time.Millisecond)
	}
	if len(r.expected) > 0 && (res.RequeueAfter == 0 || res.RequeueAfter > expectationTimeout) {
		res.RequeueAfter = expectationTimeout
	}
	return res, nil
}

// observe derives where a job stands from its status and pods. It returns the GPUs held by its
// pods being deleted and the pods to delete.
func (r *QueueReconciler) observe(job *cvlabv1alpha1.CvlabJob, pods []*corev1.Pod, now time.Time) (*jobView, int32, []*corev1.Pod) {
	v := &jobView{job: job, cur: &job.Status}
	if w, ok := r.written[job.UID]; ok {
		v.cur = w
	}
	v.lastAdmission = v.cur.Admissions

	var held int32
	var del []*corev1.Pod
	for _, p := range pods {
		v.lastAdmission = max(v.lastAdmission, podAdmission(p))
		if p.DeletionTimestamp != nil {
			if !podFinished(p) {
				held += podGPUs(p)
			}
			continue
		}
		if v.live == nil || podAdmission(p) > podAdmission(v.live) {
			if v.live != nil && !podFinished(v.live) {
				del = append(del, v.live)
			}
			v.live = p
		} else if !podFinished(p) {
			del = append(del, p)
		}
	}
	if e, ok := r.expected[job.UID]; ok && (v.live != nil && v.live.Name == e.pod || now.Sub(e.since) > expectationTimeout) {
		delete(r.expected, job.UID)
	}
	_, expected := r.expected[job.UID]

	switch {
	case IsFinished(v.cur):
		v.phase = v.cur.Phase
	case v.live != nil && v.live.Status.Phase == corev1.PodSucceeded:
		v.phase = cvlabv1alpha1.PhaseSucceeded
		v.finishReason, v.finishMsg = ReasonSucceeded, fmt.Sprintf("pod %s succeeded", v.live.Name)
	case v.live != nil && v.live.Status.Phase == corev1.PodFailed:
		v.phase = cvlabv1alpha1.PhaseFailed
		v.finishReason, v.finishMsg = ReasonFailed, podFailure(v.live)
		if v.live.Status.Reason == "DeadlineExceeded" {
			v.finishReason = ReasonDeadlineExceeded
			v.finishMsg = fmt.Sprintf("pod %s was stopped after the job's timeout of %s", v.live.Name, job.Spec.Timeout.Duration)
		}
	case job.Spec.Suspend:
		v.phase = cvlabv1alpha1.PhaseSuspended
		if v.live != nil {
			del = append(del, v.live)
			held += podGPUs(v.live)
			v.live = nil
		}
	case v.live != nil && v.live.Status.Phase == corev1.PodRunning:
		v.phase = cvlabv1alpha1.PhaseRunning
	case v.live != nil || expected:
		v.phase = cvlabv1alpha1.PhaseAdmitted
	case v.cur.Phase == cvlabv1alpha1.PhaseAdmitted || v.cur.Phase == cvlabv1alpha1.PhaseRunning:
		v.phase = cvlabv1alpha1.PhaseFailed
		v.finishReason = ReasonPodDeleted
		v.finishMsg = fmt.Sprintf("pod %s was deleted before the job finished", v.cur.PodName)
	default:
		v.phase = cvlabv1alpha1.PhaseQueued
	}
	return v, held, del
}

func queueJob(v *jobView, s queue.State) queue.Job {
	return queue.Job{
		Key: v.key(), User: v.job.Spec.User, Priority: v.job.Spec.Priority,
		Created: v.job.CreationTimestamp.Time, GPUs: v.job.Spec.GPUs, State: s,
	}
}

// createPod creates the pod of the job's next admission. A pod of that name that already exists
// and belongs to the job counts as created: the cache had not shown it yet.
func (r *QueueReconciler) createPod(ctx context.Context, v *jobView, now time.Time) error {
	n := v.lastAdmission + 1
	pod := BuildPod(v.job, n)
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
	r.expected[v.job.UID] = expectation{pod: pod.Name, since: now}
	v.lastAdmission = n
	return nil
}

// desiredStatus is the status the job should have after this decision.
func (r *QueueReconciler) desiredStatus(v *jobView, e *queue.Entry, createErr error, now time.Time) *cvlabv1alpha1.CvlabJobStatus {
	st := v.cur.DeepCopy()
	gen := v.job.Generation
	t := metav1.NewTime(now)
	st.ObservedGeneration = gen
	st.QueuePosition, st.Rank, st.UserGPUs = nil, nil, ""
	if e != nil {
		st.Rank = ptrInt32(e.Rank)
		st.UserGPUs = e.UserGPUs()
	}

	switch v.phase {
	case cvlabv1alpha1.PhaseSucceeded, cvlabv1alpha1.PhaseFailed:
		if IsFinished(v.cur) {
			return v.cur // final: never rewritten
		}
		st.Phase = v.phase
		st.CompletionTime = &t
		st.Message = v.finishMsg
		setFinished(st, v.finishReason, v.finishMsg, gen, t)
		setRunning(st, false, v.finishReason, v.finishMsg, gen, t)
		setQueued(st, false, ReasonFinished, v.finishMsg, gen, t)

	case cvlabv1alpha1.PhaseSuspended:
		st.Phase = v.phase
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
		st.Message = fmt.Sprintf("admitted: pod %s created, waiting for it to start", podName)
		setQueued(st, false, ReasonAdmitted, st.Message, gen, t)
		setAdmitted(st, true, ReasonPodCreated, st.Message, gen, t)
		setRunning(st, false, ReasonPodPending, st.Message, gen, t)

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
		setQueued(st, false, ReasonAdmitted, st.Message, gen, t)
		setAdmitted(st, true, ReasonPodCreated, fmt.Sprintf("pod %s created", v.live.Name), gen, t)
		setRunning(st, true, ReasonPodRunning, st.Message, gen, t)

	case cvlabv1alpha1.PhaseQueued:
		st.Phase = v.phase
		st.StartTime = nil
		switch {
		case createErr != nil:
			st.Message = "waiting: the pod could not be created, retrying: " + createErr.Error()
		case e != nil:
			st.QueuePosition = ptrInt32(e.Position)
			st.Message = waitingMessage(e)
		default:
			st.Message = "waiting to be admitted"
		}
		setQueued(st, true, ReasonWaiting, st.Message, gen, t)
		setAdmitted(st, false, ReasonWaiting, st.Message, gen, t)
		setRunning(st, false, ReasonWaiting, st.Message, gen, t)
	}
	return st
}

func waitingMessage(e *queue.Entry) string {
	ahead := "next in line"
	switch e.Position {
	case 0, 1:
	case 2:
		ahead = "1 job ahead"
	default:
		ahead = strconv.Itoa(e.Position-1) + " jobs ahead"
	}
	return fmt.Sprintf("waiting: %s; %s", e.Reason, ahead)
}

func runningMessage(v *jobView, e *queue.Entry) string {
	where := ""
	if v.live.Spec.NodeName != "" {
		where = " on node " + v.live.Spec.NodeName
	}
	if e == nil {
		return fmt.Sprintf("running: pod %s%s", v.live.Name, where)
	}
	return fmt.Sprintf("running: pod %s%s, on %s's GPU #%s", v.live.Name, where, v.job.Spec.User, e.UserGPUs())
}

// statusWrite is one status change to write; order puts the front of the queue first.
type statusWrite struct {
	view  *jobView
	want  *cvlabv1alpha1.CvlabJobStatus
	order int
}

func writeOrder(v *jobView, e *queue.Entry) int {
	switch {
	case v.phase == cvlabv1alpha1.PhaseAdmitted || v.phase == cvlabv1alpha1.PhaseRunning:
		return 0
	case e != nil && e.Position > 0:
		return e.Position
	default:
		return 1 << 30
	}
}

// writeStatuses merge-patches the changed statuses, a few at a time, front of the queue first,
// and emits an event for each phase change.
func (r *QueueReconciler) writeStatuses(ctx context.Context, writes []statusWrite) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, r.opts.StatusWriters)
	)
	done := make([]bool, len(writes))
	for i := range writes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			w := writes[i]
			base := w.view.job.DeepCopy()
			base.Status = *w.view.cur
			modified := base.DeepCopy()
			modified.Status = *w.want
			err := r.client.Status().Patch(ctx, modified, client.MergeFrom(base), FieldOwner)
			if apierrors.IsNotFound(err) {
				return
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("writing status of %s: %w", w.view.key(), err))
				mu.Unlock()
				return
			}
			done[i] = true
		})
	}
	wg.Wait()
	for i, w := range writes {
		if !done[i] {
			continue
		}
		r.written[w.view.job.UID] = w.want
		r.recordPhaseEvent(w.view.job, w.view.cur, w.want)
	}
	return errs
}

func (r *QueueReconciler) recordPhaseEvent(job *cvlabv1alpha1.CvlabJob, old, cur *cvlabv1alpha1.CvlabJobStatus) {
	if r.recorder == nil || old.Phase == cur.Phase {
		return
	}
	switch cur.Phase {
	case cvlabv1alpha1.PhaseQueued:
		r.recorder.Eventf(job, nil, corev1.EventTypeNormal, "Queued", "Queue", "%s", cur.Message)
	case cvlabv1alpha1.PhaseAdmitted:
		r.recorder.Eventf(job, nil, corev1.EventTypeNormal, "Admitted", "Admit", "%s", cur.Message)
	case cvlabv1alpha1.PhaseRunning:
		r.recorder.Eventf(job, nil, corev1.EventTypeNormal, "Started", "Start", "%s", cur.Message)
	case cvlabv1alpha1.PhaseSuspended:
		r.recorder.Eventf(job, nil, corev1.EventTypeNormal, "Suspended", "Suspend", "%s", cur.Message)
	case cvlabv1alpha1.PhaseSucceeded:
		r.recorder.Eventf(job, nil, corev1.EventTypeNormal, "Finished", "Finish", "%s", cur.Message)
	case cvlabv1alpha1.PhaseFailed:
		r.recorder.Eventf(job, nil, corev1.EventTypeWarning, "Finished", "Finish", "%s", cur.Message)
	}
}

func podFinished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func podAdmission(p *corev1.Pod) int32 {
	n, _ := strconv.ParseInt(p.Labels[LabelAdmission], 10, 32)
	return int32(n)
}

func podGPUs(p *corev1.Pod) int32 {
	var n int64
	for _, c := range p.Spec.Containers {
		if q, ok := c.Resources.Limits[ResourceGPU]; ok {
			n += q.Value()
		}
	}
	return int32(n)
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

func ptrInt32(n int) *int32 {
	v := int32(n)
	return &v
}
