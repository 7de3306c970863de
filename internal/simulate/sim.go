// Package simulate replays a workload through the operator's own decision loop on a virtual
// clock: observe.Observe, queue.Decide, the ledger (Learn, Decided, Expect, Evicting, Measured,
// Warned, HoldBack) and the lifecycle (lifecycle.Plan, DesiredStatus, EvictedStatus,
// IdleWarnings), carried out in memory in the operator's order (controllers.QueueReconciler's
// apply and evict) instead of against an API server. It is pure: no client, no clock, no
// goroutines; Run of a month of a 30-GPU lab takes seconds.
//
// What plays the cluster: a pod created for an admission runs after Config.StartDelay on the
// node it was placed on; it succeeds after its job's run time, or fails with DeadlineExceeded at
// its timeout; an evicted pod holds its GPUs until it stops (Config.StopDelay, at most its grace
// period); GPUs are measured every --utilization-interval from the jobs' utilisation profiles.
// See docs/simulate.md for what it does not model.
package simulate

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/fakedcgm"
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// Config is one simulation's setting.
type Config struct {
	// Label names the setting in the result, e.g. "preemption=Rank".
	Label string
	// Settings are the operator's decision flags (observe.DefaultSettings for its defaults).
	Settings observe.Settings
	// Nodes are the GPU nodes (ReadNodes); none: a pool of Settings.GPUCapacity GPUs.
	Nodes []corev1.Node
	// Start is when the clock starts; zero: the initial State's Now, else the first submission.
	Start time.Time
	// Until ends the simulation; zero: when nothing is left to happen, at most MaxDrain after
	// the last submission.
	Until time.Time
	// StartDelay is how long an admitted pod takes to run (scheduling, image pull); default 0:
	// the local cluster's kwok runs pods within a second.
	StartDelay time.Duration
	// StopDelay is how long an evicted pod takes to stop once deleted, at most its grace period;
	// zero: its whole grace period (a job that checkpoints until it is killed).
	StopDelay time.Duration
	// Step is the timeline's sampling interval; default 10m.
	Step time.Duration
	// ProfileStep is how long each value of a utilisation profile lasts; default 1m, as the fake
	// exporter's (fakedcgm.Options.Step).
	ProfileStep time.Duration
	// RenderAll renders every job's status at every decision, as the operator does. By default
	// the status of a job that stays waiting or running is not rendered again: it would change in
	// its place in the queue and sentences only, which no decision reads back (the operator too
	// defers those writes); TestRenderAllAgrees checks that both give the same outcome.
	RenderAll bool
}

// MaxDrain bounds a simulation without Config.Until after the last submission (jobs that can
// never start, running jobs without an end).
const MaxDrain = 90 * 24 * time.Hour

// State is a starting point: the queue at Now, with jobs already running or waiting (for
// predictions from the live cluster); the trace's jobs then arrive on top.
type State struct {
	Now  time.Time
	Jobs []StateJob
	// Head and HeadSince are the operator's published head of the line (observe.Published).
	Head      string
	HeadSince time.Time
}

// StateJob is a job of the starting State. Its TraceJob's Submit is its creation time and
// Runtime its whole expected run time (zero with no Timeout: it never ends); Started is zero
// for a waiting job.
type StateJob struct {
	TraceJob
	// Namespace is the job's namespace; empty: its user.
	Namespace string
	// Started is when its current run started; Node where it runs (empty in pool mode).
	Started time.Time
	Node    string
	// Admissions and Preemptions are its status's counts so far.
	Admissions  int32
	Preemptions int
}

// eventKind says what happens to a pod or job; events at the same time are handled in the order
// they were scheduled.
type eventKind uint8

const (
	evStart  eventKind = iota // an admitted pod runs
	evEnd                     // a running pod ends (run time or timeout elapsed)
	evGone                    // a deleted pod is gone
	evCancel                  // the owner deletes the job
)

type event struct {
	at   time.Time
	seq  uint64
	kind eventKind
	j    *simJob
	pod  *simPod
	// deadline: an evEnd at the pod's activeDeadlineSeconds (it fails), not at its run time.
	deadline bool
}

