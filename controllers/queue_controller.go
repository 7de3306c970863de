// Package controllers holds the operator's decision loop: it turns CvlabJobs into pods in the
// lab's fair-share order.
package controllers

import (
	"context"
	"errors"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/notify"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

// FieldOwner is the field manager of everything the operator writes.
const FieldOwner = client.FieldOwner("cvlab-queue")

const (
	// expectationTimeout is how long a created pod that the cache does not show yet still
	// counts as existing. Past it, the job is judged on what the cache shows.
	expectationTimeout = 10 * time.Second
	// reservationTimeout bounds how long a preemptor keeps GPUs that its victims free.
	reservationTimeout = 15 * time.Minute
	// maxRetryDelay bounds the wait before a decision that failed (e.g. the API server is down)
	// runs again.
	maxRetryDelay = 10 * time.Second
	// retryAfterErrors is when a decision whose writes partly failed runs again.
	retryAfterErrors = 2 * time.Second
	// backoffMax bounds the wait before a job whose start failed is tried again.
	backoffMax = 10 * time.Minute
	// podCreators is how many pods a decision creates at once.
	podCreators = 16
)

// queueRequest is the one request of the decision loop: every watched change enqueues it, and the
// work queue folds a burst of changes into one decision.
var queueRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "cvlab-queue"}}

// Options configure the decision loop.
type Options struct {
	// GPUCapacity bounds the GPUs the queue hands out; negative: no bound. Without GPU nodes it
	// is the size of the pool.
	GPUCapacity int32
	// NodeSelector picks the GPU nodes; nil: every node.
	NodeSelector labels.Selector
	// MaxHeadWait is how long the first waiting job may be passed by smaller jobs behind it.
	MaxHeadWait time.Duration
	// UnschedulableTimeout is how long an admitted pod may stay unschedulable before its job is
	// requeued.
	UnschedulableTimeout time.Duration
	// Preemption says which waiting jobs may evict running ones; MinRuntime protects young jobs.
	Preemption queue.Policy
	MinRuntime time.Duration
	// Notifier tells owners about preemptions (besides events and conditions); may be nil.
	Notifier notify.Notifier
	// View receives the queue after each decision, for the dashboard; may be nil.
	View *queueview.Store
	// BackoffBase is the first wait before a job whose start failed (pod creation refused, pod
	// unschedulable) is tried again; it doubles with each failure, up to 10m. Default 10s.
	BackoffBase time.Duration
	// StatusQPS bounds the background writes of waiting jobs' positions, front of the queue
	// first (see statusWriter); default DefaultStatusQPS.
	StatusQPS float64
	// Clock is the time source; a fake one in tests.
	Clock clock.Clock
}

// QueueReconciler is the single decision loop of the queue: it observes all CvlabJobs, their
// pods, the GPU nodes and other GPU pods, decides with the pure queue package, then acts (creates
// and deletes pods) and records (writes status that changed, emits events, notifies).
type QueueReconciler struct {
	client    client.Client
	apiReader client.Reader
	recorder  events.EventRecorder
	opts      Options

	// State of the loop, touched only by its single worker.
	// written is the last status written per job: the operator is the only writer of status, so
	// it is newer than what a lagging cache shows. The status writer updates it: guarded by
	// writtenMu.
	written   map[types.UID]*cvlabv1alpha1.CvlabJobStatus
	writtenMu sync.Mutex
	// writer writes the decisions' status changes in the background; shown lists the positions
	// of the last decision not written yet, for the dashboard.
	writer *statusWriter
	shown  map[types.UID]*cvlabv1alpha1.CvlabJobStatus
	// wake asks for a decision from outside the watches (a failed background write).
	wake chan event.GenericEvent
	// expected are pods created but not yet seen in the cache.
	expected map[types.UID]expectation
	// evicted are pods the operator deleted on purpose (preemption, unschedulable): their job
	// goes back to the queue rather than failing.
	evicted map[types.UID]string
	// reserved are the nodes whose GPUs preempted jobs free for their preemptor.
	reserved map[types.UID]reservation
	// backoff holds back jobs whose start failed.
	backoff   map[types.UID]backoffState
	head      string
	headSince time.Time
	// recentPreemptions are the last evictions, newest first, for the dashboard.
	recentPreemptions []queueview.Preemption

	// podNode is the node of each job's pod as last seen, to tell a pod that vanished with its
	// node from one deleted by a person.
	podNode map[types.UID]string
	// jobs is the CvlabJob informer (jobs.go), set up by SetupWithManager.
	jobs toolscache.SharedIndexInformer
}

