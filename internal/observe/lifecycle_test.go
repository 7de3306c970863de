package observe

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// t0 is an arbitrary, whole-second origin (creationTimestamp has a resolution of one second);
// every case decides at now, an hour later.
var (
	t0  = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	now = t0.Add(time.Hour)
)

// ago is now minus d.
func ago(d time.Duration) time.Time { return now.Add(-d) }

const ns = "lab"

// --- Builders: jobs, their pods as the operator makes them (controllers.BuildPod), nodes. ---

func uidOf(name string) types.UID { return types.UID("uid-" + name) }

func keyOf(name string) string { return ns + "/" + name }

type jobOpt func(*cvlabv1alpha1.CvlabJob)

// newJob is a job of its own user (so that fair share does not mix cases up), created at t0 plus
// its position in the alphabet, in minutes: "a" before "b".
func newJob(name string, gpus int32, opts ...jobOpt) *cvlabv1alpha1.CvlabJob {
	j := &cvlabv1alpha1.CvlabJob{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: uidOf(name),
			CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(name[0]-'a') * time.Minute))},
		Spec: cvlabv1alpha1.CvlabJobSpec{User: "user-" + name, Image: "img", GPUs: gpus},
	}
	for _, o := range opts {
		o(j)
	}
	return j
}

// status sets the job's status as the operator writes it: the phase, the admissions so far and,
// for an Admitted or Running job, its pod and node.
func status(phase cvlabv1alpha1.JobPhase, admissions int32, node string) jobOpt {
	return func(j *cvlabv1alpha1.CvlabJob) {
		j.Status.Phase, j.Status.Admissions = phase, admissions
		if phase == cvlabv1alpha1.PhaseAdmitted || phase == cvlabv1alpha1.PhaseRunning {
			j.Status.PodName, j.Status.Node = podName(j.Name, admissions), node
		}
	}
}

func suspended(j *cvlabv1alpha1.CvlabJob) { j.Spec.Suspend = true }

func timeout(d time.Duration) jobOpt {
	return func(j *cvlabv1alpha1.CvlabJob) { j.Spec.Timeout = &metav1.Duration{Duration: d} }
}

func annotated(k, v string) jobOpt {
	return func(j *cvlabv1alpha1.CvlabJob) { j.Annotations = map[string]string{k: v} }
}

func podName(job string, admission int32) string { return job + "-" + strconv.Itoa(int(admission)) }

type podOpt func(*corev1.Pod)

// newPod is the pod of a job's n-th admission as the operator creates it, placed on node (which
// the scheduler bound it to, unless unbound), in phase.
func newPod(j *cvlabv1alpha1.CvlabJob, admission int32, phase corev1.PodPhase, node string, opts ...podOpt) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: podName(j.Name, admission), Namespace: j.Namespace,
			Labels: map[string]string{cluster.LabelJob: j.Name, cluster.LabelAdmission: strconv.Itoa(int(admission))},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: cvlabv1alpha1.GroupVersion.String(), Kind: "CvlabJob", Name: j.Name, UID: j.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "job", Image: j.Spec.Image}}},
		Status: corev1.PodStatus{Phase: phase},
	}
	if node != "" {
		p.Annotations = map[string]string{cluster.AnnotationNode: node}
	}
	if j.Spec.GPUs > 0 {
		p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{
			cluster.ResourceGPU: *resource.NewQuantity(int64(j.Spec.GPUs), resource.DecimalSI)}
	}
	for _, o := range opts {
		o(&p)
	}
	return p
}

// deleting marks a pod as being deleted since t.
func deleting(t time.Time) podOpt {
	return func(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.NewTime(t)) }
}

// disrupted adds the DisruptionTarget condition the control plane sets before deleting a pod.
func disrupted(reason string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{
			Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: reason, Message: "m"})
	}
}

// failedWith sets the pod's status reason (DeadlineExceeded, Evicted) and message.
func failedWith(reason, msg string) podOpt {
	return func(p *corev1.Pod) { p.Status.Reason, p.Status.Message = reason, msg }
}

// exited sets the job container's exit code.
func exited(code int32) podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "job",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Error"}}}}
	}
}