// simJob is one job of the simulation and its pods.
type simJob struct {
	t       TraceJob
	job     *cvlabv1alpha1.CvlabJob
	pods    []*simPod // not gone: the live one, and those being deleted
	profile []float64
	out     JobOutcome
	grace   time.Duration
	// runStart is when its current run started (zero when it does not run), waitSince when it
	// started waiting (submission or requeue).
	runStart, waitSince time.Time
	gpuHours            float64       // run so far
	progress            time.Duration // work saved by checkpoints before evictions
	blocked             bool          // was the head of the line holding back the jobs ranked below it
}

// simPod is a pod and what the simulation knows of it.
type simPod struct {
	corev1.Pod
	// released: its GPUs are free (it ended, or is gone).
	released bool
}

type sim struct {
	cfg    Config
	now    time.Time
	until  time.Time
	ledger *observe.Ledger

	trace []TraceJob // not submitted yet, in order
	next  int
	// active are the jobs in the queue (not finished, not deleted), in submission order; byUID
	// finds them, and the deleted ones whose pods are not gone yet, by UID.
	active []*simJob
	byUID  map[types.UID]*simJob
	done   []*simJob
	// fresh are the jobs submitted since the last decision (their ordinal is not known yet).
	fresh []*simJob
	// orphans are deleted jobs whose pods are not gone yet.
	orphans []*simJob
	names   map[string]bool
	events  []event // a min-heap on (at, seq)
	seq     uint64
	// jobBuf and podBuf are the observations' input, reused.
	jobBuf []*cvlabv1alpha1.CvlabJob
	podBuf []corev1.Pod

	// lastObs and lastOrder are the last decision's observation and order, whose memory the
	// next decision reuses (observe.Input.Reuse, queue.Snapshot.Reuse).
	lastObs   *observe.Observation
	lastOrder []queue.Entry
	wake      time.Time
	measuring bool
	nextTick  time.Time
	// decideNow asks for a decision at the start: the initial State's queue may change at once
	// (an eviction due, GPUs free).
	decideNow bool

	capacity int32
	held     map[string]int32 // GPUs held by each user's pods (live and stopping)
	res      *Result
	// sampleAt is the timeline's next point.
	sampleAt time.Time
	// fairSum sums the fairness index at the fairPoints timeline points where two users or more
	// had waiting work.
	fairSum    float64
	fairPoints int
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Run simulates the trace's jobs from initial on under cfg.
func Run(cfg Config, initial State, trace []TraceJob) (*Result, error) {
	s, err := newSim(cfg, initial, trace)
	if err != nil {
		return nil, err
	}
	if err := s.run(); err != nil {
		return nil, err
	}
	return s.result(), nil
}

func newSim(cfg Config, initial State, trace []TraceJob) (*sim, error) {
	if cfg.Step <= 0 {
		cfg.Step = 10 * time.Minute
	}
	if cfg.ProfileStep <= 0 {
		cfg.ProfileStep = time.Minute
	}
	trace = slices.Clone(trace)
	slices.SortStableFunc(trace, func(a, b TraceJob) int { return a.Submit.Compare(b.Submit) })
	s := &sim{cfg: cfg, ledger: observe.NewLedger(), trace: trace, byUID: map[types.UID]*simJob{}, names: map[string]bool{},
		held: map[string]int32{}, res: &Result{Label: cfg.Label, Step: cfg.Step, Settings: settingsMap(cfg.Settings)}}
	s.ledger.Head, s.ledger.HeadSince = initial.Head, initial.HeadSince
	switch {
	case !cfg.Start.IsZero():
		s.now = cfg.Start
	case !initial.Now.IsZero():
		s.now = initial.Now
	case len(trace) > 0:
		s.now = trace[0].Submit
	}
	s.res.Start, s.sampleAt = s.now, s.now
	s.until = cfg.Until
	if s.until.IsZero() {
		last := s.now
		if len(trace) > 0 {
			last = later(last, trace[len(trace)-1].Submit)
		}
		s.until = last.Add(MaxDrain)
	}
	selector := cfg.Settings.NodeSelector
	if selector == nil {
		selector = labels.Everything()
	}
	for _, n := range observe.ObserveNodes(cfg.Nodes, selector).Nodes {
		s.capacity += n.GPUs
	}
	if len(cfg.Nodes) == 0 || cfg.Settings.GPUCapacity >= 0 && cfg.Settings.GPUCapacity < s.capacity {
		s.capacity = max(cfg.Settings.GPUCapacity, 0)
	}
	idle := cfg.Settings.Idle
	for i := range trace {
		if trace[i].Utilization != "" && idle.After > 0 && idle.Interval > 0 {
			s.measuring = true
		}
	}
	s.decideNow = len(initial.Jobs) > 0
	for _, sj := range initial.Jobs {
		j, err := s.add(sj.TraceJob, sj.Namespace)
		if err != nil {
			return nil, err
		}
		if sj.Utilization != "" && idle.After > 0 && idle.Interval > 0 {
			s.measuring = true
		}
		j.out.Preemptions = sj.Preemptions
		if sj.Started.IsZero() {
			j.job.Status.Admissions = sj.Admissions
			continue
		}
		// Running: its status and pod as the operator left them.
		n := max(sj.Admissions, 1)
		pod := s.newPod(j, n, sj.Node)
		st := &j.job.Status
		st.Phase, st.Admissions, st.PodName, st.Node = cvlabv1alpha1.PhaseRunning, n, pod.Name, sj.Node
		st.StartTime, st.AdmittedAt = ptr.To(metav1.NewTime(sj.Started)), ptr.To(metav1.NewTime(sj.Started))
		st.ObservedGeneration = j.job.Generation
		s.start(j, pod, sj.Started)
	}
	return s, nil
}

// settingsMap renders the settings by the operator's flag names.
func settingsMap(set observe.Settings) map[string]string {
	m := map[string]string{
		"preemption": set.Preemption.String(), "gpu-capacity": strconv.Itoa(int(set.GPUCapacity)),
		"max-head-wait": set.MaxHeadWait.String(), "min-runtime": set.MinRuntime.String(),
		"idle-threshold": strconv.Itoa(int(set.Idle.Threshold)), "idle-after": set.Idle.After.String(),
		"idle-grace": set.Idle.Grace.String(), "idle-action": string(set.Idle.Action),
		"utilization-interval": set.Idle.Interval.String(),
	}
	if set.NodeSelector != nil && !set.NodeSelector.Empty() {
		m["gpu-node-selector"] = set.NodeSelector.String()
	}
	return m
}

// add makes a job of the trace a CvlabJob in the queue, as its owner would create it.
func (s *sim) add(t TraceJob, ns string) (*simJob, error) {
	if ns == "" {
		ns = t.User
	}
	key := ns + "/" + t.Name
	if s.names[key] {
		return nil, fmt.Errorf("job %s appears twice", key)
	}
	s.names[key] = true
	job := &cvlabv1alpha1.CvlabJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: t.Name, UID: types.UID(key), Generation: 1,
			CreationTimestamp: metav1.NewTime(t.Submit)},
		Spec: cvlabv1alpha1.CvlabJobSpec{User: t.User, GPUs: t.GPUs, Priority: t.Priority, Image: "simulated"},
	}
	if t.Timeout > 0 {
		job.Spec.Timeout = &metav1.Duration{Duration: t.Timeout}
	}
	if t.Grace > 0 {
		job.Spec.TerminationGracePeriodSeconds = ptr.To(int64(math.Ceil(t.Grace.Seconds())))
	}
	grace := ptr.Deref(job.Spec.TerminationGracePeriodSeconds, cluster.DefaultTerminationGracePeriodSeconds) // as the pod's
	j := &simJob{t: t, job: job, grace: time.Duration(grace) * time.Second, waitSince: t.Submit,
		out: JobOutcome{Name: t.Name, Namespace: ns, User: t.User, GPUs: t.GPUs, Priority: t.Priority, Submit: t.Submit, Interactive: t.Interactive}}
	if t.Utilization != "" {
		p, err := fakedcgm.ParseProfile(t.Utilization)
		if err != nil {
			return nil, fmt.Errorf("job %s: %w", key, err)
		}
		j.profile = p
	}
	s.active = append(s.active, j)
	s.byUID[job.UID] = j
	s.fresh = append(s.fresh, j)
	return j, nil
}

