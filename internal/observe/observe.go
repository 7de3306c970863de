// Package observe turns what the API server shows (CvlabJobs, pods, nodes), the operator's
// settings and its memory (a Ledger) into the engine's Snapshot and a view of each job: where it
// stands, its current pod, what must be cleaned up. It is pure: no client, no clock, no
// goroutines. The operator's decision loop and `kubectl cvlab` both call it, so that they see
// the queue the same way; the CLI passes a ledger rebuilt from the operator's written status
// and published settings (FromStatus, Published).
package observe

import (
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// AnnotationDecodeError marks a job whose stored spec does not decode (set on the informer's copy
// only, never written: see controllers/jobs.go).
const AnnotationDecodeError = "cvlab.epfl.ch/decode-error"

// Input is what one observation reads. Jobs and Pods may be the caches' own objects: they are
// only read.
type Input struct {
	Jobs  []*cvlabv1alpha1.CvlabJob
	Pods  []corev1.Pod
	Nodes []corev1.Node
	// Settings are the operator's decision flags.
	Settings Settings
	// Ledger is the decision loop's memory; only read.
	Ledger *Ledger
	// Status is the operator's latest word on a job's status, newer than the cache's (nil: the
	// job's own status).
	Status func(*cvlabv1alpha1.CvlabJob) *cvlabv1alpha1.CvlabJobStatus
	Now    time.Time
	// Reuse is an earlier observation whose memory this one may take over (nil: none). Neither
	// it, nor its snapshots, nor a decision made from them may be read afterwards: the
	// simulator, which observes tens of thousands of times a month and keeps only the last
	// observation, passes its last one; the operator, whose dashboard keeps observations, does not.
	Reuse *Observation
}

// Cluster is the GPU capacity as observed at the start of a decision.
type Cluster struct {
	// NodeAware is true when some selected node advertises nvidia.com/gpu: jobs are then placed
	// on Ready nodes. Otherwise the queue is a pool of --gpu-capacity GPUs.
	NodeAware bool
	// Nodes are the Ready, schedulable, selected GPU nodes, by name.
	Nodes []queue.Node
	// Hostnames maps a node name to its kubernetes.io/hostname label, used in the pod's affinity.
	Hostnames map[string]string
	// Busy are GPUs held outside active jobs, by node ("" in pool mode or when unbound);
	// Terminating the part of them held by the queue's own pods being stopped.
	Busy, Terminating map[string]int32
	// Foreign are GPUs held by pods the operator does not own (on any node).
	Foreign int32
	// Up tells, for every node that exists, whether it is Ready and schedulable.
	Up map[string]bool
}

// Job is one job as observed at the start of a decision.
type Job struct {
	Job *cvlabv1alpha1.CvlabJob
	// Cur is the job's current status (the operator's latest word, or the cache's).
	Cur *cvlabv1alpha1.CvlabJobStatus
	// Live is the job's current pod (not being deleted), if any.
	Live *corev1.Pod
	// Node is where the job's GPUs are when it holds them.
	Node string
	// Phase is where the job stands now, before this decision's admissions.
	Phase cvlabv1alpha1.JobPhase
	// FinishReason (a condition reason) and FinishMsg explain a job that finished in this
	// observation.
	FinishReason, FinishMsg string
	// LastAdmission is the highest admission number seen in status or on pods.
	LastAdmission int32
	// EvictionVoid is set when the pod of an eviction written in status ended on its own before
	// it was stopped.
	EvictionVoid bool
	// Dying is the pod of the job's last admission when it is being deleted or was lost to its
	// node; Disruption says how the node lost it (the job is requeued), "" when it was not.
	Dying      *corev1.Pod
	Disruption string
	// Frozen jobs are left as they are, out of the queue's order (their pods' GPUs count as
	// busy), until their pod is gone: someone else is deleting it, or the job is invalid but its
	// pod was started before.
	Frozen bool
	// Invalid says what is wrong with a stored spec that the CRD's validation would refuse today.
	Invalid string
	// GPU is what the job's live pod's GPUs did, when measured (idle.go); nil: unknown.
	GPU *JobIdle

	// Set by the decision loop while it acts on the decision.
	// StartErr is why its pod could not be created in this decision.
	StartErr error
	// Evicted is set when this decision stops its pod and requeues it.
	Evicted bool

	// What the ledger learns from this observation (Ledger.Learn).
	expectationDone, evictionDone bool
	// key is Key, set by Observe.
	key string
}

// Key is the job's "namespace/name" (made once per observation: a decision asks it of every job
// several times).
func (v *Job) Key() string {
	if v.key != "" {
		return v.key
	}
	return v.Job.Namespace + "/" + v.Job.Name
}

// Eviction stops a job's pod and puts the job back in the queue.
type Eviction struct {
	View *Job
	// Reason is the event reason (cvlabv1alpha1.EventPreempted, EventUnschedulable); Message the
	// sentence for the owner.
	Reason, Message string
	Preemptor       *Job
	Node            string
	// IdleSince is set when the job is evicted for its idle GPUs (a reclaim or a suspension):
	// since when they were idle.
	IdleSince time.Time
}

// UnfinishedEviction is a pod to stop because its job's status already says it was evicted.
type UnfinishedEviction struct {
	Job types.UID
	Pod *corev1.Pod
}

// Observation is everything one decision reads.
type Observation struct {
	Views   []*Job
	ByKey   map[string]*Job
	Cluster Cluster
	// ToDelete are pods to delete: their job is gone, suspended, or has a newer pod.
	ToDelete []*corev1.Pod
	// Requeues are admitted jobs whose pod stayed unschedulable too long.
	Requeues []Eviction
	// UnfinishedEvictions are evictions written in status whose pod was not stopped yet.
	UnfinishedEvictions []UnfinishedEviction
	// Wakeups are times at which the decision changes by itself (unschedulable deadlines).
	Wakeups []time.Time

	settings Settings
	ledger   *Ledger
	now      time.Time
	byUID    map[types.UID]*cvlabv1alpha1.CvlabJob

	// Memory kept for an observation that reuses this one (Input.Reuse): its views and pods by
	// job, and its last snapshot's (snapped), which the next observation's first snapshot takes
	// (spare).
	views          []Job
	gpus           []JobIdle // where the views' GPU point, filled in chunks
	podsOf         map[types.UID][]*corev1.Pod
	snapped, spare snapshotMemory
}

// snapshotMemory is a snapshot's memory, for reuse.
type snapshotMemory struct {
	jobs     []queue.Job
	reserved map[string]string
}

// Observe reads the cluster into views.
func Observe(in Input) *Observation {
	if in.Ledger == nil {
		in.Ledger = NewLedger()
	}
	obs := in.Reuse
	if obs == nil {
		obs = &Observation{ByKey: make(map[string]*Job, len(in.Jobs)), byUID: make(map[types.UID]*cvlabv1alpha1.CvlabJob, len(in.Jobs)),
			podsOf: map[types.UID][]*corev1.Pod{}}
	} else {
		clear(obs.ByKey)
		clear(obs.byUID)
		clear(obs.podsOf)
		*obs = Observation{ByKey: obs.ByKey, byUID: obs.byUID, podsOf: obs.podsOf, views: obs.views, gpus: obs.gpus[:0],
			spare: obs.snapped, Views: obs.Views[:0], ToDelete: obs.ToDelete[:0], Requeues: obs.Requeues[:0],
			UnfinishedEvictions: obs.UnfinishedEvictions[:0], Wakeups: obs.Wakeups[:0]}
	}
	obs.settings, obs.ledger, obs.now = in.Settings, in.Ledger, in.Now
	for _, j := range in.Jobs {
		obs.byUID[j.UID] = j
	}
	obs.Cluster = ObserveNodes(in.Nodes, in.Settings.selector())
	podsOf := obs.podsOf
	for i := range in.Pods {
		p := &in.Pods[i]
		if uid, ok := JobOf(p); ok {
			if _, ok := obs.byUID[uid]; ok {
				podsOf[uid] = append(podsOf[uid], p)
				continue
			}
			// Its job is gone: it is stopped, and holds its GPUs until it is gone too.
			if p.DeletionTimestamp == nil {
				obs.ToDelete = append(obs.ToDelete, p)
			}
			if !cluster.PodFinished(p) {
				obs.Cluster.stopping(p)
			}
			continue
		}
		if g := cluster.PodGPUs(p); g > 0 && !cluster.PodFinished(p) && p.Spec.NodeName != "" {
			obs.Cluster.Foreign += g
			obs.Cluster.Busy[obs.Cluster.nodeOf(p.Spec.NodeName)] += g
		}
	}
	// The views in one allocation: a decision observes every job.
	if obs.views == nil || cap(obs.views) < len(in.Jobs) {
		obs.views = make([]Job, len(in.Jobs))
		obs.Views = make([]*Job, 0, len(in.Jobs))
	}
	views := obs.views[:len(in.Jobs)]
	for i, j := range in.Jobs {
		cur := &j.Status
		if in.Status != nil {
			cur = in.Status(j)
		}
		v := obs.observeJob(&views[i], j, cur, podsOf[j.UID], in.Now)
		obs.observeIdle(v)
		obs.Views = append(obs.Views, v)
		obs.ByKey[v.Key()] = v
	}
	return obs
}

// JobOf tells the UID of the CvlabJob that controls a pod, if one does.
func JobOf(p *corev1.Pod) (types.UID, bool) {
	// metav1.GetControllerOf without its copy: a decision asks it of every pod.
	for i := range p.OwnerReferences {
		if ref := &p.OwnerReferences[i]; ref.Controller != nil && *ref.Controller {
			if ref.Kind == "CvlabJob" && ref.APIVersion == jobAPIVersion {
				return ref.UID, true
			}
			return "", false
		}
	}
	return "", false
}

// jobAPIVersion is the CvlabJob's apiVersion, made once.
var jobAPIVersion = cvlabv1alpha1.GroupVersion.String()

// ObserveNodes reads capacity off the selected nodes.
func ObserveNodes(nodes []corev1.Node, selector labels.Selector) Cluster {
	c := Cluster{Hostnames: map[string]string{}, Busy: map[string]int32{}, Terminating: map[string]int32{}, Up: map[string]bool{}}
	for i := range nodes {
		n := &nodes[i]
		c.Up[n.Name] = cluster.NodeSchedulable(n)
		if !selector.Matches(labels.Set(n.Labels)) {
			continue
		}
		q, ok := n.Status.Allocatable[cluster.ResourceGPU]
		if !ok {
			continue
		}
		c.NodeAware = true
		if !cluster.NodeSchedulable(n) || q.Value() <= 0 {
			continue
		}
		c.Nodes = append(c.Nodes, queue.Node{Name: n.Name, GPUs: int32(q.Value())})
		c.Hostnames[n.Name] = n.Name
		if h := n.Labels[corev1.LabelHostname]; h != "" {
			c.Hostnames[n.Name] = h
		}
	}
	slices.SortFunc(c.Nodes, func(a, b queue.Node) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return c
}

// nodeOf is the node a pod's GPUs count on: "" in pool mode.
func (c *Cluster) nodeOf(name string) string {
	if !c.NodeAware {
		return ""
	}
	return name
}

// stopping counts the GPUs of one of the queue's pods being stopped: held until it is gone.
func (c *Cluster) stopping(p *corev1.Pod) {
	n := c.nodeOf(cluster.PodNode(p))
	c.Busy[n] += cluster.PodGPUs(p)
	c.Terminating[n] += cluster.PodGPUs(p)
}

// observeJob derives where a job stands from its status and pods.
func (obs *Observation) observeJob(v *Job, job *cvlabv1alpha1.CvlabJob, cur *cvlabv1alpha1.CvlabJobStatus, pods []*corev1.Pod, now time.Time) *Job {
	l := obs.ledger
	key := v.key // a reused view of the same job (Input.Reuse) keeps its key
	if v.Job != job || key == "" {
		key = job.Namespace + "/" + job.Name
	}
	*v = Job{Job: job, Cur: cur, key: key}
	v.LastAdmission = v.Cur.Admissions

	evictedPod, evicting := l.Evicted[job.UID]
	seenEvicted := false
	for _, p := range pods {
		v.LastAdmission = max(v.LastAdmission, cluster.PodAdmission(p))
		// A pod that failed because its node lost it (see PodDisruption) is never the job's result:
		// it counts as gone.
		gone := p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodFailed && PodDisruption(p) != ""
		if evicting && p.Name == evictedPod {
			seenEvicted = p.DeletionTimestamp == nil
			gone = true // deleted by us; the cache may not show it yet
		}
		if gone {
			if v.Dying == nil || cluster.PodAdmission(p) > cluster.PodAdmission(v.Dying) {
				v.Dying = p
			}
			if !cluster.PodFinished(p) {
				obs.Cluster.stopping(p)
			}
			continue
		}
		if v.Live == nil || cluster.PodAdmission(p) > cluster.PodAdmission(v.Live) {
			if v.Live != nil && !cluster.PodFinished(v.Live) {
				obs.ToDelete = append(obs.ToDelete, v.Live)
			}
			v.Live = p
		} else if !cluster.PodFinished(p) {
			obs.ToDelete = append(obs.ToDelete, p)
		}
	}
	if evicting && !seenEvicted {
		v.evictionDone, evicting = true, false
	}
	// Evictions are written status first: a job back in Queued whose pod of that same admission
	// is still live was being evicted when the manager stopped, or the delete failed or was
	// refused because the pod had changed. Finish the eviction rather than take the job back as
	// running with a preemption counted that never happened; and if that pod ended on its own
	// meanwhile, the job ends with it and the eviction is void.
	if v.Live != nil && v.Cur.Phase == cvlabv1alpha1.PhaseQueued && v.Cur.Admissions > 0 && cluster.PodAdmission(v.Live) == v.Cur.Admissions {
		if cluster.PodFinished(v.Live) {
			v.EvictionVoid = true
		} else {
			obs.UnfinishedEvictions = append(obs.UnfinishedEvictions, UnfinishedEviction{Job: job.UID, Pod: v.Live})
			obs.Cluster.stopping(v.Live)
			evicting = true
			v.Live = nil
		}
	}
	exp, expected := l.Expected[job.UID]
	if expected && (v.Live != nil && v.Live.Name == exp.Pod || now.Sub(exp.Since) > ExpectationTimeout) {
		v.expectationDone, expected = true, false
	}

	if v.Dying != nil && cluster.PodAdmission(v.Dying) < v.LastAdmission {
		v.Dying = nil // an older admission's pod
	}
	if e := job.Annotations[AnnotationDecodeError]; e != "" {
		v.Invalid = "its stored spec does not decode: " + e
	} else if job.Spec.GPUs < 0 {
		v.Invalid = fmt.Sprintf("spec.gpus is %d, it must be 0 or more", job.Spec.GPUs)
	}

	switch {
	case IsFinished(v.Cur):
		v.Phase = v.Cur.Phase
	case v.Invalid != "" && v.Live == nil:
		v.Phase = cvlabv1alpha1.PhaseFailed
		v.FinishReason = cvlabv1alpha1.ReasonInvalidSpec
		v.FinishMsg = "invalid: " + v.Invalid + " (stored before the CRD validated it); delete the job and submit it again"
	case v.Invalid != "" && !cluster.PodFinished(v.Live):
		// Started before: it keeps its pod, whose GPUs count as busy, until the pod ends.
		v.Phase, v.Frozen = v.Cur.Phase, true
		obs.Cluster.Busy[obs.Cluster.nodeOf(cluster.PodNode(v.Live))] += cluster.PodGPUs(v.Live)
	case v.Live != nil && v.Live.Status.Phase == corev1.PodSucceeded:
		v.Phase = cvlabv1alpha1.PhaseSucceeded
		v.FinishReason, v.FinishMsg = cvlabv1alpha1.ReasonSucceeded, fmt.Sprintf("pod %s succeeded", v.Live.Name)
	case v.Live != nil && v.Live.Status.Phase == corev1.PodFailed:
		v.Phase = cvlabv1alpha1.PhaseFailed
		v.FinishReason, v.FinishMsg = cvlabv1alpha1.ReasonFailed, PodFailure(v.Live)
		if v.Live.Status.Reason == "DeadlineExceeded" {
			v.FinishReason = cvlabv1alpha1.ReasonDeadlineExceeded
			v.FinishMsg = fmt.Sprintf("pod %s was stopped after its deadline", v.Live.Name)
			if t := job.Spec.Timeout; t != nil {
				v.FinishMsg = fmt.Sprintf("pod %s was stopped after the job's timeout of %s", v.Live.Name, t.Duration)
			}
		}
	case job.Spec.Suspend:
		v.Phase = cvlabv1alpha1.PhaseSuspended
		if v.Live != nil {
			obs.ToDelete = append(obs.ToDelete, v.Live)
			obs.Cluster.stopping(v.Live)
			v.Live = nil
		}
	case v.Live != nil:
		v.Node = cluster.PodNode(v.Live)
		v.Phase = cvlabv1alpha1.PhaseAdmitted
		if v.Live.Status.Phase == corev1.PodRunning {
			v.Phase = cvlabv1alpha1.PhaseRunning
		} else if since, ok := unschedulableSince(v.Live); ok {
			timeout := obs.settings.UnschedulableTimeout
			if deadline := since.Add(timeout); now.Before(deadline) {
				obs.Wakeups = append(obs.Wakeups, deadline)
			} else {
				obs.Requeues = append(obs.Requeues, Eviction{View: v, Reason: cvlabv1alpha1.EventUnschedulable, Message: fmt.Sprintf(
					"pod %s could not be scheduled for %s (%s); requeued", v.Live.Name, timeout, unschedulableMessage(v.Live))})
			}
		}
	case expected:
		// Created but not in the cache yet: it holds its GPUs on the node it was placed on (a
		// decision that runs before the cache shows every pod of the previous one must not
		// place another job on those GPUs). A reader of the operator's status (FromStatus) that
		// cannot see the pod takes the status's word for whether it runs.
		v.Phase, v.Node = cvlabv1alpha1.PhaseAdmitted, exp.Node
		if v.Cur.Phase == cvlabv1alpha1.PhaseRunning && v.Cur.PodName == exp.Pod {
			v.Phase = cvlabv1alpha1.PhaseRunning
		}
	case evicting:
		v.Phase = cvlabv1alpha1.PhaseQueued // its pod was stopped on purpose
	case v.Cur.Phase == cvlabv1alpha1.PhaseAdmitted || v.Cur.Phase == cvlabv1alpha1.PhaseRunning:
		// Its pod is going or gone, and not by the queue's doing.
		node := obs.lastNode(v)
		switch {
		case v.Dying != nil && PodDisruption(v.Dying) != "":
			v.Phase, v.Disruption = cvlabv1alpha1.PhaseQueued, fmt.Sprintf("pod %s %s", v.Dying.Name, PodDisruption(v.Dying))
		case v.Dying != nil && !cluster.PodFinished(v.Dying):
			v.Phase, v.Frozen = v.Cur.Phase, true // being deleted: judged once it is gone
		case v.Dying == nil && node != "" && !obs.Cluster.Up[node]:
			v.Phase, v.Disruption = cvlabv1alpha1.PhaseQueued, fmt.Sprintf("pod %s vanished with its node %s (%s)", v.Cur.PodName, node, obs.nodeState(node))
		default:
			v.Phase = cvlabv1alpha1.PhaseFailed
			v.FinishReason = cvlabv1alpha1.ReasonPodDeleted
			v.FinishMsg = fmt.Sprintf("pod %s was deleted before the job finished", v.Cur.PodName)
		}
	default:
		v.Phase = cvlabv1alpha1.PhaseQueued
	}
	return v
}

// lastNode is the node of a job's pod as last seen: by this loop, or as its status recorded it
// (after a restart).
func (obs *Observation) lastNode(v *Job) string {
	if n := obs.ledger.PodNode[v.Job.UID]; n != "" {
		return n
	}
	return v.Cur.Node
}

func (obs *Observation) nodeState(node string) string {
	if _, ok := obs.Cluster.Up[node]; ok {
		return "not ready"
	}
	return "deleted"
}

// IsFinished tells whether a job's status is terminal.
func IsFinished(st *cvlabv1alpha1.CvlabJobStatus) bool {
	return st.Phase == cvlabv1alpha1.PhaseSucceeded || st.Phase == cvlabv1alpha1.PhaseFailed
}

// Snapshot is the engine's input.
func (obs *Observation) Snapshot(now time.Time) queue.Snapshot {
	set, l := obs.settings, obs.ledger
	s := queue.Snapshot{
		Now: now, MaxHeadWait: set.MaxHeadWait, Head: l.Head, HeadSince: l.HeadSince,
		Preemption: set.Preemption, MinRuntime: set.MinRuntime, Capacity: set.GPUCapacity,
		Reserved: obs.spare.reserved,
		Jobs:     obs.spare.jobs[:0],
	}
	obs.spare = snapshotMemory{} // a second snapshot of this observation has its own
	if s.Reserved == nil {
		s.Reserved = map[string]string{}
	} else {
		clear(s.Reserved)
	}
	if s.Jobs == nil {
		s.Jobs = make([]queue.Job, 0, len(obs.Views)) // in one allocation, as the reused memory is
	}
	if obs.Cluster.NodeAware {
		s.Nodes = make([]queue.Node, 0, len(obs.Cluster.Nodes))
		for _, n := range obs.Cluster.Nodes {
			n.Busy, n.Terminating = obs.Cluster.Busy[n.Name], obs.Cluster.Terminating[n.Name]
			s.Nodes = append(s.Nodes, n)
		}
	} else {
		s.Capacity = max(set.GPUCapacity, 0)
		s.PoolBusy, s.PoolTerminating = obs.Cluster.Busy[""], obs.Cluster.Terminating[""]
	}
	for _, v := range obs.Views {
		if v.Frozen {
			continue // its pod's GPUs count as busy until it is gone
		}
		j := queue.Job{
			Key: v.Key(), User: v.Job.Spec.User, Priority: v.Job.Spec.Priority,
			Created: v.Job.CreationTimestamp.Time, GPUs: v.Job.Spec.GPUs, Node: v.Node,
		}
		switch v.Phase {
		case cvlabv1alpha1.PhaseQueued:
			j.State = queue.Waiting
			j.NotBefore, j.IdleHold = l.Backoff[v.Job.UID].Until, l.Backoff[v.Job.UID].Idle
			if res, ok := l.reservation(v.Job.UID, now); ok {
				s.Reserved[v.Key()] = res.Node
				j.IdleClaim = res.Idle
			}
			j.Reclaimed = reclaimed(v)
		case cvlabv1alpha1.PhaseAdmitted, cvlabv1alpha1.PhaseRunning:
			j.State = queue.Holding
			if v.Phase == cvlabv1alpha1.PhaseRunning && v.Cur.StartTime != nil {
				j.Started = v.Cur.StartTime.Time
			}
			// Reclaimable GPUs count as free for the queue; Suspend evicts without the engine.
			j.Idle = v.GPU != nil && v.GPU.Stage == IdleReclaimable && set.Idle.Action == IdleReclaim
		default:
			continue
		}
		s.Jobs = append(s.Jobs, j)
	}
	obs.snapped = snapshotMemory{jobs: s.Jobs, reserved: s.Reserved}
	return s
}

// reclaimed tells whether the job's idle GPUs were taken back and it was not admitted since
// (queue.Job.Reclaimed). Read from typed status, so that a restarted operator and the CLI see it.
func reclaimed(v *Job) bool {
	ev := v.Cur.LastEviction
	return ev != nil && (ev.Reason == cvlabv1alpha1.EvictionIdleReclaimed || ev.Reason == cvlabv1alpha1.EvictionIdleSuspended) &&
		ev.Admission >= v.LastAdmission
}

// RequeueAfter is when the loop must run again with no other trigger.
func (obs *Observation) RequeueAfter(wakeup, now time.Time) time.Duration {
	times := append(slices.Clone(obs.Wakeups), now.Add(ExpectationTimeout))
	if !wakeup.IsZero() {
		times = append(times, wakeup)
	}
	return max(slices.MinFunc(times, func(a, b time.Time) int { return a.Compare(b) }).Sub(now), time.Millisecond)
}

// unschedulableSince tells since when the scheduler has been failing to place a pod.
func unschedulableSince(p *corev1.Pod) (time.Time, bool) {
	if p.Spec.NodeName != "" {
		return time.Time{}, false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return c.LastTransitionTime.Time, true
		}
	}
	return time.Time{}, false
}

func unschedulableMessage(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Message != "" {
			return c.Message
		}
	}
	return "no reason given"
}

// PodDisruption says how a pod was lost to its node rather than stopped by a person ("" if it
// was not): evicted by the kubelet (node pressure), or marked by the control plane before deleting
// it: the taint manager (node NotReady or unreachable), the pod GC (node deleted), an eviction
// through the API (kubectl drain), a preemption by kube-scheduler.
func PodDisruption(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue {
			return fmt.Sprintf("was stopped by the cluster (%s: %s)", c.Reason, c.Message)
		}
	}
	if p.Status.Phase == corev1.PodFailed && p.Status.Reason == "Evicted" {
		return fmt.Sprintf("was evicted by the kubelet of node %s (%s)", p.Spec.NodeName, p.Status.Message)
	}
	return ""
}

// PodFailure explains a failed pod in a sentence.
func PodFailure(p *corev1.Pod) string {
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
