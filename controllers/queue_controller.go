// Package controllers holds the operator's decision loop: it turns CvlabJobs into pods in the
// lab's fair-share order.
package controllers

import (
	"context"
	"errors"
	"slices"
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
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
	"github.com/epfl-cvlab/cvlab-queue/internal/utilization"
)

// FieldOwner is the field manager of everything the operator writes.
const FieldOwner = client.FieldOwner("cvlab-queue")

const (
	// maxRetryDelay bounds the wait before a decision that failed (e.g. the API server is down)
	// runs again.
	maxRetryDelay = 10 * time.Second
	// retryAfterErrors is when a decision whose writes partly failed runs again.
	retryAfterErrors = 2 * time.Second
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
	// Idle is what the queue does with GPUs that sit idle (--idle-*, --utilization-interval).
	Idle observe.IdleSettings
	// Utilization measures the running jobs' GPUs every Idle.Interval (utilization.go); nil:
	// nothing is measured and the idle policy never acts.
	Utilization utilization.Source
	// Notifications tell owners personally what their jobs' status says (notifications.go); nil:
	// none.
	Notifications *Notifications
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
	// PublishNamespace is where the operator publishes its settings and head of the line (the
	// ConfigMap observe.PublishedName, read by `kubectl cvlab`); empty: not published.
	PublishNamespace string
	// PodOwnersNamespace is the namespace of the admission policies' params ConfigMap
	// (validation.ParamsName), where the owners of the queue's pods are published for the policy
	// job-pod-connect (podowners.go); empty: not published.
	PodOwnersNamespace string
	// DirectoryNamespace is where the lab directory is (the ConfigMap validation.DirectoryName),
	// which gives the pods of jobs without spec.clusterUser their owner's account (directory.go);
	// empty: no directory.
	DirectoryNamespace string
}

// Settings are the options that change decisions, as the shared observation and the CLI know them.
func (o Options) Settings() observe.Settings {
	return observe.Settings{Preemption: o.Preemption, GPUCapacity: o.GPUCapacity, NodeSelector: o.NodeSelector,
		MaxHeadWait: o.MaxHeadWait, MinRuntime: o.MinRuntime, UnschedulableTimeout: o.UnschedulableTimeout, Idle: o.Idle}
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
	// writer writes the decisions' status changes in the background, and alone knows what was
	// written and what is being written: it answers "what is this job's status now".
	writer *statusWriter
	// wake asks for a decision from outside the watches (a failed background write).
	wake chan event.GenericEvent
	// ledger is what the loop remembers between decisions (expected pods, evictions,
	// reservations, backoffs, pod nodes, the head of the line): read by observe, changed only
	// after a decision.
	ledger *observe.Ledger
	// publisher publishes the settings and the head of the line; nil when not published.
	publisher *publisher
	// recentPreemptions are the last evictions, newest first, for the dashboard.
	recentPreemptions []queueview.Preemption
	// podOwners publishes the owners of the queue's pods (podowners.go); made on first use.
	podOwners *podOwnerWriter
	// directory is the operator's copy of the lab directory (directory.go); nil: none.
	directory *labDirectory

	// utilization holds the last round of GPU samples until the loop takes it (utilization.go).
	utilization utilizationStore

	// jobs is the CvlabJob informer (jobs.go), set up by SetupWithManager.
	jobs toolscache.SharedIndexInformer
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
	if opts.Idle == (observe.IdleSettings{}) {
		opts.Idle = observe.DefaultSettings().Idle
	}
	if opts.Idle.Action == "" {
		opts.Idle.Action = observe.DefaultIdleAction
	}
	if opts.Idle.Interval <= 0 {
		opts.Idle.Interval = observe.DefaultUtilizationInterval
	}
	if opts.UnschedulableTimeout <= 0 {
		opts.UnschedulableTimeout = observe.DefaultUnschedulableTimeout
	}
	r := &QueueReconciler{
		client: c, apiReader: apiReader, recorder: recorder, opts: opts,
		ledger: observe.NewLedger(),
	}
	r.wake = make(chan event.GenericEvent, 1)
	r.writer = newStatusWriter(c, recorder, opts.Clock, opts.StatusQPS, r.wakeUp)
	if opts.PublishNamespace != "" {
		r.publisher = newPublisher(c, opts.PublishNamespace, opts.Settings())
	}
	if opts.DirectoryNamespace != "" {
		r.directory = newLabDirectory(apiReader, opts.DirectoryNamespace, opts.Clock)
	}
	return r
}