// newPod is the pod of a job's n-th admission, placed on node, as the operator's
// (controllers.BuildPod) reads to observe: its owner, admission, node, GPUs, grace period and
// deadline. It is pending until it starts.
func (s *sim) newPod(j *simJob, n int32, node string) *simPod {
	job := j.job
	pod := &simPod{Pod: corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: lifecycle.PodName(job, n), Namespace: job.Namespace,
			UID:    types.UID(lifecycle.PodName(job, n) + "." + job.Namespace),
			Labels: map[string]string{cluster.LabelJob: job.Name, cluster.LabelAdmission: strconv.Itoa(int(n))},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: cvlabv1alpha1.GroupVersion.String(), Kind: "CvlabJob",
				Name: job.Name, UID: job.UID, Controller: ptr.To(true)}},
		},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To(int64(j.grace / time.Second)), // a whole number of seconds (add)
			Containers: []corev1.Container{{Name: "job", Resources: corev1.ResourceRequirements{
				Limits: corev1.ResourceList{cluster.ResourceGPU: *resource.NewQuantity(int64(job.Spec.GPUs), resource.DecimalSI)}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}}
	if node != "" {
		pod.Annotations = map[string]string{cluster.AnnotationNode: node}
	}
	if t := job.Spec.Timeout; t != nil {
		pod.Spec.ActiveDeadlineSeconds = ptr.To(int64(math.Ceil(t.Seconds())))
	}
	j.pods = append(j.pods, pod)
	s.held[j.t.User] += job.Spec.GPUs
	return pod
}

