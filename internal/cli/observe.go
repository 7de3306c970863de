// Package cli is the library behind `kubectl cvlab`: it builds CvlabJobs from flags and a config
// file, and explains the queue by running the operator's own engine (internal/queue) on what it
// reads from the cluster. The rule is never re-implemented here: ranks, positions, admissions and
// preemptions all come from queue.Decide; this package only observes (turns jobs, pods and nodes
// into a queue.Snapshot, the way the operator does) and renders.
package cli

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
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

// Settings are the operator's flags that change its decisions. The CLI cannot read them from the
// cluster, so they come from the config file or flags, with the operator's defaults.
type Settings struct {
	// Preemption is the operator's --preemption.
	Preemption queue.Policy
	// GPUCapacity is the operator's --gpu-capacity; negative: not set.
	GPUCapacity int32
	// NodeSelector is the operator's --gpu-node-selector; nil: every node.
	NodeSelector labels.Selector
	// MinRuntime and MaxHeadWait are the operator's --min-runtime and --max-head-wait.
	MinRuntime, MaxHeadWait time.Duration
}

// DefaultSettings are the operator's defaults.
func DefaultSettings() Settings {
	return Settings{Preemption: queue.PreemptFirstGPU, GPUCapacity: -1, NodeSelector: labels.Everything(),
		MinRuntime: 10 * time.Minute, MaxHeadWait: 30 * time.Minute}
}

// PolicyName renders a preemption policy as the operator's flag spells it.
func PolicyName(p queue.Policy) string {
	switch p {
	case queue.PreemptRank:
		return "Rank"
	case queue.PreemptNever:
		return "Never"
	}
	return "FirstGPU"
}

// Cluster is what the CLI read from the API server. Pods and nodes may be unreadable (RBAC):
// PodsErr and NodesErr then say why, and the view is built without them.
type Cluster struct {
	Jobs  []cvlabv1alpha1.CvlabJob
	Pods  []corev1.Pod
	Nodes []corev1.Node
	// PodsErr and NodesErr are why pods or nodes could not be listed; nil when they were.
	PodsErr, NodesErr error
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
	Now      time.Time
	Settings Settings
	// Snapshot is the engine's input and Decision its output.
	Snapshot queue.Snapshot
	Decision queue.Decision
	// Jobs are all jobs read, by "namespace/name"; Entries the active GPU jobs' places.
	Jobs    map[string]*cvlabv1alpha1.CvlabJob
	Entries map[string]*queue.Entry
	// Pods are the jobs' current pods, by job key.
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
	// Notes are caveats worth telling (unreadable pods or nodes, guessed capacity, a status
	// that differs from this computation).
	Notes []string
}

// Operator's sentences that reveal its in-memory state (internal/queue reasons, as written into
// status.message): the CLI reads them back so that its decision is the operator's.
var (
	reBlocking = regexp.MustCompile(`first in line, so no job ranked below it starts before it`)
	reReserved = regexp.MustCompile(`(?:preempting \d+ lower-ranked job\(s\)|waiting for the jobs it preempted to stop|waiting for GPUs being freed)(?: on node ([^;\s]+))?`)
	reBackoff  = regexp.MustCompile(`(?:backing off after a failed start until|will retry after) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)`)
	reFree     = regexp.MustCompile(`waiting: (\d+) GPUs? free`)
)

// Key is a job's "namespace/name".
func Key(j *cvlabv1alpha1.CvlabJob) string { return j.Namespace + "/" + j.Name }