// wakeUp asks for a decision soon.
func (r *QueueReconciler) wakeUp() {
	select {
	case r.wake <- event.GenericEvent{Object: &cvlabv1alpha1.CvlabJob{}}:
	default: // one is asked for already
	}
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
	if r.publisher != nil {
		if err := mgr.Add(manager.RunnableFunc(r.publisher.run)); err != nil {
			return err
		}
	}
	if r.opts.Utilization != nil {
		m := &measurer{r: r, source: r.opts.Utilization, interval: r.opts.Idle.Interval}
		if err := mgr.Add(manager.RunnableFunc(m.run)); err != nil {
			return err
		}
	}
	jobs, err := newJobInformer(mgr.GetConfig()) // lenient: see jobs.go
	if err != nil {
		return err
	}
	if err := mgr.Add(jobInformerRunnable{jobs}); err != nil {
		return err
	}
	r.jobs = jobs
	if r.opts.Notifications != nil {
		clk := r.opts.Clock
		if r.opts.Notifications.Clock != nil {
			clk = r.opts.Notifications.Clock
		}
		w := newNotificationWatcher(r.opts.Notifications, jobs, mgr.GetClient(), clk, r.recorder)
		r.opts.Notifications.watcher.Store(w)
		if err := mgr.Add(w); err != nil {
			return err
		}
	}
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

	// Decide, then remember what the observation and the decision taught.
	snap := obs.Snapshot(now)
	d := queue.Decide(snap)
	r.ledger.Learn(obs)
	r.ledger.Decided(obs, d, now)
	if r.publisher != nil {
		r.publisher.set(observe.Published{Settings: r.opts.Settings(), Head: d.Head, HeadSince: d.HeadSince})
	}
	decided := r.opts.Clock.Now()

	// Act and record.
	errs := r.apply(ctx, obs, pods.Items, d, now)
	applied := r.opts.Clock.Now()
	if len(errs) > 0 && ctx.Err() != nil {
		return reconcile.Result{}, nil // shutting down: the next leader decides again
	}
	r.publish(obs, d, snap, now)
	recordUtilizationMetrics(obs, now)
	res := reconcile.Result{RequeueAfter: obs.RequeueAfter(d.Wakeup, now)}
	// A new round of GPU samples goes into the ledger after the decision; the next decision,
	// asked for now, judges the jobs by them.
	if r.measured(obs) {
		r.wakeUp()
	}
	if len(errs) > 0 {
		// A write that failed for one job must not stall the queue behind the controller's
		// growing per-request backoff: the rest of the decision stands, and it is retried soon.
		log.FromContext(ctx).Error(errors.Join(errs...), "decision applied with errors", "errors", len(errs))
		res.RequeueAfter = min(res.RequeueAfter, retryAfterErrors)
	}
	log.FromContext(ctx).V(1).Info("decided", "jobs", len(obs.Views), "admitted", countAdmitted(d),
		"preemptions", len(d.Preemptions), "free", d.Free, "head", d.Head, "requeueAfter", res.RequeueAfter,
		"observeMs", observed.Sub(now).Milliseconds(), "decideMs", decided.Sub(observed).Milliseconds(),
		"applyMs", applied.Sub(decided).Milliseconds(), "pendingPhaseWrites", r.writer.pendingPhases())
	return res, nil
}