// unschedulable leaves the pod unbound (still placed on its node by the annotation), with the
// scheduler failing to place it since t.
func unschedulable(since time.Time) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.NodeName = ""
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
			Message: "0/1 nodes are available: 1 Insufficient memory.", LastTransitionTime: metav1.NewTime(since)})
	}
}

// newNode is a node advertising gpus nvidia.com/gpu, Ready or NotReady.
func newNode(name string, gpus int64, ready bool) corev1.Node {
	cond := corev1.ConditionTrue
	if !ready {
		cond = corev1.ConditionFalse
	}
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{cluster.ResourceGPU: *resource.NewQuantity(gpus, resource.DecimalSI)},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: cond}},
		},
	}
}

// oneNode is the default cluster: one Ready node n1 of 4 GPUs, so that a job that holds GPUs
// shows in where the next job can go.
func oneNode() []corev1.Node { return []corev1.Node{newNode("n1", 4, true)} }

// --- What a case asserts. ---

// jobOutcome is one job's view and its fate in the decision that follows.
type jobOutcome struct {
	Phase      cvlabv1alpha1.JobPhase
	Node       string // the view's Node: where its GPUs are
	Finish     string // FinishReason
	Msg        string // FinishMsg
	Disruption string
	Frozen     bool
	Void       bool // EvictionVoid
	Invalid    bool
	// The decision: admitted (on AdmitOn), or why it waits.
	Admit   bool
	AdmitOn string
	Wait    queue.WaitReason
}

type outcome struct {
	Jobs map[string]jobOutcome // by job name
	// Pod names, sorted; job names for Requeues.
	ToDelete, Requeues, Unfinished []string
	Wakeups                        []time.Time
	// The cluster as observed (GPUs held outside active jobs), zero entries dropped.
	Busy, Terminating map[string]int32
	// Reserved is the snapshot's; Wakeup the decision's.
	Reserved map[string]string
	Wakeup   time.Time
}

// world is the input of one observation.
type world struct {
	jobs  []*cvlabv1alpha1.CvlabJob
	pods  []corev1.Pod
	nodes []corev1.Node
	// ledger, when set, fills the operator's memory.
	ledger func(*Ledger)
	// status is the operator's latest word on some jobs, newer than the jobs' own (by name).
	status map[string]cvlabv1alpha1.CvlabJobStatus
}

func (w world) input(l *Ledger, at time.Time) Input {
	in := Input{Jobs: w.jobs, Pods: w.pods, Nodes: w.nodes, Settings: DefaultSettings(), Ledger: l, Now: at}
	if w.status != nil {
		in.Status = func(j *cvlabv1alpha1.CvlabJob) *cvlabv1alpha1.CvlabJobStatus {
			if st, ok := w.status[j.Name]; ok {
				return &st
			}
			return &j.Status
		}
	}
	return in
}

// observeDecide observes the world at now and decides on it, as the operator's loop does; a panic
// is returned as an error, so that one case cannot hide the others.
func observeDecide(in Input) (obs *Observation, snap queue.Snapshot, d queue.Decision, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	obs = Observe(in)
	snap = obs.Snapshot(in.Now)
	d = queue.Decide(snap)
	return obs, snap, d, nil
}

// summarize reduces an observation and its decision to what the cases assert.
func summarize(obs *Observation, snap queue.Snapshot, d queue.Decision) outcome {
	out := outcome{Jobs: map[string]jobOutcome{}, Wakeups: obs.Wakeups, Reserved: snap.Reserved, Wakeup: d.Wakeup,
		Busy: nonZero(obs.Cluster.Busy), Terminating: nonZero(obs.Cluster.Terminating)}
	entries := map[string]queue.Entry{}
	for _, e := range d.Order {
		entries[e.Key] = e
	}
	for _, v := range obs.Views {
		o := jobOutcome{Phase: v.Phase, Node: v.Node, Finish: v.FinishReason, Msg: v.FinishMsg, Disruption: v.Disruption,
			Frozen: v.Frozen, Void: v.EvictionVoid, Invalid: v.Invalid != ""}
		if e, ok := entries[v.Key()]; ok {
			o.Admit, o.Wait = e.Admit, e.Wait
			if e.Admit {
				o.AdmitOn = e.Node
			}
		}
		if slices.Contains(d.AdmitCPU, v.Key()) {
			o.Admit = true
		}
		out.Jobs[v.Job.Name] = o
	}
	for _, p := range obs.ToDelete {
		out.ToDelete = append(out.ToDelete, p.Name)
	}
	for _, r := range obs.Requeues {
		out.Requeues = append(out.Requeues, r.View.Job.Name)
	}
	for _, u := range obs.UnfinishedEvictions {
		out.Unfinished = append(out.Unfinished, u.Pod.Name)
	}
	slices.Sort(out.ToDelete)
	slices.Sort(out.Requeues)
	slices.Sort(out.Unfinished)
	return out
}