// start runs a pod from at: bound to its node, Running, and its end scheduled (its run time, or
// its deadline first).
func (s *sim) start(j *simJob, pod *simPod, at time.Time) {
	pod.Spec.NodeName = cluster.PodNode(&pod.Pod)
	pod.Status.Phase = corev1.PodRunning
	pod.Status.StartTime = ptr.To(metav1.NewTime(at))
	j.runStart = at
	if j.out.Start == nil {
		j.out.Start = ptr.To(at)
		j.out.FirstWait = at.Sub(j.t.Submit)
		if j.t.Cancel > 0 {
			s.push(event{at: at.Add(j.t.Cancel), kind: evCancel, j: j})
		}
	}
	j.out.Wait += max(at.Sub(j.waitSince), 0)
	j.out.Node = pod.Spec.NodeName
	run, deadline := j.t.Runtime-j.progress, false
	if d := pod.Spec.ActiveDeadlineSeconds; d != nil && (run == 0 || time.Duration(*d)*time.Second <= run) {
		run, deadline = time.Duration(*d)*time.Second, true
	}
	if run == 0 {
		return // runs until evicted or the end
	}
	s.push(event{at: later(at.Add(run), s.now), kind: evEnd, j: j, pod: pod, deadline: deadline})
}

// stopRun ends j's current run at now; cut says that it was evicted: the work since its last
// checkpoint is lost.
func (s *sim) stopRun(j *simJob, cut bool) {
	if j.runStart.IsZero() {
		return
	}
	ran := s.now.Sub(j.runStart)
	h := float64(j.t.GPUs) * ran.Hours()
	s.res.UsedGPUHours += h
	if cut {
		var saved time.Duration
		if c := j.t.Checkpoint; c > 0 {
			saved = ran / c * c
		}
		j.progress += saved
		s.res.WastedGPUHours += float64(j.t.GPUs) * (ran - saved).Hours()
	}
	j.gpuHours += h
	j.runStart = time.Time{}
}

// release frees the GPUs of a pod that ended or is gone.
func (s *sim) release(j *simJob, pod *simPod) {
	if !pod.released {
		s.held[j.t.User] -= j.t.GPUs
		pod.released = true
	}
}

func (s *sim) push(e event) {
	s.seq++
	e.seq = s.seq
	s.events = append(s.events, e)
	for i := len(s.events) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.events[i].before(&s.events[p]) {
			break
		}
		s.events[i], s.events[p] = s.events[p], s.events[i]
		i = p
	}
}