type expectation struct {
	pod string
	// node is where the pod was placed: its GPUs count there until the cache shows the pod.
	node  string
	since time.Time
}

type reservation struct {
	node  string
	since time.Time
}

type backoffState struct {
	until    time.Time
	failures int
}

// NewQueueReconciler makes the decision loop.
func NewQueueReconciler(c client.Client, apiReader client.Reader, recorder events.EventRecorder, opts Options) *QueueReconciler {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.NodeSelector == nil {
		opts.NodeSelector = labels.Everything()
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = 10 * time.Second
	}
	if opts.UnschedulableTimeout <= 0 {
		opts.UnschedulableTimeout = 5 * time.Minute
	}
	r := &QueueReconciler{
		client: c, apiReader: apiReader, recorder: recorder, opts: opts,
		written:  map[types.UID]*cvlabv1alpha1.CvlabJobStatus{},
		expected: map[types.UID]expectation{},
		evicted:  map[types.UID]string{},
		reserved: map[types.UID]reservation{},
		backoff:  map[types.UID]backoffState{},
		podNode:  map[types.UID]string{},
	}
	r.writer = newStatusWriter(r, opts.StatusQPS)
	r.wake = make(chan event.GenericEvent, 1)
	return r
}

// wakeUp asks for a decision soon.
func (r *QueueReconciler) wakeUp() {
	select {
	case r.wake <- event.GenericEvent{Object: &cvlabv1alpha1.CvlabJob{}}:
	default: // one is asked for already
	}
}

// lastWritten is the status last written for a job, if any.
func (r *QueueReconciler) lastWritten(uid types.UID) (*cvlabv1alpha1.CvlabJobStatus, bool) {
	r.writtenMu.Lock()
	defer r.writtenMu.Unlock()
	w, ok := r.written[uid]
	return w, ok
}

func (r *QueueReconciler) setWritten(uid types.UID, st *cvlabv1alpha1.CvlabJobStatus) {
	r.writtenMu.Lock()
	defer r.writtenMu.Unlock()
	r.written[uid] = st
}

// SetupWithManager registers the loop, fed by watches on CvlabJobs, pods that are theirs or use
// GPUs, and nodes (only changes that move capacity, not heartbeats).
func (r *QueueReconciler) SetupWithManager(mgr ctrl.Manager) error {
	enqueue := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{queueRequest}
	})
	relevantPods := predicate.NewPredicateFuncs(func(o client.Object) bool {
		p, ok := o.(*corev1.Pod)
		if !ok {
			return false
		}
		_, ours := p.Labels[LabelJob]
		return ours || cluster.PodGPUs(p) > 0
	})
	capacityChanges := predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			a, okA := e.ObjectOld.(*corev1.Node)
			b, okB := e.ObjectNew.(*corev1.Node)
			return !okA || !okB || nodeCapacityKey(a) != nodeCapacityKey(b)
		},
	}
	if err := mgr.Add(manager.RunnableFunc(r.writer.run)); err != nil {
		return err
	}
	jobs, err := newJobInformer(mgr.GetConfig()) // lenient: see jobs.go
	if err != nil {
		return err
	}
	if err := mgr.Add(jobInformerRunnable{jobs}); err != nil {
		return err
	}
	r.jobs = jobs
	return ctrl.NewControllerManagedBy(mgr).
		Named("cvlabqueue").
		// Status-only updates of a job are the operator's own writes (it is the only writer of
		// status, and decides from its last write, not from the cache): they need no decision.
		// Without this, every background position write triggered a whole decision.
		WatchesRawSource(&source.Informer{Informer: jobs, Handler: enqueue,
			Predicates: []predicate.Predicate{predicate.GenerationChangedPredicate{}}}).
		Watches(&corev1.Pod{}, enqueue, builder.WithPredicates(relevantPods)).
		Watches(&corev1.Node{}, enqueue, builder.WithPredicates(capacityChanges)).
		WatchesRawSource(source.Channel(r.wake, enqueue)).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: 1,
			// The whole queue is one request: when the API server fails, retry quickly and never
			// back off longer than maxRetryDelay, so that admissions resume soon after it is back.
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, maxRetryDelay),
		}).
		Complete(r)
}

