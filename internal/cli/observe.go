// Package cli is the library behind `kubectl cvlab`: it builds CvlabJobs from flags and a config
// file, and explains the queue by running the operator's own observation (internal/observe) and
// engine (internal/queue) on what it reads from the cluster. Nothing of the rule or of the
// observation is re-implemented here: what a job holds, where, and what the operator remembers
// come from observe.Observe, with the operator's memory rebuilt from its typed status fields and
// its published settings (observe.FromStatus); ranks, positions, admissions and preemptions come
// from queue.Decide. This package only reads and renders.
package cli

import (
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// Names the operator puts on its pods (controllers/pod.go). They are repeated here so that the
// CLI does not link the controller package and its dependencies.
const (
	labelJob    = cluster.LabelJob
	resourceGPU = cluster.ResourceGPU
	// ContainerName is the job's only container in its pod.
	ContainerName = "job"
)

// Cluster is what the CLI read from the API server. Pods and nodes may be unreadable (RBAC):
// PodsErr and NodesErr then say why, and the view is built without them.
type Cluster struct {
	Jobs  []cvlabv1alpha1.CvlabJob
	Pods  []corev1.Pod
	Nodes []corev1.Node
	// PodsErr and NodesErr are why pods or nodes could not be listed; nil when they were.
	PodsErr, NodesErr error
	// Published is what the operator publishes in the ConfigMap observe.PublishedName of its
	// namespace: the settings it decides with, and the head of the line with since when. Nil when
	// it could not be read: PublishedErr then says why (an operator too old to publish, another
	// namespace, RBAC).
	Published    *observe.Published
	PublishedErr error
}

// NodeInfo is one Ready GPU node as the queue sees it.
type NodeInfo struct {
	Name string
	// GPUs is its allocatable nvidia.com/gpu; Foreign those held by pods outside the queue,
	// Terminating those held by the queue's pods being stopped, Held those held by active jobs.
	GPUs, Foreign, Terminating, Held int32
}

// Free is the node's GPUs nobody holds (negative when over-committed).
func (n NodeInfo) Free() int32 { return n.GPUs - n.Foreign - n.Terminating - n.Held }

// View is the queue as the engine decides it now, with what is needed to explain it.
type View struct {
	Now time.Time
	// Settings are the settings decided with: the operator's published ones, or what overrides
	// them (the config's cluster section, flags), or the operator's defaults.
	Settings observe.Settings
	// Observation is the operator's observation of what was read (observe.Observe).
	Observation *observe.Observation
	// Snapshot is the engine's input and Decision its output.
	Snapshot queue.Snapshot
	Decision queue.Decision
	// Jobs are all jobs read, by "namespace/name"; Entries the active GPU jobs' places.
	Jobs    map[string]*cvlabv1alpha1.CvlabJob
	Entries map[string]*queue.Entry
	// Pods are the jobs' current pods (the observation's live pod), by job key.
	Pods map[string]*corev1.Pod
	// NodeAware is true when some node advertises nvidia.com/gpu (the operator then places jobs
	// on nodes); otherwise the queue is one pool of --gpu-capacity GPUs.
	NodeAware bool
	Nodes     []NodeInfo
	// NodeGPUs is the GPUs of Ready GPU nodes (the pool's size without them); Capacity the GPUs the
	// queue may hand out (NodeGPUs bounded by --gpu-capacity); CapacityKnown false when neither
	// nodes nor --gpu-capacity tell it.
	NodeGPUs, Capacity int32
	CapacityKnown      bool
	// Foreign are GPUs held by pods outside the queue, Terminating by the queue's pods being
	// stopped, Held by active jobs.
	Foreign, Terminating, Held int32
	// Budget is the GPUs the queue's jobs can hold at most now: the capacity cut falls after the
	// last job, in rank order, whose GPUs and those of the jobs above it fit in it.
	Budget int32
	// Timeouts are the jobs' spec.timeout, by key.
	Timeouts map[string]time.Duration
	// Notes are caveats worth telling (the operator's settings unread or overridden, unreadable
	// pods or nodes, an assumed capacity, a status that differs from this computation).
	Notes []string
}

// Key is a job's "namespace/name".
func Key(j *cvlabv1alpha1.CvlabJob) string { return j.Namespace + "/" + j.Name }

// Observe runs the operator's observation (observe.Observe) on what was read, with the operator's
// memory as its status fields and its published head of the line show it (observe.FromStatus),
// and the engine on the snapshot; set are the settings to decide with (see View.Settings).
func Observe(c Cluster, set observe.Settings, now time.Time) *View {
	if set.NodeSelector == nil {
		set.NodeSelector = labels.Everything()
	}
	v := &View{Now: now, Settings: set, Jobs: map[string]*cvlabv1alpha1.CvlabJob{}, Entries: map[string]*queue.Entry{},
		Pods: map[string]*corev1.Pod{}, Timeouts: map[string]time.Duration{}}
	v.Notes = append(v.Notes, settingsNotes(c, set)...)
	if c.NodesErr != nil {
		v.Notes = append(v.Notes, "cannot list nodes ("+ErrorMessage(c.NodesErr)+"): free GPUs per node are unknown")
	}
	if c.PodsErr != nil {
		v.Notes = append(v.Notes, "cannot list pods ("+ErrorMessage(c.PodsErr)+"): GPUs of pods outside the queue are unknown")
	}

	jobs := make([]*cvlabv1alpha1.CvlabJob, len(c.Jobs))
	for i := range c.Jobs {
		j := &c.Jobs[i]
		jobs[i] = j
		v.Jobs[Key(j)] = j
		if j.Spec.Timeout != nil {
			v.Timeouts[Key(j)] = j.Spec.Timeout.Duration
		}
	}
	var pub observe.Published
	if c.Published != nil {
		pub = *c.Published
	}
	obs := observe.Observe(observe.Input{Jobs: jobs, Pods: c.Pods, Nodes: c.Nodes, Settings: set,
		Ledger: observe.FromStatus(jobs, pub, now), Now: now})
	s := obs.Snapshot(now)
	v.Observation = obs
	for _, jv := range obs.Views {
		if jv.Live != nil {
			v.Pods[jv.Key()] = jv.Live
		}
	}

	// Nodes: the observation's Ready, schedulable, selected GPU nodes, with the GPUs held on each
	// outside active jobs (Busy), of which by the queue's pods being stopped (Terminating).
	cl := &obs.Cluster
	v.NodeAware = cl.NodeAware
	nodeIdx := map[string]int{}
	for _, n := range cl.Nodes {
		term := cl.Terminating[n.Name]
		nodeIdx[n.Name] = len(v.Nodes)
		v.Nodes = append(v.Nodes, NodeInfo{Name: n.Name, GPUs: n.GPUs, Foreign: cl.Busy[n.Name] - term, Terminating: term})
		v.NodeGPUs += n.GPUs
	}
	for _, j := range s.Jobs {
		if j.State != queue.Holding || j.GPUs <= 0 {
			continue
		}
		if i, ok := nodeIdx[j.Node]; ok && v.NodeAware {
			v.Nodes[i].Held += j.GPUs
		}
		v.Held += j.GPUs
	}

	// Capacity.
	if v.NodeAware {
		for _, n := range v.Nodes {
			v.Foreign += n.Foreign
			v.Terminating += n.Terminating
		}
		v.Capacity, v.CapacityKnown = v.NodeGPUs, true
		v.Budget = v.NodeGPUs - v.Foreign
		if set.GPUCapacity >= 0 {
			v.Capacity = min(v.Capacity, set.GPUCapacity)
			v.Budget = min(v.Budget, set.GPUCapacity)
		}
	} else {
		v.Terminating = cl.Terminating[""]
		v.Foreign = cl.Busy[""] - v.Terminating
		v.CapacityKnown = set.GPUCapacity >= 0
		v.Capacity = max(set.GPUCapacity, 0)
		if !v.CapacityKnown {
			// Neither GPU nodes nor --gpu-capacity: assume the pool is what is held now.
			v.Capacity = v.Held + v.Foreign + v.Terminating
			msg := "no GPU node found and the pool size is not known: pass the operator's --gpu-capacity (or set cluster.gpuCapacity in the config)"
			if c.NodesErr != nil {
				msg = "the GPU capacity is not known: pass the operator's --gpu-capacity (or set cluster.gpuCapacity in the config)"
			}
			v.Notes = append(v.Notes, msg+"; assuming "+gpus(v.Capacity))
			s.Capacity = v.Capacity
		}
		v.Budget = v.Capacity - v.Foreign
	}
	v.Snapshot = s
	v.Decision = queue.Decide(cloneSnapshot(s))
	for i := range v.Decision.Order {
		e := &v.Decision.Order[i]
		v.Entries[e.Key] = e
	}

	// Say so when the operator's last written status disagrees with this computation.
	differ := 0
	for k, e := range v.Entries {
		st := v.Jobs[k].Status
		if st.Rank == nil || int(*st.Rank) != e.Rank || e.State == queue.Waiting && !e.Admit && (st.QueuePosition == nil || int(*st.QueuePosition) != e.Position) {
			differ++
		}
	}
	if differ > 0 {
		msg := plural(differ, "job's", "jobs'") + " status differs from this computation: the operator is deciding right now"
		switch {
		case c.Published == nil:
			msg += ", or runs with other settings than " + set.String()
		case !set.Equal(c.Published.Settings):
			msg += ", or because of the settings that override its own"
		}
		v.Notes = append(v.Notes, msg)
	}
	return v
}

// settingsNotes say where the settings decided with come from, when they are not the operator's
// published ones.
func settingsNotes(c Cluster, set observe.Settings) []string {
	if c.Published == nil {
		why := "it publishes none"
		if c.PublishedErr != nil {
			why = ErrorMessage(c.PublishedErr)
		}
		using := "the operator's defaults"
		if !set.Equal(observe.DefaultSettings()) {
			using = "the config's cluster section and flags over the operator's defaults"
		}
		return []string{fmt.Sprintf("the operator's settings could not be read (%s): using %s, %s", why, using, set.String())}
	}
	if !set.Equal(c.Published.Settings) {
		return []string{fmt.Sprintf("the config's cluster section or flags override the operator's published settings: using %s (the operator runs %s)",
			set.String(), c.Published.Settings.String())}
	}
	return nil
}

// cloneSnapshot copies what Decide or a simulation may change.
func cloneSnapshot(s queue.Snapshot) queue.Snapshot {
	s.Jobs = slices.Clone(s.Jobs)
	s.Nodes = slices.Clone(s.Nodes)
	if s.Reserved != nil {
		r := make(map[string]string, len(s.Reserved))
		for k, n := range s.Reserved {
			r[k] = n
		}
		s.Reserved = r
	}
	return s
}