func (s *sim) pop() event {
	e := s.events[0]
	n := len(s.events) - 1
	s.events[0] = s.events[n]
	s.events = s.events[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && s.events[l].before(&s.events[m]) {
			m = l
		}
		if r := l + 1; r < n && s.events[r].before(&s.events[m]) {
			m = r
		}
		if m == i {
			break
		}
		s.events[i], s.events[m] = s.events[m], s.events[i]
		i = m
	}
	return e
}

func (e *event) before(o *event) bool {
	if c := e.at.Compare(o.at); c != 0 {
		return c < 0
	}
	return e.seq < o.seq
}

// errLivelock: decisions at one instant that never settle (a bug: the operator would loop too).
var errLivelock = errors.New("simulate: the decisions do not settle at one instant")

// maxRounds bounds the decisions at one instant.
const maxRounds = 1000

func (s *sim) run() error {
	for {
		at, ok := s.nextTime()
		if !ok || at.After(s.until) {
			if ok {
				s.advance(s.until)
			}
			return nil
		}
		s.advance(at)
		dirty := s.decideNow
		s.decideNow = false
		for s.next < len(s.trace) && !s.trace[s.next].Submit.After(s.now) {
			if _, err := s.add(s.trace[s.next], ""); err != nil {
				return err
			}
			s.next++
			dirty = true
		}
		dirty = s.handleEvents() || dirty
		if !s.wake.IsZero() && !s.wake.After(s.now) {
			s.wake, dirty = time.Time{}, true
		}
		if s.measuring && !s.nextTick.IsZero() && !s.nextTick.After(s.now) {
			dirty = s.measure() || dirty
			s.nextTick = s.nextTick.Add(s.cfg.Settings.Idle.Interval)
		}
		for round := 0; dirty; round++ {
			if round == maxRounds {
				return fmt.Errorf("%w (%s)", errLivelock, s.now.Format(time.RFC3339))
			}
			dirty = s.decide()
			dirty = s.handleEvents() || dirty
		}
	}
}

// nextTime is when something happens next: a submission, a pod event, the engine's wakeup, a
// measurement (while pods run and jobs wait).
func (s *sim) nextTime() (time.Time, bool) {
	var at time.Time
	take := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	if s.next < len(s.trace) {
		take(s.trace[s.next].Submit)
	}
	if len(s.events) > 0 {
		take(s.events[0].at)
	}
	if s.wake.After(s.now) {
		take(s.wake)
	}
	if s.decideNow {
		take(s.now)
	}
	if at.IsZero() && !s.waiting() {
		return at, false // only measurements are left, and no one waits for what they may free
	}
	if s.measuring && s.running() {
		if s.nextTick.IsZero() || s.nextTick.Before(s.now) {
			// Measurements run every interval from the start; none while nothing runs.
			iv := s.cfg.Settings.Idle.Interval
			s.nextTick = s.res.Start.Add((s.now.Sub(s.res.Start)/iv + 1) * iv)
		}
		take(s.nextTick)
	} else {
		s.nextTick = time.Time{}
	}
	return at, !at.IsZero()
}

// handleEvents handles the pod events due now; it returns whether there was one.
func (s *sim) handleEvents() bool {
	any := false
	for len(s.events) > 0 && !s.events[0].at.After(s.now) {
		e := s.pop()
		any = true
		j, pod := e.j, e.pod
		switch e.kind {
		case evStart:
			if pod.DeletionTimestamp == nil {
				s.start(j, pod, s.now)
			}
		case evEnd:
			if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning {
				continue // being stopped: the deletion wins
			}
			s.stopRun(j, false)
			pod.Status.Phase = corev1.PodSucceeded
			if e.deadline { // as the kubelet stops a pod past its activeDeadlineSeconds
				pod.Status.Phase, pod.Status.Reason = corev1.PodFailed, "DeadlineExceeded"
			}
			s.release(j, pod)
		case evGone:
			s.release(j, pod)
			j.pods = slices.DeleteFunc(j.pods, func(p *simPod) bool { return p == pod })
			if len(j.pods) == 0 && slices.Contains(s.orphans, j) {
				s.orphans = slices.DeleteFunc(s.orphans, func(o *simJob) bool { return o == j })
				s.forget(j)
			}
		case evCancel:
			if j.out.End == nil {
				s.cancel(j)
			}
		}
	}
	return any
}