// Observe turns what was read into the engine's snapshot, the way the operator's decision loop
// does (controllers/observe.go), and runs the engine on it.
func Observe(c Cluster, set Settings, now time.Time) *View {
	if set.NodeSelector == nil {
		set.NodeSelector = labels.Everything()
	}
	v := &View{Now: now, Settings: set, Jobs: map[string]*cvlabv1alpha1.CvlabJob{}, Entries: map[string]*queue.Entry{},
		Pods: map[string]*corev1.Pod{}, Timeouts: map[string]time.Duration{}}
	if c.NodesErr != nil {
		v.Notes = append(v.Notes, "cannot list nodes ("+ErrorMessage(c.NodesErr)+"): free GPUs per node are unknown")
	}
	if c.PodsErr != nil {
		v.Notes = append(v.Notes, "cannot list pods ("+ErrorMessage(c.PodsErr)+"): GPUs of pods outside the queue are unknown")
	}

	// Nodes: Ready, schedulable, selected, advertising GPUs.
	nodeIdx := map[string]int{}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		if !set.NodeSelector.Matches(labels.Set(n.Labels)) {
			continue
		}
		q, ok := n.Status.Allocatable[resourceGPU]
		if !ok {
			continue
		}
		v.NodeAware = true
		if !cluster.NodeSchedulable(n) || q.Value() <= 0 {
			continue
		}
		nodeIdx[n.Name] = len(v.Nodes)
		v.Nodes = append(v.Nodes, NodeInfo{Name: n.Name, GPUs: int32(q.Value())})
		v.NodeGPUs += int32(q.Value())
	}
	slices.SortFunc(v.Nodes, func(a, b NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	for i, n := range v.Nodes {
		nodeIdx[n.Name] = i
	}
	// add counts GPUs on a node: in pool mode on the pool, on a node the queue does not use on
	// nothing (as the operator does).
	var poolForeign, poolTerminating int32
	add := func(node string, g int32, terminating bool) {
		if !v.NodeAware {
			if terminating {
				poolTerminating += g
			} else {
				poolForeign += g
			}
			return
		}
		if i, ok := nodeIdx[node]; ok {
			if terminating {
				v.Nodes[i].Terminating += g
			} else {
				v.Nodes[i].Foreign += g
			}
		}
	}

	byUID := map[types.UID]*cvlabv1alpha1.CvlabJob{}
	for i := range c.Jobs {
		j := &c.Jobs[i]
		byUID[j.UID] = j
		v.Jobs[Key(j)] = j
		if j.Spec.Timeout != nil {
			v.Timeouts[Key(j)] = j.Spec.Timeout.Duration
		}
	}
	podsOf := map[types.UID][]*corev1.Pod{}
	for i := range c.Pods {
		p := &c.Pods[i]
		if ref := metav1.GetControllerOf(p); ref != nil && ref.Kind == "CvlabJob" && ref.APIVersion == cvlabv1alpha1.GroupVersion.String() {
			if _, ok := byUID[ref.UID]; ok {
				podsOf[ref.UID] = append(podsOf[ref.UID], p)
			}
			continue
		}
		if g := cluster.PodGPUs(p); g > 0 && !cluster.PodFinished(p) && p.Spec.NodeName != "" {
			add(p.Spec.NodeName, g, false)
		}
	}

	s := queue.Snapshot{Now: now, Capacity: set.GPUCapacity, MaxHeadWait: set.MaxHeadWait, Preemption: set.Preemption,
		MinRuntime: set.MinRuntime, Reserved: map[string]string{}}
	keys := make([]string, 0, len(v.Jobs))
	for k := range v.Jobs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	nodeOf := map[string]string{}
	for _, k := range keys {
		j := v.Jobs[k]
		// The job's current pod: the latest admission not being deleted; pods being stopped hold
		// their GPUs until they are gone.
		var live *corev1.Pod
		for _, p := range podsOf[j.UID] {
			if p.DeletionTimestamp != nil {
				if !cluster.PodFinished(p) {
					add(cluster.PodNode(p), cluster.PodGPUs(p), true)
				}
				continue
			}
			if live == nil || cluster.PodAdmission(p) > cluster.PodAdmission(live) {
				live = p
			}
		}
		if live != nil {
			v.Pods[k] = live
		}
		st := &j.Status
		if st.Phase == cvlabv1alpha1.PhaseSucceeded || st.Phase == cvlabv1alpha1.PhaseFailed {
			continue
		}
		if j.Spec.Suspend {
			if live != nil && !cluster.PodFinished(live) { // being stopped by the operator
				add(cluster.PodNode(live), cluster.PodGPUs(live), true)
			}
			continue
		}
		qj := queue.Job{Key: k, User: j.Spec.User, Priority: j.Spec.Priority, Created: j.CreationTimestamp.Time, GPUs: j.Spec.GPUs}
		switch st.Phase {
		case cvlabv1alpha1.PhaseAdmitted, cvlabv1alpha1.PhaseRunning:
			qj.State = queue.Holding
			if live != nil {
				qj.Node = cluster.PodNode(live)
			}
			if st.Phase == cvlabv1alpha1.PhaseRunning && st.StartTime != nil {
				qj.Started = st.StartTime.Time
			}
			nodeOf[k] = qj.Node
		default: // Queued, or new (no status yet), or resumed after a suspend
			qj.State = queue.Waiting
			if m := reBackoff.FindStringSubmatch(st.Message); m != nil {
				if t, err := time.Parse(time.RFC3339, m[1]); err == nil {
					qj.NotBefore = t
				}
			}
			if m := reReserved.FindStringSubmatch(st.Message); m != nil && st.Phase == cvlabv1alpha1.PhaseQueued {
				s.Reserved[k] = m[1]
			}
			if reBlocking.MatchString(st.Message) {
				// The operator's head has waited --max-head-wait already: it blocks.
				s.Head, s.HeadSince = k, now.Add(-max(set.MaxHeadWait, 0))
				s.MaxHeadWait = max(s.MaxHeadWait, 0)
			}
		}
		if qj.State == queue.Holding && qj.GPUs > 0 {
			if i, ok := nodeIdx[qj.Node]; ok && v.NodeAware {
				v.Nodes[i].Held += qj.GPUs
			}
			v.Held += qj.GPUs
		}
		s.Jobs = append(s.Jobs, qj)
	}

	// Capacity.
	for _, n := range v.Nodes {
		v.Foreign += n.Foreign
		v.Terminating += n.Terminating
	}
	if v.NodeAware {
		s.Nodes = make([]queue.Node, 0, len(v.Nodes))
		for _, n := range v.Nodes {
			s.Nodes = append(s.Nodes, queue.Node{Name: n.Name, GPUs: n.GPUs, Busy: n.Foreign + n.Terminating, Terminating: n.Terminating})
		}
		v.Capacity, v.CapacityKnown = v.NodeGPUs, true
		v.Budget = v.NodeGPUs - v.Foreign
		if set.GPUCapacity >= 0 {
			v.Capacity = min(v.Capacity, set.GPUCapacity)
			v.Budget = min(v.Budget, set.GPUCapacity)
		}
	} else {
		v.Foreign, v.Terminating = poolForeign, poolTerminating
		s.PoolBusy, s.PoolTerminating = poolForeign+poolTerminating, poolTerminating
		v.CapacityKnown = set.GPUCapacity >= 0
		v.Capacity = max(set.GPUCapacity, 0)
		if !v.CapacityKnown {
			// Neither nodes nor --gpu-capacity: guess the pool from the operator's own words
			// ("waiting: 3 GPUs free, ..."), at least the GPUs held.
			free := int32(-1)
			for _, k := range keys {
				if m := reFree.FindStringSubmatch(v.Jobs[k].Status.Message); m != nil && v.Jobs[k].Status.Phase == cvlabv1alpha1.PhaseQueued {
					if n, err := strconv.Atoi(m[1]); err == nil {
						free = max(free, int32(n))
					}
				}
			}
			v.Capacity = v.Held + v.Foreign + v.Terminating + max(free, 0)
			msg := "no GPU node found and the pool size is not known: pass the operator's --gpu-capacity (or set cluster.gpuCapacity in the config)"
			if c.NodesErr != nil {
				msg = "the GPU capacity is not known: pass the operator's --gpu-capacity (or set cluster.gpuCapacity in the config)"
			}
			v.Notes = append(v.Notes, msg+"; assuming "+gpus(v.Capacity))
		}
		s.Capacity = v.Capacity
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
		v.Notes = append(v.Notes, plural(differ, "job's", "jobs'")+" status differs from this computation: the operator is deciding right now, "+
			"or runs with other settings than "+set.String())
	}
	return v
}

// String renders the settings as the operator's flags.
func (s Settings) String() string {
	var b strings.Builder
	b.WriteString("--preemption=" + PolicyName(s.Preemption))
	if s.GPUCapacity >= 0 {
		b.WriteString(" --gpu-capacity=" + strconv.Itoa(int(s.GPUCapacity)))
	}
	if s.NodeSelector != nil && !s.NodeSelector.Empty() {
		b.WriteString(" --gpu-node-selector=" + s.NodeSelector.String())
	}
	b.WriteString(" --min-runtime=" + shortDuration(s.MinRuntime) + " --max-head-wait=" + shortDuration(s.MaxHeadWait))
	return b.String()
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