// apply carries out a decision: evictions (status first, so that a requeued job never looks
// failed), other deletions, pod creations, then every status that changed, front of the queue
// first.
func (r *QueueReconciler) apply(ctx context.Context, obs *observe.Observation, pods []corev1.Pod, d queue.Decision, now time.Time) []error {
	p := lifecycle.Plan(obs, d)
	var errs []error
	// The idle warnings, and the suspensions of --idle-action=Suspend (utilization.go).
	for _, ev := range r.warnIdle(obs, now) {
		if !slices.ContainsFunc(p.Evictions, func(o observe.Eviction) bool { return o.View == ev.View }) {
			p.Evictions = append(p.Evictions, ev)
		}
	}
	errs = append(errs, r.evict(ctx, obs, p.Evictions, p.Entries, now)...)
	for _, u := range p.Unfinished {
		if err := r.deleteSeen(ctx, u.Pod); err != nil {
			errs = append(errs, err)
			continue
		}
		r.ledger.Evicting(u.Job, u.Pod.Name)
	}
	for _, pod := range p.Deletions {
		if err := r.client.Delete(ctx, pod); client.IgnoreNotFound(err) != nil {
			errs = append(errs, err)
		}
	}
	entries, creations := p.Entries, p.Creations
	// Pod creations run podCreators at a time: one by one, a decision admitting tens of jobs
	// spent that many API round trips before anything else (measured: 5 s decisions at 5,000
	// jobs on a busy API server).
	var (
		wg  sync.WaitGroup
		sem = make(chan struct{}, podCreators)
	)
	// Owners first (exec/attach/port-forward policy, podowners.go): a pod whose owner could not be
	// published is not created now; its job backs off and starts on a later decision.
	if err := r.publishPodOwners(ctx, obs, pods, creations, now); err != nil {
		errs = append(errs, err)
	}
	r.directory.refresh(ctx, creations) // the lab directory, for jobs without clusterUser (directory.go)
	if len(creations) > 0 {
		r.writer.creatingPods(true)
	}
	for _, c := range creations {
		if c.Err != nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.Err = r.createPod(ctx, c.View, obs.Cluster.Hostnames[c.Node], c.Node)
		})
	}
	wg.Wait()
	if len(creations) > 0 {
		r.writer.creatingPods(false)
	}
	for _, c := range creations {
		if c.Err != nil {
			c.View.StartErr = c.Err
			// Decide again when the backoff ends (the job's own status write, which used to
			// trigger the next decision, no longer does).
			obs.Wakeups = append(obs.Wakeups, r.backOff(c.View.Job.UID, now))
			continue
		}
		r.ledger.Expect(c.View.Job.UID, lifecycle.PodName(c.View.Job, c.View.LastAdmission), c.Node, now)
		c.View.Phase = cvlabv1alpha1.PhaseAdmitted
	}

	// Hand the status changes to the background writer: phase changes all land, front first;
	// the changes of jobs that stay waiting (their place in the queue) at --status-qps. The
	// decision does not wait for them: the next one decides from what they will write.
	var phase, positions []*statusWrite
	r.writer.clearShown()
	for _, v := range obs.Views {
		if v.Evicted {
			continue // written before its pod was deleted
		}
		e := entries[v.Key()]
		want := lifecycle.DesiredStatus(v, e, obs.Cluster, r.ledger.Backoff[v.Job.UID].Until, now)
		if statusEqual(v.Cur, want) {
			continue
		}
		w := &statusWrite{job: v.Job, cur: r.writer.base(v.Job), want: want, order: writeOrder(v, want, e), invalid: v.Invalid, disruption: v.Disruption}
		if deferrable(v, want) {
			positions = append(positions, w)
			r.writer.show(v.Job.UID, want)
			continue
		}
		phase = append(phase, w)
	}
	r.writer.submit(phase, positions)
	return errs
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

// backOff holds a job back after a failed start, doubling the wait each time; it returns when the
// job may start again.
func (r *QueueReconciler) backOff(uid types.UID, now time.Time) time.Time {
	return r.ledger.BackOff(uid, r.opts.BackoffBase, now)
}

// observe reads the cluster into views (jobs and pods are the caches' own objects: read only),
// each job's status being the operator's latest word; and forgets what the status writer kept of
// deleted jobs.
func (r *QueueReconciler) observe(jobs []*cvlabv1alpha1.CvlabJob, pods []corev1.Pod, nodes []corev1.Node, now time.Time) *observe.Observation {
	exists := make(map[types.UID]bool, len(jobs))
	for _, j := range jobs {
		exists[j.UID] = true
	}
	r.writer.forget(func(uid types.UID) bool { return exists[uid] })
	return observe.Observe(observe.Input{Jobs: jobs, Pods: pods, Nodes: nodes, Settings: r.opts.Settings(),
		Ledger: r.ledger, Status: r.writer.current, Now: now})
}