// cancel deletes j as its owner would: it leaves the queue, and its pods, which the operator
// then deletes, hold their GPUs until they are gone.
func (s *sim) cancel(j *simJob) {
	s.stopRun(j, false)
	j.out.Phase, j.out.End = PhaseDeleted, ptr.To(s.now)
	s.active = slices.DeleteFunc(s.active, func(o *simJob) bool { return o == j })
	s.done = append(s.done, j)
	if len(j.pods) == 0 {
		s.forget(j)
		return
	}
	s.orphans = append(s.orphans, j)
}

// forget drops what a job that left the cluster no longer needs (a month's finished jobs would
// otherwise keep their CvlabJobs): only its outcome stays.
func (s *sim) forget(j *simJob) {
	delete(s.byUID, j.job.UID)
	j.job, j.pods, j.profile = nil, nil, nil
}

// PhaseDeleted is the outcome of a job its owner deleted (TraceJob.Cancel).
const PhaseDeleted = "Deleted"

// deletePod deletes one of j's pods (its grace period applies): it stops after StopDelay, at
// most its grace period. A run it cuts is lost.
func (s *sim) deletePod(j *simJob, name string) *simPod {
	i := slices.IndexFunc(j.pods, func(p *simPod) bool { return p.Name == name })
	if i < 0 {
		return nil
	}
	pod := j.pods[i]
	if pod.DeletionTimestamp != nil {
		return pod
	}
	pod.DeletionTimestamp = ptr.To(metav1.NewTime(s.now))
	stop := j.grace
	if s.cfg.StopDelay > 0 {
		stop = min(stop, s.cfg.StopDelay)
	}
	if pod.Status.Phase == corev1.PodRunning {
		s.stopRun(j, true)
	} else {
		stop = 0 // never ran: nothing to stop
	}
	s.push(event{at: s.now.Add(stop), kind: evGone, j: j, pod: pod})
	return pod
}

// decide runs one decision of the operator's loop (controllers.QueueReconciler.Reconcile):
// observe, decide, remember, then apply. It returns whether the decision changed pods (the
// operator's watches then ask for another decision).
func (s *sim) decide() bool {
	s.res.Decisions++
	jobs, pods := s.jobBuf[:0], s.podBuf[:0]
	for _, j := range s.active {
		jobs = append(jobs, j.job)
		for _, p := range j.pods {
			pods = append(pods, p.Pod)
		}
	}
	for _, j := range s.orphans {
		for _, p := range j.pods {
			pods = append(pods, p.Pod)
		}
	}
	s.jobBuf, s.podBuf = jobs, pods
	obs := observe.Observe(observe.Input{Jobs: jobs, Pods: pods, Nodes: s.cfg.Nodes, Settings: s.cfg.Settings, Ledger: s.ledger, Now: s.now,
		Reuse: s.lastObs}) // the last decision is done with
	snap := obs.Snapshot(s.now)
	snap.Reuse = s.lastOrder
	d := queue.Decide(snap)
	s.lastOrder = d.Order
	s.ledger.Learn(obs)
	s.ledger.Decided(obs, d, s.now)
	changed := s.apply(obs, d)
	s.lastObs = obs
	if d.Blocking {
		if v := obs.ByKey[d.Head]; v != nil {
			s.byUID[v.Job.UID].blocked = true
		}
	}
	s.wake = d.Wakeup
	for _, t := range obs.Wakeups {
		if s.wake.IsZero() || t.Before(s.wake) {
			s.wake = t
		}
	}
	for _, r := range s.ledger.Reserved { // a promise that outlasts its timeout is dropped then
		if t := r.Since.Add(observe.ReservationTimeout + time.Nanosecond); s.wake.IsZero() || t.Before(s.wake) {
			s.wake = t
		}
	}
	return changed
}

