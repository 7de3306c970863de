package controllers

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/directory"
	"github.com/epfl-cvlab/cvlab-queue/internal/notify"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

// Personal notifications (docs/notifications.md). What is due is read from each job's typed
// status (notify.Due): the decision loop only writes status, as before, and never waits for a
// message. A watcher, apart from the decision loop, offers what is due to the dispatcher, which
// groups, rate-limits, delivers and records what it sent (ConfigMap notify.DefaultStoreName). So a
// restart neither re-sends (the record) nor drops (the status still says it) what was due.

// Notifications is what the watcher needs; Options.Notifications, nil: no notifications.
type Notifications struct {
	// Sink groups, delivers and records.
	Sink NotificationSink
	// Due are the kinds, thresholds and the idle policy (Since is filled from the sink).
	Due notify.DueSettings
	// Resync is how often every job is looked at again although none changed (default 5m).
	Resync time.Duration
	// Clock is the watcher's (the dispatcher's, from SetupNotifications); nil: the queue's.
	Clock clock.Clock

	// watcher is set when the queue is set up; the dispatcher's NoContact hook goes to it.
	watcher atomic.Pointer[notificationWatcher]
}

// SetupNotifications makes the dispatcher of cfg, whose record is the ConfigMap
// notify.DefaultStoreName in namespace and whose contacts come from the lab directory there, adds
// it to mgr, and returns what Options.Notifications needs. The record is read and written without
// the manager's cache (one ConfigMap is not worth watching them all).
func SetupNotifications(mgr manager.Manager, namespace string, cfg notify.Config, due notify.DueSettings) (*Notifications, error) {
	direct, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	n := &Notifications{Due: due, Clock: cfg.Clock}
	cfg.Store = &notify.ConfigMapStore{Client: direct, Namespace: namespace, Retention: cfg.Retention, Clock: cfg.Clock}
	cfg.Contacts = newContactBook(direct, namespace, cfg.Clock).Contact
	cfg.NoContact = func(e notify.Event) {
		if w := n.watcher.Load(); w != nil {
			w.NoContact(e)
		}
	}
	d, err := notify.New(cfg)
	if err != nil {
		return nil, err
	}
	n.Sink = d
	return n, mgr.Add(d)
}

// NotificationSink is the dispatcher as the watcher sees it.
type NotificationSink interface {
	// Offer takes events without blocking; those already sent or pending are ignored.
	Offer(events ...notify.Event)
	// Since is when notifications started (the store's record); zero until the record is read:
	// nothing is offered before, so that nothing sent before a restart is offered as new.
	Since() time.Time
}

// notificationWatcher offers each job's due notifications when the job changes, when a
// DeadlineSoon comes, and every Resync.
type notificationWatcher struct {
	n        *Notifications
	jobs     toolscache.SharedIndexInformer
	pods     client.Reader
	clock    clock.Clock
	recorder events.EventRecorder

	mu      sync.Mutex
	changed map[string]bool // namespace/name of jobs changed since the last look
	all     bool            // look at every job
	kick    chan struct{}
	// timers are when to look at a job again (a DeadlineSoon), by namespace/name.
	timers map[string]time.Time
	// toldNoContact are the users already told (by an event) that they have no contact.
	toldNoContact map[string]bool
}

func newNotificationWatcher(n *Notifications, jobs toolscache.SharedIndexInformer, pods client.Reader, clk clock.Clock, rec events.EventRecorder) *notificationWatcher {
	if n.Resync <= 0 {
		n.Resync = 5 * time.Minute
	}
	return &notificationWatcher{n: n, jobs: jobs, pods: pods, clock: clk, recorder: rec, changed: map[string]bool{}, all: true,
		kick: make(chan struct{}, 1), timers: map[string]time.Time{}, toldNoContact: map[string]bool{}}
}

// NeedLeaderElection: only the leader tells (a standby would send everything twice).
func (w *notificationWatcher) NeedLeaderElection() bool { return true }

func (w *notificationWatcher) mark(obj any) {
	j, ok := obj.(*cvlabv1alpha1.CvlabJob)
	if !ok {
		return
	}
	w.mu.Lock()
	w.changed[j.Namespace+"/"+j.Name] = true
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Start runs the watcher until ctx ends.
func (w *notificationWatcher) Start(ctx context.Context) error {
	reg, err := w.jobs.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    w.mark,
		UpdateFunc: func(_, obj any) { w.mark(obj) },
	})
	if err != nil {
		return err
	}
	defer func() { _ = w.jobs.RemoveEventHandler(reg) }()
	resyncAt := w.clock.Now().Add(w.n.Resync)
	for {
		wait := w.untilNextTimer()
		if w.n.Sink.Since().IsZero() {
			wait = min(wait, time.Second) // until the sink has read its record
		}
		wait = min(wait, max(resyncAt.Sub(w.clock.Now()), 0))
		timer := w.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-w.kick:
		case <-timer.C():
		}
		timer.Stop()
		if now := w.clock.Now(); !now.Before(resyncAt) {
			resyncAt = now.Add(w.n.Resync)
			w.mu.Lock()
			w.all = true
			w.mu.Unlock()
		}
		w.look(ctx)
	}
}