// +kubebuilder:rbac:groups=cvlab.epfl.ch,resources=cvlabjobs,verbs=get;list;watch
// +kubebuilder:rbac:groups=cvlab.epfl.ch,resources=cvlabjobs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile runs one decision for the whole queue: observe, decide, act, record.
func (r *QueueReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	now := r.opts.Clock.Now()
	defer func(start time.Time) { metricDecision.Observe(r.opts.Clock.Since(start).Seconds()) }(now)

	// Observe.
	if !r.jobs.HasSynced() {
		return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	jobs := listJobs(r.jobs)
	// The pods are the cache's own (no deep copy): the decision only reads them.
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, err
	}
	var nodes corev1.NodeList
	if err := r.client.List(ctx, &nodes); err != nil {
		return reconcile.Result{}, err
	}
	obs := r.observe(jobs, pods.Items, nodes.Items, now)
	observed := r.opts.Clock.Now()

	// Decide.
	snap := obs.snapshot(r, now)
	d := queue.Decide(snap)
	r.head, r.headSince = d.Head, d.HeadSince
	r.keepReservations(obs, d, now)
	decided := r.opts.Clock.Now()

	// Act and record.
	errs := r.apply(ctx, obs, d, now)
	applied := r.opts.Clock.Now()
	if len(errs) > 0 && ctx.Err() != nil {
		return reconcile.Result{}, nil // shutting down: the next leader decides again
	}
	r.publish(obs, d, snap, now)
	res := reconcile.Result{RequeueAfter: obs.requeueAfter(d.Wakeup, now)}
	if len(errs) > 0 {
		// A write that failed for one job must not stall the queue behind the controller's
		// growing per-request backoff: the rest of the decision stands, and it is retried soon.
		log.FromContext(ctx).Error(errors.Join(errs...), "decision applied with errors", "errors", len(errs))
		res.RequeueAfter = min(res.RequeueAfter, retryAfterErrors)
	}
	log.FromContext(ctx).V(1).Info("decided", "jobs", len(obs.views), "admitted", countAdmitted(d),
		"preemptions", len(d.Preemptions), "free", d.Free, "head", d.Head, "requeueAfter", res.RequeueAfter,
		"observeMs", observed.Sub(now).Milliseconds(), "decideMs", decided.Sub(observed).Milliseconds(),
		"applyMs", applied.Sub(decided).Milliseconds(), "pendingPhaseWrites", r.writer.pendingPhases())
	return res, nil
}

