package controllers

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// clusterView is the GPU capacity as observed at the start of a decision.
type clusterView struct {
	// nodeAware is true when some selected node advertises nvidia.com/gpu: jobs are then placed
	// on Ready nodes. Otherwise the queue is a pool of --gpu-capacity GPUs.
	nodeAware bool
	nodes     []queue.Node
	// hostnames maps a node name to its kubernetes.io/hostname label, used in the pod's affinity.
	hostnames map[string]string
	// busy are GPUs held outside active jobs, by node ("" in pool mode or when unbound);
	// terminating the part of them held by the queue's own pods being stopped.
	busy, terminating map[string]int32
	// foreign are GPUs held by pods the operator does not own.
	foreign int32
	// up tells, for every node that exists, whether it is Ready and schedulable.
	up map[string]bool
}

// jobView is one job as observed at the start of a decision.
type jobView struct {
	job *cvlabv1alpha1.CvlabJob
	// cur is the job's current status (our last write, or the cache's).
	cur *cvlabv1alpha1.CvlabJobStatus
	// live is the job's current pod (not being deleted), if any.
	live *corev1.Pod
	// node is where the job's GPUs are when it holds them.
	node string
	// phase is where the job stands now, before this decision's admissions.
	phase cvlabv1alpha1.JobPhase
	// finishReason and finishMsg explain a job that finished in this observation.
	finishReason, finishMsg string
	// lastAdmission is the highest admission number seen in status or on pods.
	lastAdmission int32
	// startErr is why its pod could not be created in this decision.
	startErr error
	// evicted is set when this decision stops its pod and requeues it; requeueMsg says why.
	evicted    bool
	requeueMsg string
	preemptor  string
	// evictionVoid is set when the pod of an eviction written in status ended on its own before
	// it was stopped.
	evictionVoid bool
	// dying is the pod of the job's last admission when it is being deleted or was lost to its
	// node; disruption says how the node lost it (the job is requeued).
	dying      *corev1.Pod
	disruption string
	// frozen jobs are left as they are, out of the queue's order (their pods' GPUs count as
	// busy), until their pod is gone: someone else is deleting it, or the job is invalid but its
	// pod was started before.
	frozen bool
	// invalid says what is wrong with a stored spec that the CRD's validation would refuse today.
	invalid string
}

func (v *jobView) key() string { return v.job.Namespace + "/" + v.job.Name }

// eviction stops a job's pod and puts the job back in the queue.
type eviction struct {
	view *jobView
	// reason is the event reason (Preempted, Unschedulable); message the sentence for the owner.
	reason, message string
	preemptor       *jobView
	node            string
}

// unfinishedEviction is a pod to stop because its job's status already says it was evicted.
type unfinishedEviction struct {
	job types.UID
	pod *corev1.Pod
}

// observation is everything one decision reads.
type observation struct {
	views    []*jobView
	byKey    map[string]*jobView
	cluster  clusterView
	toDelete []*corev1.Pod
	// requeues are admitted jobs whose pod stayed unschedulable too long.
	requeues []eviction
	// unfinishedEvictions are evictions written in status whose pod was not stopped yet.
	unfinishedEvictions []unfinishedEviction
	// wakeups are times at which the decision changes by itself (unschedulable deadlines).
	wakeups []time.Time
}

// observe reads the cluster into views. jobs and pods are the caches' own objects: read only.
func (r *QueueReconciler) observe(jobs []*cvlabv1alpha1.CvlabJob, pods []corev1.Pod, nodes []corev1.Node, now time.Time) *observation {
	obs := &observation{byKey: make(map[string]*jobView, len(jobs))}
	byUID := make(map[types.UID]*cvlabv1alpha1.CvlabJob, len(jobs))
	for i := range jobs {
		byUID[jobs[i].UID] = jobs[i]
	}
	r.writtenMu.Lock()
	forgetGone(r.written, byUID)
	r.writtenMu.Unlock()
	r.writer.forget(func(uid types.UID) bool { _, ok := byUID[uid]; return ok })
	forgetGone(r.expected, byUID)
	forgetGone(r.evicted, byUID)
	forgetGone(r.reserved, byUID)
	forgetGone(r.backoff, byUID)
	forgetGone(r.podNode, byUID)

	obs.cluster = r.observeNodes(nodes)
	podsOf := map[types.UID][]*corev1.Pod{}
	for i := range pods {
		p := &pods[i]
		ref := metav1.GetControllerOf(p)
		if ref != nil && ref.Kind == "CvlabJob" && ref.APIVersion == cvlabv1alpha1.GroupVersion.String() {
			if _, ok := byUID[ref.UID]; ok {
				podsOf[ref.UID] = append(podsOf[ref.UID], p)
			} else if p.DeletionTimestamp == nil {
				obs.toDelete = append(obs.toDelete, p) // its job is gone
			}
			continue
		}
		if g := cluster.PodGPUs(p); g > 0 && !cluster.PodFinished(p) && p.Spec.NodeName != "" {
			obs.cluster.foreign += g
			obs.cluster.busy[obs.cluster.nodeOf(p.Spec.NodeName)] += g
		}
	}

	for i := range jobs {
		v := r.observeJob(obs, jobs[i], podsOf[jobs[i].UID], now)
		obs.views = append(obs.views, v)
		obs.byKey[v.key()] = v
	}
	return obs
}