func nonZero(m map[string]int32) map[string]int32 {
	out := map[string]int32{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// A job's life, one observation and the decision that follows at a time. Job "a" is the job under
// test; job "b", when present, is a later job of another user that wants GPUs on the same node:
// whether it is admitted shows whether a's GPUs count as held.
func TestLifecycle(t *testing.T) {
	running := cvlabv1alpha1.PhaseRunning
	admitted := cvlabv1alpha1.PhaseAdmitted
	queued := cvlabv1alpha1.PhaseQueued
	a := func(opts ...jobOpt) *cvlabv1alpha1.CvlabJob { return newJob("a", 2, opts...) }
	b := newJob("b", 4)
	// b waits: a holds (or is about to free) 2 of n1's 4 GPUs.
	bWaits := jobOutcome{Phase: queued, Wait: queue.NoGPUsFree}
	// b waits, as the first in line, for GPUs that a's pod is freeing: it is promised them.
	bReserved := jobOutcome{Phase: queued, Wait: queue.Reserved}
	headDeadline := now.Add(DefaultMaxHeadWait) // b, the head of the line, starts blocking then
	bAdmitted := jobOutcome{Phase: queued, Admit: true, AdmitOn: "n1"}

	cases := map[string]struct {
		world
		want outcome
		// ignore names fields of outcome that the case does not assert.
		ignore []string
	}{
		// --- Waiting and admission. ---
		"new job is queued and admitted when GPUs are free": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a()}, nodes: oneNode()},
			want:  outcome{Jobs: map[string]jobOutcome{"a": {Phase: queued, Admit: true, AdmitOn: "n1"}}},
		},
		"new job waits while the GPUs are held": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1")), b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1")}},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: running, Node: "n1"}, "b": bWaits}, Wakeup: headDeadline},
		},
		"CPU-only job is admitted at once": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{newJob("c", 0), a(status(running, 1, "n1")), newJob("d", 4)},
				nodes: oneNode(), pods: []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1")}},
			want: outcome{Jobs: map[string]jobOutcome{
				"c": {Phase: queued, Admit: true},
				"a": {Phase: running, Node: "n1"},
				"d": bWaits,
			}, Wakeup: headDeadline},
		},

		// --- The pod runs, ends. ---
		"pod pending: Admitted, holding its GPUs": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(admitted, 1, "n1")), b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodPending, "n1")}},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: admitted, Node: "n1"}, "b": bWaits}, Wakeup: headDeadline},
		},
		"pod running: Running": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(admitted, 1, "n1")), b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1")}},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: running, Node: "n1"}, "b": bWaits}, Wakeup: headDeadline},
		},
		"pod succeeded: Succeeded, its GPUs free": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1")), b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodSucceeded, "n1")}},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: cvlabv1alpha1.PhaseSucceeded, Finish: cvlabv1alpha1.ReasonSucceeded, Msg: "pod a-1 succeeded"},
				"b": bAdmitted,
			}},
		},
		"pod failed: Failed": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1")), b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodFailed, "n1", exited(3))}},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: cvlabv1alpha1.PhaseFailed, Finish: cvlabv1alpha1.ReasonFailed,
					Msg: "pod a-1 failed: container job exited with code 3 (Error)"},
				"b": bAdmitted,
			}},
		},
		"pod stopped at spec.timeout: Failed, DeadlineExceeded": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1"), timeout(2*time.Hour)), b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodFailed, "n1", failedWith("DeadlineExceeded", "Pod was active on the node longer than the specified deadline"))}},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: cvlabv1alpha1.PhaseFailed, Finish: cvlabv1alpha1.ReasonDeadlineExceeded,
					Msg: "pod a-1 was stopped after the job's timeout of 2h0m0s"},
				"b": bAdmitted,
			}},
		},
		"finished status stays finished, whatever the pods": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(cvlabv1alpha1.PhaseSucceeded, 1, "")), b}, nodes: oneNode()},
			want:  outcome{Jobs: map[string]jobOutcome{"a": {Phase: cvlabv1alpha1.PhaseSucceeded}, "b": bAdmitted}},
		},

		// --- The pod goes away before the job finished. ---
		"pod deleted by a person while Running, node up: Failed, PodDeleted": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1")), b}, nodes: oneNode()},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: cvlabv1alpha1.PhaseFailed, Finish: cvlabv1alpha1.ReasonPodDeleted, Msg: "pod a-1 was deleted before the job finished"},
				"b": bAdmitted,
			}},
		},
		"pod deleted by a person while Admitted, node up: Failed, PodDeleted": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(admitted, 1, "n1")), b}, nodes: oneNode()},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: cvlabv1alpha1.PhaseFailed, Finish: cvlabv1alpha1.ReasonPodDeleted, Msg: "pod a-1 was deleted before the job finished"},
				"b": bAdmitted,
			}},
		},
		"pod lost with its NotReady node (status.node): requeued, Disruption": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1"))},
				nodes: []corev1.Node{newNode("n1", 4, false), newNode("n2", 4, true)}},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: queued, Disruption: "pod a-1 vanished with its node n1 (not ready)", Admit: true, AdmitOn: "n2"},
			}},
		},
		"pod lost with its deleted node (ledger PodNode): requeued, Disruption": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, ""))}, nodes: []corev1.Node{newNode("n2", 4, true)},
				ledger: func(l *Ledger) { l.PodNode[uidOf("a")] = "n1" }},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: queued, Disruption: "pod a-1 vanished with its node n1 (deleted)", Admit: true, AdmitOn: "n2"},
			}},
		},
		"the ledger's PodNode wins over status.node": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n2"))},
				nodes:  []corev1.Node{newNode("n1", 4, false), newNode("n2", 4, true)},
				ledger: func(l *Ledger) { l.PodNode[uidOf("a")] = "n1" }},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: queued, Disruption: "pod a-1 vanished with its node n1 (not ready)", Admit: true, AdmitOn: "n2"},
			}},
		},
		"pod marked DisruptionTarget and being deleted: requeued, its GPUs terminating": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1"))}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1", disrupted("DeletionByTaintManager"), deleting(ago(time.Second)))}},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: queued, Disruption: "pod a-1 was stopped by the cluster (DeletionByTaintManager: m)", Admit: true, AdmitOn: "n1"},
			}, Busy: map[string]int32{"n1": 2}, Terminating: map[string]int32{"n1": 2}},
		},
		"pod failed with DisruptionTarget (pod GC): requeued, not failed": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1"))}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodFailed, "n1", disrupted("DeletionByPodGC"))}},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: queued, Disruption: "pod a-1 was stopped by the cluster (DeletionByPodGC: m)", Admit: true, AdmitOn: "n1"},
			}},
		},
		"pod evicted by the kubelet: requeued, not failed": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1"))}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodFailed, "n1", failedWith("Evicted", "low on memory"))}},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: queued, Disruption: "pod a-1 was evicted by the kubelet of node n1 (low on memory)", Admit: true, AdmitOn: "n1"},
			}},
		},
		"pod being deleted by someone else: Frozen, its GPUs busy and terminating": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1")), b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1", deleting(ago(time.Second)))}},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: running, Frozen: true}, "b": bReserved},
				Busy: map[string]int32{"n1": 2}, Terminating: map[string]int32{"n1": 2}, Reserved: nil},
		},

		// --- The operator's memory: a pod it created that the cache does not show yet. ---
		"pod created, not in the cache yet: Admitted, holding its GPUs on its node": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(admitted, 1, "n1")), b}, nodes: oneNode(),
				ledger: func(l *Ledger) { l.Expect(uidOf("a"), "a-1", "n1", ago(ExpectationTimeout)) }},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: admitted, Node: "n1"}, "b": bWaits}, Wakeup: headDeadline},
		},
		"pod created, its status not written yet either: Admitted": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(), b}, nodes: oneNode(),
				ledger: func(l *Ledger) { l.Expect(uidOf("a"), "a-1", "n1", ago(time.Second)) }},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: admitted, Node: "n1"}, "b": bWaits}, Wakeup: headDeadline},
		},
		"pod created, Running in the operator's word: Running": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(admitted, 1, "n1")), b}, nodes: oneNode(),
				status: map[string]cvlabv1alpha1.CvlabJobStatus{"a": a(status(running, 1, "n1")).Status},
				ledger: func(l *Ledger) { l.Expect(uidOf("a"), "a-1", "n1", ago(time.Second)) }},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: running, Node: "n1"}, "b": bWaits}, Wakeup: headDeadline},
		},
		"pod created, still not in the cache after ExpectationTimeout: Failed, PodDeleted": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(admitted, 1, "n1")), b}, nodes: oneNode(),
				ledger: func(l *Ledger) { l.Expect(uidOf("a"), "a-1", "n1", ago(ExpectationTimeout+time.Millisecond)) }},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: cvlabv1alpha1.PhaseFailed, Finish: cvlabv1alpha1.ReasonPodDeleted, Msg: "pod a-1 was deleted before the job finished"},
				"b": bAdmitted,
			}},
		},

		// --- Evictions. ---
		"eviction in progress, pod still in the cache: Queued, its GPUs terminating": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(queued, 1, "")), b}, nodes: oneNode(),
				pods:   []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1")},
				ledger: func(l *Ledger) { l.Evicting(uidOf("a"), "a-1") }},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: queued, Admit: true, AdmitOn: "n1"}, "b": bWaits},
				Busy: map[string]int32{"n1": 2}, Terminating: map[string]int32{"n1": 2}, Wakeup: headDeadline},
		},
		"eviction in progress, the cache still says Running: Queued": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1"))}, nodes: oneNode(),
				status: map[string]cvlabv1alpha1.CvlabJobStatus{"a": a(status(queued, 1, "")).Status},
				pods:   []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1")},
				ledger: func(l *Ledger) { l.Evicting(uidOf("a"), "a-1") }},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: queued, Admit: true, AdmitOn: "n1"}},
				Busy: map[string]int32{"n1": 2}, Terminating: map[string]int32{"n1": 2}},
		},
		"eviction written in status, pod of that admission still running: unfinished eviction": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(queued, 1, "")), b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1")}},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: queued, Admit: true, AdmitOn: "n1"}, "b": bWaits},
				Unfinished: []string{"a-1"}, Busy: map[string]int32{"n1": 2}, Terminating: map[string]int32{"n1": 2}, Wakeup: headDeadline},
		},
		"eviction written in status, pod of that admission succeeded meanwhile: eviction void": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(queued, 1, "")), b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodSucceeded, "n1")}},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: cvlabv1alpha1.PhaseSucceeded, Finish: cvlabv1alpha1.ReasonSucceeded, Msg: "pod a-1 succeeded", Void: true},
				"b": bAdmitted,
			}},
		},
		"queued after an earlier admission, that pod long gone: just queued": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(queued, 1, ""))}, nodes: oneNode()},
			want:  outcome{Jobs: map[string]jobOutcome{"a": {Phase: queued, Admit: true, AdmitOn: "n1"}}},
		},
		"a newer admission's pod replaces an older live one: the older is deleted": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 2, "n1"))}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1"), newPod(a(), 2, corev1.PodRunning, "n1")}},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: running, Node: "n1"}}, ToDelete: []string{"a-1"}},
		},

		// --- Backoff and reservations. ---
		"backing off: waits until the backoff ends, and wakes up then": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(queued, 1, ""))}, nodes: oneNode(),
				ledger: func(l *Ledger) { l.Backoff[uidOf("a")] = Backoff{Until: now.Add(30 * time.Second), Failures: 1} }},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: queued, Wait: queue.BackingOff}}, Wakeup: now.Add(30 * time.Second)},
		},
		"backoff over: admitted": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(queued, 1, ""))}, nodes: oneNode(),
				ledger: func(l *Ledger) { l.Backoff[uidOf("a")] = Backoff{Until: ago(time.Millisecond), Failures: 3} }},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: queued, Admit: true, AdmitOn: "n1"}}},
		},
		"backoff ends exactly now: admitted": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(queued, 1, ""))}, nodes: oneNode(),
				ledger: func(l *Ledger) { l.Backoff[uidOf("a")] = Backoff{Until: now, Failures: 1} }},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: queued, Admit: true, AdmitOn: "n1"}}},
		},
		"reservation within ReservationTimeout: in the snapshot": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(queued, 1, ""))}, nodes: oneNode(),
				ledger: func(l *Ledger) { l.Reserved[uidOf("a")] = Reservation{Node: "n1", Since: ago(ReservationTimeout)} }},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: queued, Admit: true, AdmitOn: "n1"}},
				Reserved: map[string]string{keyOf("a"): "n1"}},
		},
		"reservation past ReservationTimeout: dropped": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(queued, 1, ""))}, nodes: oneNode(),
				ledger: func(l *Ledger) {
					l.Reserved[uidOf("a")] = Reservation{Node: "n1", Since: ago(ReservationTimeout + time.Second)}
				}},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: queued, Admit: true, AdmitOn: "n1"}}},
		},
		"reservation of a job that holds its GPUs: not in the snapshot": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1"))}, nodes: oneNode(),
				pods:   []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1")},
				ledger: func(l *Ledger) { l.Reserved[uidOf("a")] = Reservation{Node: "n1", Since: ago(time.Second)} }},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: running, Node: "n1"}}},
		},

		// --- Unschedulable pods. ---
		"pod unschedulable for less than UnschedulableTimeout: wake up at the deadline": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(admitted, 1, "n1"))}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodPending, "n1", unschedulable(ago(time.Minute)))}},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: admitted, Node: "n1"}},
				Wakeups: []time.Time{ago(time.Minute).Add(DefaultUnschedulableTimeout)}},
		},
		"pod unschedulable for UnschedulableTimeout: requeued": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(admitted, 1, "n1"))}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodPending, "n1", unschedulable(ago(DefaultUnschedulableTimeout)))}},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: admitted, Node: "n1"}}, Requeues: []string{"a"}},
		},

		// --- Suspended, deleted, invalid. ---
		"suspended job with a live pod: pod deleted, its GPUs terminating": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1"), suspended), b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1")}},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: cvlabv1alpha1.PhaseSuspended}, "b": bReserved},
				ToDelete: []string{"a-1"}, Busy: map[string]int32{"n1": 2}, Terminating: map[string]int32{"n1": 2}},
		},
		"suspended job without a pod: Suspended, not in the queue": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(suspended)}, nodes: oneNode()},
			want:  outcome{Jobs: map[string]jobOutcome{"a": {Phase: cvlabv1alpha1.PhaseSuspended}}},
		},
		"pod of a deleted job: deleted, its GPUs held until it is gone": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(newJob("gone", 2), 1, corev1.PodRunning, "n1"),
					newPod(newJob("going", 2), 1, corev1.PodRunning, "n1", deleting(ago(time.Second)))}},
			want: outcome{Jobs: map[string]jobOutcome{"b": bReserved}, ToDelete: []string{"gone-1"},
				Busy: map[string]int32{"n1": 4}, Terminating: map[string]int32{"n1": 4}},
			ignore: []string{"Reserved", "Wakeup"},
		},
		"invalid spec (does not decode): Failed, InvalidSpec": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(annotated(AnnotationDecodeError, "spec.gpus: expected int")), b}, nodes: oneNode()},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: cvlabv1alpha1.PhaseFailed, Finish: cvlabv1alpha1.ReasonInvalidSpec, Invalid: true,
					Msg: "invalid: its stored spec does not decode: spec.gpus: expected int (stored before the CRD validated it); delete the job and submit it again"},
				"b": bAdmitted,
			}},
		},
		"invalid spec (negative GPUs): Failed, InvalidSpec": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{newJob("a", -1)}, nodes: oneNode()},
			want: outcome{Jobs: map[string]jobOutcome{
				"a": {Phase: cvlabv1alpha1.PhaseFailed, Finish: cvlabv1alpha1.ReasonInvalidSpec, Invalid: true,
					Msg: "invalid: spec.gpus is -1, it must be 0 or more (stored before the CRD validated it); delete the job and submit it again"},
			}},
		},
		"invalid spec, pod started before: Frozen, its GPUs busy": {
			world: world{jobs: []*cvlabv1alpha1.CvlabJob{a(status(running, 1, "n1"), annotated(AnnotationDecodeError, "bad")), b}, nodes: oneNode(),
				pods: []corev1.Pod{newPod(a(), 1, corev1.PodRunning, "n1")}},
			want: outcome{Jobs: map[string]jobOutcome{"a": {Phase: running, Frozen: true, Invalid: true}, "b": bWaits},
				Busy: map[string]int32{"n1": 2}, Wakeup: headDeadline},
		},
	}
	// The last case's observation and order, whose memory the next case's second run reuses.
	var prev *Observation
	var prevOrder []queue.Entry
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			l := NewLedger()
			if tc.ledger != nil {
				tc.ledger(l)
			}
			obs, snap, d, err := observeDecide(tc.input(l, now))
			if err != nil {
				t.Fatalf("Observe: %v", err)
			}
			got := summarize(obs, snap, d)
			opts := []cmp.Option{cmpopts.EquateEmpty()}
			if len(tc.ignore) > 0 {
				opts = append(opts, cmpopts.IgnoreFields(outcome{}, tc.ignore...))
			}
			if diff := cmp.Diff(tc.want, got, opts...); diff != "" {
				t.Errorf("observe → decide mismatch (-want +got):\n%s", diff)
			}

			// Made again in the memory of another case's observation and order, as the simulator
			// does (Input.Reuse, Snapshot.Reuse): the same outcome.
			in := tc.input(l, now)
			in.Reuse = prev
			again := Observe(in)
			againSnap := again.Snapshot(now)
			againSnap.Reuse = prevOrder
			againD := queue.Decide(againSnap)
			if diff := cmp.Diff(got, summarize(again, againSnap, againD), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("with reused memory, the outcome differs (-fresh +reused):\n%s", diff)
			}
			prev, prevOrder = again, againD.Order
		})
	}
}