// untilNextTimer is the wait until the earliest DeadlineSoon (an hour when none).
func (w *notificationWatcher) untilNextTimer() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := time.Hour
	now := w.clock.Now()
	for _, at := range w.timers {
		d = min(d, max(at.Sub(now), 0))
	}
	return d
}

// look offers the due notifications of the jobs that changed or whose timer came.
func (w *notificationWatcher) look(ctx context.Context) {
	since := w.n.Sink.Since()
	if since.IsZero() || !w.jobs.HasSynced() {
		return
	}
	now := w.clock.Now()
	w.mu.Lock()
	keys := w.changed
	all := w.all
	w.changed, w.all = map[string]bool{}, false
	for k, at := range w.timers {
		if !at.After(now) {
			keys[k] = true
			delete(w.timers, k)
		}
	}
	w.mu.Unlock()

	var jobs []*cvlabv1alpha1.CvlabJob
	if all {
		jobs = listJobs(w.jobs)
	} else {
		for k := range keys {
			if obj, exists, _ := w.jobs.GetStore().GetByKey(k); exists {
				if j, ok := obj.(*cvlabv1alpha1.CvlabJob); ok {
					jobs = append(jobs, j)
				}
			}
		}
	}
	set := w.n.Due
	set.Since = since
	for _, j := range jobs {
		events, next := notify.Due(j, w.pod(ctx, j, now), set, now)
		key := j.Namespace + "/" + j.Name
		w.mu.Lock()
		if next.IsZero() {
			delete(w.timers, key)
		} else {
			w.timers[key] = next
		}
		w.mu.Unlock()
		if len(events) > 0 {
			w.n.Sink.Offer(events...)
		}
	}
}

// pod is the pod of a job that just finished, for its exit code; nil otherwise or when gone.
func (w *notificationWatcher) pod(ctx context.Context, j *cvlabv1alpha1.CvlabJob, now time.Time) *corev1.Pod {
	st := &j.Status
	if st.Phase != cvlabv1alpha1.PhaseFailed && st.Phase != cvlabv1alpha1.PhaseSucceeded || st.PodName == "" ||
		st.CompletionTime == nil || w.n.Due.MaxAge > 0 && now.Sub(st.CompletionTime.Time) > w.n.Due.MaxAge {
		return nil
	}
	var p corev1.Pod
	if err := w.pods.Get(ctx, types.NamespacedName{Namespace: j.Namespace, Name: st.PodName}, &p); err != nil {
		log.FromContext(ctx).V(1).Info("no pod for the exit code", "job", j.Namespace+"/"+j.Name, "error", err.Error())
		return nil
	}
	return &p
}

// NoContact tells, once per user and manager start, on the job, that its owner has no contact in the
// lab directory: a Normal event NotNotified.
func (w *notificationWatcher) NoContact(e notify.Event) {
	w.mu.Lock()
	told := w.toldNoContact[e.Job.User]
	w.toldNoContact[e.Job.User] = true
	w.mu.Unlock()
	if told || w.recorder == nil {
		return
	}
	obj, exists, _ := w.jobs.GetStore().GetByKey(e.Job.Namespace + "/" + e.Job.Name)
	j, ok := obj.(*cvlabv1alpha1.CvlabJob)
	if !exists || !ok {
		return
	}
	w.recorder.Eventf(j, nil, corev1.EventTypeNormal, cvlabv1alpha1.EventNotNotified, "Notify",
		"%s has no email, slack or mattermost field in the lab directory (ConfigMap %s): not told about this job or their others", e.Job.User, validation.DirectoryName)
}

// contactBook reads users' contacts from the lab directory for the dispatcher, at most every
// directoryRefresh (an admin's edit shows within that), as the queue's own copy does.
type contactBook struct {
	reader client.Reader
	key    client.ObjectKey
	clock  clock.PassiveClock

	mu     sync.Mutex
	dir    directory.Directory
	readAt time.Time
}

func newContactBook(reader client.Reader, namespace string, clk clock.PassiveClock) *contactBook {
	return &contactBook{reader: reader, key: client.ObjectKey{Namespace: namespace, Name: validation.DirectoryName}, clock: clk}
}

// Contact is user's contact (notify.Contacts); a directory that cannot be read keeps the last copy.
func (b *contactBook) Contact(user string) (notify.Contact, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now := b.clock.Now(); b.readAt.IsZero() || now.Sub(b.readAt) >= directoryRefresh {
		var cm corev1.ConfigMap
		err := b.reader.Get(context.Background(), b.key, &cm)
		switch {
		case err == nil:
			b.dir, _ = directory.Parse(cm.Data) // the queue's own copy logs the entries' problems
			b.readAt = now
		case client.IgnoreNotFound(err) == nil:
			b.dir, b.readAt = directory.Directory{}, now
		}
	}
	c, ok := b.dir.Contact(user)
	return notify.Contact{Email: c.Email, Slack: c.Slack, Mattermost: c.Mattermost}, ok
}