// forgetGone drops what the loop remembers of deleted jobs.
func forgetGone[V any](m map[types.UID]V, jobs map[types.UID]*cvlabv1alpha1.CvlabJob) {
	for uid := range m {
		if _, ok := jobs[uid]; !ok {
			delete(m, uid)
		}
	}
}

// observeNodes reads capacity off the selected nodes.
func (r *QueueReconciler) observeNodes(nodes []corev1.Node) clusterView {
	c := clusterView{hostnames: map[string]string{}, busy: map[string]int32{}, terminating: map[string]int32{}, up: map[string]bool{}}
	for i := range nodes {
		n := &nodes[i]
		c.up[n.Name] = cluster.NodeSchedulable(n)
		if !r.opts.NodeSelector.Matches(labels.Set(n.Labels)) {
			continue
		}
		q, ok := n.Status.Allocatable[ResourceGPU]
		if !ok {
			continue
		}
		c.nodeAware = true
		if !cluster.NodeSchedulable(n) || q.Value() <= 0 {
			continue
		}
		c.nodes = append(c.nodes, queue.Node{Name: n.Name, GPUs: int32(q.Value())})
		c.hostnames[n.Name] = n.Name
		if h := n.Labels[corev1.LabelHostname]; h != "" {
			c.hostnames[n.Name] = h
		}
	}
	return c
}

// nodeOf is the node a pod's GPUs count on: "" in pool mode.
func (c *clusterView) nodeOf(name string) string {
	if !c.nodeAware {
		return ""
	}
	return name
}

// stopping counts the GPUs of one of the queue's pods being stopped: held until it is gone.
func (c *clusterView) stopping(p *corev1.Pod) {
	n := c.nodeOf(cluster.PodNode(p))
	c.busy[n] += cluster.PodGPUs(p)
	c.terminating[n] += cluster.PodGPUs(p)
}

// nodeCapacityKey sums up what of a node matters to the queue, to ignore heartbeat updates.
func nodeCapacityKey(n *corev1.Node) string {
	q := n.Status.Allocatable[ResourceGPU]
	return fmt.Sprintf("%v/%s/%s", cluster.NodeSchedulable(n), q.String(), labels.Set(n.Labels).String())
}