// A pod stopped by its activeDeadlineSeconds is judged DeadlineExceeded even when the job has no
// spec.timeout (activeDeadlineSeconds of a pod may be set by anyone who may update it): Observe
// must not dereference a nil spec.timeout.
func TestDeadlineExceededWithoutTimeout(t *testing.T) {
	a := newJob("a", 2, status(cvlabv1alpha1.PhaseRunning, 1, "n1"))
	in := Input{Jobs: []*cvlabv1alpha1.CvlabJob{a}, Nodes: oneNode(), Settings: DefaultSettings(), Now: now,
		Pods: []corev1.Pod{newPod(a, 1, corev1.PodFailed, "n1", failedWith("DeadlineExceeded", "too long"))}}
	obs, _, _, err := observeDecide(in)
	if err != nil {
		t.Fatalf("Observe of a job without spec.timeout whose pod failed with DeadlineExceeded: %v", err)
	}
	if v := obs.ByKey[keyOf("a")]; v.Phase != cvlabv1alpha1.PhaseFailed || v.FinishReason != cvlabv1alpha1.ReasonDeadlineExceeded {
		t.Errorf("phase %s, reason %s; want Failed, DeadlineExceeded", v.Phase, v.FinishReason)
	}
}

// The loop's steps in order, each observation seeing what the previous decision did: the ledger
// carries what the cache does not show yet.
func TestLifecycleSequence(t *testing.T) {
	a := newJob("a", 2)
	b := newJob("b", 4)
	l := NewLedger()
	nodes := oneNode()
	written := map[string]cvlabv1alpha1.CvlabJobStatus{} // the operator's latest word

	type step struct {
		name  string
		at    time.Time
		jobs  []*cvlabv1alpha1.CvlabJob
		pods  []corev1.Pod
		nodes []corev1.Node
		want  map[string]jobOutcome
	}
	running := func(node string) corev1.Pod { return newPod(a, 1, corev1.PodRunning, node) }
	steps := []step{
		{name: "a arrives and is admitted", at: now, jobs: []*cvlabv1alpha1.CvlabJob{a},
			want: map[string]jobOutcome{"a": {Phase: cvlabv1alpha1.PhaseQueued, Admit: true, AdmitOn: "n1"}}},
		{name: "b arrives before the cache shows a's pod: a holds n1", at: now.Add(time.Second), jobs: []*cvlabv1alpha1.CvlabJob{a, b},
			want: map[string]jobOutcome{"a": {Phase: cvlabv1alpha1.PhaseAdmitted, Node: "n1"},
				"b": {Phase: cvlabv1alpha1.PhaseQueued, Wait: queue.NoGPUsFree}}},
		{name: "a's pod shows, pending", at: now.Add(2 * time.Second), jobs: []*cvlabv1alpha1.CvlabJob{a, b},
			pods: []corev1.Pod{newPod(a, 1, corev1.PodPending, "n1")},
			want: map[string]jobOutcome{"a": {Phase: cvlabv1alpha1.PhaseAdmitted, Node: "n1"},
				"b": {Phase: cvlabv1alpha1.PhaseQueued, Wait: queue.NoGPUsFree}}},
		{name: "a runs", at: now.Add(time.Minute), jobs: []*cvlabv1alpha1.CvlabJob{a, b}, pods: []corev1.Pod{running("n1")},
			want: map[string]jobOutcome{"a": {Phase: cvlabv1alpha1.PhaseRunning, Node: "n1"},
				"b": {Phase: cvlabv1alpha1.PhaseQueued, Wait: queue.NoGPUsFree}}},
		{name: "n1 goes NotReady and a's pod vanishes: a is requeued, not failed", at: now.Add(time.Hour),
			jobs: []*cvlabv1alpha1.CvlabJob{a, b}, nodes: []corev1.Node{newNode("n1", 4, false), newNode("n2", 4, true)},
			want: map[string]jobOutcome{
				"a": {Phase: cvlabv1alpha1.PhaseQueued, Disruption: "pod a-1 vanished with its node n1 (not ready)", Admit: true, AdmitOn: "n2"},
				"b": {Phase: cvlabv1alpha1.PhaseQueued, Wait: queue.NoGPUsFree}}},
	}
	for _, s := range steps {
		if s.nodes == nil {
			s.nodes = nodes
		}
		w := world{jobs: s.jobs, pods: s.pods, nodes: s.nodes, status: written}
		obs, snap, d, err := observeDecide(w.input(l, s.at))
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := summarize(obs, snap, d).Jobs
		if diff := cmp.Diff(s.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: mismatch (-want +got):\n%s", s.name, diff)
		}
		// Act as the loop does: remember, then create the pods of the admitted jobs and write
		// their status (the status writer is the operator's latest word; the jobs' own status is
		// the cache's, which lags).
		l.Learn(obs)
		l.Decided(obs, d, s.at)
		for _, e := range d.Order {
			if !e.Admit {
				continue
			}
			v := obs.ByKey[e.Key]
			adm := v.LastAdmission + 1
			l.Expect(v.Job.UID, podName(v.Job.Name, adm), e.Node, s.at)
			written[v.Job.Name] = cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseAdmitted, Admissions: adm,
				PodName: podName(v.Job.Name, adm), Node: e.Node}
		}
		for _, v := range obs.Views {
			if v.Phase != v.Cur.Phase && !slices.ContainsFunc(d.Order, func(e queue.Entry) bool { return e.Key == v.Key() && e.Admit }) {
				st := *v.Cur
				st.Phase = v.Phase
				written[v.Job.Name] = st
			}
		}
	}
}