// apply carries a decision out in memory, in the order of controllers.QueueReconciler.apply:
// the idle warnings and suspensions, evictions (status first), unfinished evictions, other
// deletions, pod creations, then the statuses.
func (s *sim) apply(obs *observe.Observation, d queue.Decision) bool {
	now := s.now
	p := lifecycle.Plan(obs, d)
	for _, j := range s.fresh {
		if e := p.Entries[j.job.Namespace+"/"+j.job.Name]; e != nil {
			j.out.Ordinal = e.FirstGPU
		}
	}
	s.fresh = s.fresh[:0]
	warnings, suspensions := lifecycle.IdleWarnings(obs, s.cfg.Settings.Idle, now)
	for _, ev := range suspensions {
		if !slices.ContainsFunc(p.Evictions, func(o observe.Eviction) bool { return o.View == ev.View }) {
			p.Evictions = append(p.Evictions, ev)
		}
	}
	for _, w := range warnings {
		s.ledger.Warned(w.View.Job.UID)
	}
	changed := false
	for _, ev := range p.Evictions {
		v := ev.View
		j := s.byUID[v.Job.UID]
		want := lifecycle.EvictedStatus(v, p.Entries[v.Key()], obs.Cluster, s.ledger.Backoff[v.Job.UID].Until, ev, now)
		j.job.Status = *want
		v.Evicted = true
		pod := s.deletePod(j, v.Live.Name)
		s.ledger.Evicting(v.Job.UID, pod.Name)
		changed = true
		j.waitSince = now
		j.out.Preemptions++
		switch {
		case ev.Reason == cvlabv1alpha1.EventGPUReclaimed: // --idle-action=Suspend
			s.res.IdleReclaims++
			s.ledger.HoldBack(v.Job.UID, now.Add(s.cfg.Settings.Idle.After))
		case !ev.IdleSince.IsZero():
			s.res.IdleReclaims++
		default:
			s.res.Preemptions++
		}
	}
	for _, u := range p.Unfinished {
		if j := s.byUID[u.Job]; j != nil && s.deletePod(j, u.Pod.Name) != nil {
			s.ledger.Evicting(u.Job, u.Pod.Name)
			changed = true
		}
	}
	for _, pod := range p.Deletions {
		if uid, ok := observe.JobOf(pod); ok && s.byUID[uid] != nil {
			s.deletePod(s.byUID[uid], pod.Name)
			changed = true
		}
	}
	for _, c := range p.Creations {
		v := c.View
		j := s.byUID[v.Job.UID]
		n := v.LastAdmission + 1
		pod := s.newPod(j, n, c.Node)
		v.LastAdmission, v.Node = n, c.Node
		s.ledger.Expect(v.Job.UID, lifecycle.PodName(v.Job, v.LastAdmission), c.Node, now)
		v.Phase = cvlabv1alpha1.PhaseAdmitted
		s.push(event{at: now.Add(s.cfg.StartDelay), kind: evStart, j: j, pod: pod})
		changed = true
	}
	finished := false
	for _, v := range obs.Views {
		if v.Evicted || !s.cfg.RenderAll && settled(v) {
			continue
		}
		j := s.byUID[v.Job.UID]
		want := lifecycle.DesiredStatus(v, p.Entries[v.Key()], obs.Cluster, s.ledger.Backoff[v.Job.UID].Until, now)
		if want != v.Cur {
			j.job.Status = *want
		}
		if observe.IsFinished(want) {
			j.out.Phase = string(want.Phase)
			j.out.End = ptr.To(now)
			finished = true
		}
	}
	if finished { // finished jobs leave the queue (and the input)
		s.active = slices.DeleteFunc(s.active, func(j *simJob) bool {
			if !observe.IsFinished(&j.job.Status) {
				return false
			}
			for _, pod := range j.pods {
				s.release(j, pod)
			}
			s.done = append(s.done, j)
			s.forget(j)
			return true
		})
	}
	return changed
}