// observeJob derives where a job stands from its status and pods.
func (r *QueueReconciler) observeJob(obs *observation, job *cvlabv1alpha1.CvlabJob, pods []*corev1.Pod, now time.Time) *jobView {
	// The operator is the only writer of status: its own latest word is newer than the cache's,
	// whether written (lastWritten) or still being written (intended).
	v := &jobView{job: job, cur: &job.Status}
	if w, ok := r.writer.intended(job.UID); ok {
		v.cur = w
	} else if w, ok := r.lastWritten(job.UID); ok {
		v.cur = w
	}
	v.lastAdmission = v.cur.Admissions

	evictedPod, evicting := r.evicted[job.UID]
	seenEvicted := false
	for _, p := range pods {
		v.lastAdmission = max(v.lastAdmission, cluster.PodAdmission(p))
		// A pod that failed because its node lost it (see podDisruption) is never the job's result:
		// it counts as gone.
		gone := p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodFailed && podDisruption(p) != ""
		if evicting && p.Name == evictedPod {
			seenEvicted = p.DeletionTimestamp == nil
			gone = true // deleted by us; the cache may not show it yet
		}
		if gone {
			if v.dying == nil || cluster.PodAdmission(p) > cluster.PodAdmission(v.dying) {
				v.dying = p
			}
			if !cluster.PodFinished(p) {
				obs.cluster.stopping(p)
			}
			continue
		}
		if v.live == nil || cluster.PodAdmission(p) > cluster.PodAdmission(v.live) {
			if v.live != nil && !cluster.PodFinished(v.live) {
				obs.toDelete = append(obs.toDelete, v.live)
			}
			v.live = p
		} else if !cluster.PodFinished(p) {
			obs.toDelete = append(obs.toDelete, p)
		}
	}
	if evicting && !seenEvicted {
		delete(r.evicted, job.UID)
	}
	// Evictions are written status first (evict): a job back in Queued whose pod of that same
	// admission is still live was being evicted when the manager stopped, or the delete failed or
	// was refused because the pod had changed. Finish the eviction rather than take the job back
	// as running with a preemption counted that never happened; and if that pod ended on its own
	// meanwhile, the job ends with it and the eviction is void.
	if v.live != nil && v.cur.Phase == cvlabv1alpha1.PhaseQueued && v.cur.Admissions > 0 && cluster.PodAdmission(v.live) == v.cur.Admissions {
		if cluster.PodFinished(v.live) {
			v.evictionVoid = true
		} else {
			obs.unfinishedEvictions = append(obs.unfinishedEvictions, unfinishedEviction{job: job.UID, pod: v.live})
			obs.cluster.stopping(v.live)
			evicting = true
			v.live = nil
		}
	}
	if e, ok := r.expected[job.UID]; ok && (v.live != nil && v.live.Name == e.pod || now.Sub(e.since) > expectationTimeout) {
		delete(r.expected, job.UID)
	}
	exp, expected := r.expected[job.UID]

	if v.dying != nil && cluster.PodAdmission(v.dying) < v.lastAdmission {
		v.dying = nil // an older admission's pod
	}
	if e := job.Annotations[annotationDecodeError]; e != "" {
		v.invalid = "its stored spec does not decode: " + e
	} else if job.Spec.GPUs < 0 {
		v.invalid = fmt.Sprintf("spec.gpus is %d, it must be 0 or more", job.Spec.GPUs)
	}

	switch {
	case IsFinished(v.cur):
		v.phase = v.cur.Phase
	case v.invalid != "" && v.live == nil:
		v.phase = cvlabv1alpha1.PhaseFailed
		v.finishReason = ReasonInvalidSpec
		v.finishMsg = "invalid: " + v.invalid + " (stored before the CRD validated it); delete the job and submit it again"
	case v.invalid != "" && !cluster.PodFinished(v.live):
		// Started before: it keeps its pod, whose GPUs count as busy, until the pod ends.
		v.phase, v.frozen = v.cur.Phase, true
		obs.cluster.busy[obs.cluster.nodeOf(cluster.PodNode(v.live))] += cluster.PodGPUs(v.live)
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
			obs.toDelete = append(obs.toDelete, v.live)
			obs.cluster.stopping(v.live)
			v.live = nil
		}
	case v.live != nil:
		v.node = cluster.PodNode(v.live)
		r.podNode[job.UID] = v.node
		v.phase = cvlabv1alpha1.PhaseAdmitted
		if v.live.Status.Phase == corev1.PodRunning {
			v.phase = cvlabv1alpha1.PhaseRunning
			delete(r.backoff, job.UID)
		} else if since, ok := unschedulableSince(v.live); ok {
			if deadline := since.Add(r.opts.UnschedulableTimeout); now.Before(deadline) {
				obs.wakeups = append(obs.wakeups, deadline)
			} else {
				obs.requeues = append(obs.requeues, eviction{view: v, reason: "Unschedulable", message: fmt.Sprintf(
					"pod %s could not be scheduled for %s (%s); requeued", v.live.Name, r.opts.UnschedulableTimeout, unschedulableMessage(v.live))})
			}
		}
	case expected:
		// Created but not in the cache yet: it holds its GPUs on the node it was placed on (a
		// decision that runs before the cache shows every pod of the previous one must not
		// place another job on those GPUs).
		v.phase, v.node = cvlabv1alpha1.PhaseAdmitted, exp.node
	case evicting:
		v.phase = cvlabv1alpha1.PhaseQueued // its pod was stopped on purpose
	case v.cur.Phase == cvlabv1alpha1.PhaseAdmitted || v.cur.Phase == cvlabv1alpha1.PhaseRunning:
		// Its pod is going or gone, and not by the queue's doing.
		switch {
		case v.dying != nil && podDisruption(v.dying) != "":
			v.phase, v.disruption = cvlabv1alpha1.PhaseQueued, fmt.Sprintf("pod %s %s", v.dying.Name, podDisruption(v.dying))
		case v.dying != nil && !cluster.PodFinished(v.dying):
			v.phase, v.frozen = v.cur.Phase, true // being deleted: judged once it is gone
		case v.dying == nil && r.nodeLost(obs, v):
			node := r.podNode[job.UID]
			if node == "" {
				node = nodeFromMessage(v.cur.Message)
			}
			v.phase, v.disruption = cvlabv1alpha1.PhaseQueued, fmt.Sprintf("pod %s vanished with its node %s (%s)", v.cur.PodName, node, nodeState(obs, node))
		default:
			v.phase = cvlabv1alpha1.PhaseFailed
			v.finishReason = ReasonPodDeleted
			v.finishMsg = fmt.Sprintf("pod %s was deleted before the job finished", v.cur.PodName)
		}
	default:
		v.phase = cvlabv1alpha1.PhaseQueued
	}
	return v
}