// apply carries out a decision: evictions (status first, so that a requeued job never looks
// failed), other deletions, pod creations, then every status that changed, front of the queue
// first.
func (r *QueueReconciler) apply(ctx context.Context, obs *observation, d queue.Decision, now time.Time) []error {
	entries := make(map[string]*queue.Entry, len(d.Order))
	for i := range d.Order {
		entries[d.Order[i].Key] = &d.Order[i]
	}
	var errs []error
	// Evictions: jobs requeued because their pod was unschedulable too long, and preemptions.
	evictions := obs.requeues
	for _, pr := range d.Preemptions {
		evictions = append(evictions, r.preemptionEvictions(obs, pr, entries, now)...)
	}
	errs = append(errs, r.evict(ctx, obs, evictions, entries, now)...)
	for _, u := range obs.unfinishedEvictions {
		if err := r.deleteSeen(ctx, u.pod); err != nil {
			errs = append(errs, err)
			continue
		}
		r.evicted[u.job] = u.pod.Name
	}

	for _, p := range obs.toDelete {
		if err := r.client.Delete(ctx, p); client.IgnoreNotFound(err) != nil {
			errs = append(errs, err)
		}
	}

	admit := map[string]string{} // key → node
	for _, k := range d.AdmitCPU {
		admit[k] = ""
	}
	for _, e := range d.Order {
		if e.Admit {
			admit[e.Key] = e.Node
		}
	}
	// Pod creations run podCreators at a time: one by one, a decision admitting tens of jobs
	// spent that many API round trips before anything else (measured: 5 s decisions at 5,000
	// jobs on a busy API server).
	type creation struct {
		v    *jobView
		node string
		err  error
	}
	var creations []*creation
	for _, v := range obs.views {
		if node, ok := admit[v.key()]; ok {
			creations = append(creations, &creation{v: v, node: node})
		}
	}
	var (
		wg  sync.WaitGroup
		sem = make(chan struct{}, podCreators)
	)
	if len(creations) > 0 {
		r.writer.creatingPods(true)
	}
	for _, c := range creations {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.err = r.createPod(ctx, c.v, obs.cluster.hostnames[c.node], c.node)
		})
	}
	wg.Wait()
	if len(creations) > 0 {
		r.writer.creatingPods(false)
	}
	for _, c := range creations {
		if c.err != nil {
			c.v.startErr = c.err
			r.backOff(c.v.job.UID, now)
			// Decide again when the backoff ends (the job's own status write, which used to
			// trigger the next decision, no longer does).
			obs.wakeups = append(obs.wakeups, r.backoff[c.v.job.UID].until)
			continue
		}
		r.expected[c.v.job.UID] = expectation{pod: PodName(c.v.job, c.v.lastAdmission), node: c.node, since: now}
		c.v.phase = cvlabv1alpha1.PhaseAdmitted
	}

	// Hand the status changes to the background writer: phase changes all land, front first;
	// the changes of jobs that stay waiting (their place in the queue) at --status-qps. The
	// decision does not wait for them: the next one decides from what they will write.
	var phase, positions []*statusWrite
	r.shown = map[types.UID]*cvlabv1alpha1.CvlabJobStatus{}
	for _, v := range obs.views {
		if v.evicted {
			continue // written before its pod was deleted
		}
		e := entries[v.key()]
		want := r.desiredStatus(v, e, obs.cluster, now)
		if statusEqual(v.cur, want) {
			continue
		}
		w := &statusWrite{job: v.job, cur: r.baseStatus(v), want: want, order: writeOrder(v, want, e), invalid: v.invalid, disruption: v.disruption}
		if deferrable(v, want) {
			positions = append(positions, w)
			r.shown[v.job.UID] = want
			continue
		}
		phase = append(phase, w)
	}
	r.writer.submit(phase, positions)
	return errs
}

// keepReservations remembers the GPUs promised to preemptors, as the engine left them; a promise
// that lasts longer than reservationTimeout (a victim that never stops) is dropped.
func (r *QueueReconciler) keepReservations(obs *observation, d queue.Decision, now time.Time) {
	next := make(map[types.UID]reservation, len(d.Reserved))
	for key, node := range d.Reserved {
		v := obs.byKey[key]
		res := reservation{node: node, since: now}
		if old, ok := r.reserved[v.job.UID]; ok && old.node == node {
			res.since = old.since
		}
		next[v.job.UID] = res
	}
	r.reserved = next
}

func countAdmitted(d queue.Decision) int {
	n := len(d.AdmitCPU)
	for _, e := range d.Order {
		if e.Admit {
			n++
		}
	}
	return n
}

// backOff holds a job back after a failed start, doubling the wait each time.
func (r *QueueReconciler) backOff(uid types.UID, now time.Time) {
	b := r.backoff[uid]
	b.failures++
	wait := r.opts.BackoffBase << min(b.failures-1, 10)
	b.until = now.Add(min(wait, backoffMax))
	r.backoff[uid] = b
}