// settled tells whether v stays where its status says (waiting, or running the same pod): its
// status would change in its place and sentences only.
func settled(v *observe.Job) bool {
	return v.Phase == v.Cur.Phase && (v.Phase == cvlabv1alpha1.PhaseQueued || v.Phase == cvlabv1alpha1.PhaseRunning) &&
		v.Disruption == "" && v.StartErr == nil && v.Cur.Admissions == v.LastAdmission && v.Cur.ObservedGeneration == v.Job.Generation
}

// measure takes one round of GPU samples into the ledger, as the operator's measurer and
// measuredRound do after a decision: each running job's profile at now. It returns whether a
// job's idle stage changed (then the operator's next decision differs from the last one).
func (s *sim) measure() bool {
	obs := s.lastObs
	if obs == nil {
		return false
	}
	set := s.cfg.Settings.Idle
	samples := map[types.UID]observe.GPUSample{}
	for _, v := range obs.Views {
		if v.Live == nil || v.Phase != cvlabv1alpha1.PhaseRunning {
			continue
		}
		j := s.byUID[v.Job.UID]
		if j == nil {
			continue // finished since
		}
		pct := j.utilization(s.now, s.cfg.ProfileStep)
		if pct < 0 {
			continue // no series: unknown
		}
		samples[v.Job.UID] = observe.GPUSample{Percent: pct, MemoryUsedMiB: -1, Window: set.Interval, At: s.now}
	}
	s.ledger.Measured(obs, samples)
	for _, v := range obs.Views {
		if v.Live == nil || v.Phase != cvlabv1alpha1.PhaseRunning {
			continue
		}
		was := observe.IdleActive
		if v.GPU != nil {
			was = v.GPU.Stage
		}
		t, ok := s.ledger.Idle[v.Job.UID]
		if ok && t.Pod == v.Live.Name && set.Stage(t, v.GPU != nil && v.GPU.Exempt) != was {
			return true
		}
	}
	return false
}

// utilization is j's GPUs' utilisation at now (fakedcgm.ValueAt of its profile from its run's
// start), -1 when there is no series; busy without a profile.
func (j *simJob) utilization(now time.Time, step time.Duration) float64 {
	if j.profile == nil {
		return fakedcgm.DefaultUtilization
	}
	return fakedcgm.ValueAt(j.profile, j.runStart, now, step)
}

func (s *sim) running() bool {
	for _, j := range s.active {
		if !j.runStart.IsZero() {
			return true
		}
	}
	return false
}

func (s *sim) waiting() bool {
	for _, j := range s.active {
		if j.t.GPUs > 0 && j.runStart.IsZero() {
			return true
		}
	}
	return false
}

// advance moves the clock to at, sampling the timeline on the way.
func (s *sim) advance(at time.Time) {
	for ; s.sampleAt.Before(at); s.sampleAt = s.sampleAt.Add(s.cfg.Step) {
		s.sample(s.sampleAt)
	}
	if at.After(s.now) {
		s.now = at
	}
}

// sample records the timeline at t (the state since the last event).
func (s *sim) sample(t time.Time) {
	p := TimelinePoint{At: t, ByUser: map[string]int32{}, Capacity: s.capacity}
	for u, g := range s.held {
		if g > 0 {
			p.ByUser[u] = g
			p.Busy += g
		}
	}
	thr := float64(s.cfg.Settings.Idle.Threshold)
	var waiters []string
	for _, j := range s.active {
		job := j.job
		switch {
		case !j.runStart.IsZero():
			if s.measuring {
				if u := j.utilization(t, s.cfg.ProfileStep); u >= 0 && u < thr {
					p.Idle += j.t.GPUs
				}
			}
		case job.Spec.GPUs > 0 && job.Status.Phase != cvlabv1alpha1.PhaseAdmitted:
			p.Waiting++
			if !slices.Contains(waiters, j.t.User) {
				waiters = append(waiters, j.t.User)
			}
		}
	}
	s.res.Timeline = append(s.res.Timeline, p)
	if len(waiters) >= 2 {
		x := make([]float64, len(waiters))
		for i, u := range waiters {
			x[i] = float64(s.held[u])
		}
		s.fairSum += jain(x)
		s.fairPoints++
	}
}