// snapshot is the engine's input.
func (obs *observation) snapshot(r *QueueReconciler, now time.Time) queue.Snapshot {
	s := queue.Snapshot{
		Now: now, MaxHeadWait: r.opts.MaxHeadWait, Head: r.head, HeadSince: r.headSince,
		Preemption: r.opts.Preemption, MinRuntime: r.opts.MinRuntime, Capacity: r.opts.GPUCapacity,
		Reserved: map[string]string{},
	}
	if obs.cluster.nodeAware {
		s.Nodes = make([]queue.Node, 0, len(obs.cluster.nodes))
		for _, n := range obs.cluster.nodes {
			n.Busy, n.Terminating = obs.cluster.busy[n.Name], obs.cluster.terminating[n.Name]
			s.Nodes = append(s.Nodes, n)
		}
	} else {
		s.Capacity = max(r.opts.GPUCapacity, 0)
		s.PoolBusy, s.PoolTerminating = obs.cluster.busy[""], obs.cluster.terminating[""]
	}
	for _, v := range obs.views {
		if v.frozen {
			continue // its pod's GPUs count as busy until it is gone
		}
		j := queue.Job{
			Key: v.key(), User: v.job.Spec.User, Priority: v.job.Spec.Priority,
			Created: v.job.CreationTimestamp.Time, GPUs: v.job.Spec.GPUs, Node: v.node,
		}
		switch v.phase {
		case cvlabv1alpha1.PhaseQueued:
			j.State = queue.Waiting
			j.NotBefore = r.backoff[v.job.UID].until
			if res, ok := r.reserved[v.job.UID]; ok && now.Sub(res.since) <= reservationTimeout {
				s.Reserved[v.key()] = res.node
			}
		case cvlabv1alpha1.PhaseAdmitted, cvlabv1alpha1.PhaseRunning:
			j.State = queue.Holding
			if v.phase == cvlabv1alpha1.PhaseRunning && v.cur.StartTime != nil {
				j.Started = v.cur.StartTime.Time
			}
		default:
			continue
		}
		s.Jobs = append(s.Jobs, j)
	}
	return s
}

// requeueAfter is when the loop must run again with no other trigger.
func (obs *observation) requeueAfter(wakeup, now time.Time) time.Duration {
	times := append(slices.Clone(obs.wakeups), now.Add(expectationTimeout))
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

// podDisruption says how a pod was lost to its node rather than stopped by a person ("" if it
// was not): evicted by the kubelet (node pressure), or marked by the control plane before deleting
// it: the taint manager (node NotReady or unreachable), the pod GC (node deleted), an eviction
// through the API (kubectl drain), a preemption by kube-scheduler.
func podDisruption(p *corev1.Pod) string {
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

// nodeLost tells whether the node of a job whose pod vanished is gone, NotReady or cordoned: the
// pod went with it. The node is the one last seen for its pod, or after a restart the one named
// in the job's status message.
func (r *QueueReconciler) nodeLost(obs *observation, v *jobView) bool {
	node := r.podNode[v.job.UID]
	if node == "" {
		node = nodeFromMessage(v.cur.Message)
	}
	return node != "" && !obs.cluster.up[node]
}

func nodeState(obs *observation, node string) string {
	if _, ok := obs.cluster.up[node]; ok {
		return "not ready"
	}
	return "deleted"
}

var onNodeRE = regexp.MustCompile(` on node ([a-zA-Z0-9.-]+)`)

// nodeFromMessage reads the node back from an Admitted or Running job's message ("running: pod
// x-1 on node gpu-2, ...").
func nodeFromMessage(msg string) string {
	if m := onNodeRE.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	return ""
}
