package cli

import (
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// t0 is "now" in the scenarios: 09:00 UTC (times print in the local zone, UTC in tests).
var t0 = time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)

func TestMain(m *testing.M) {
	time.Local = time.UTC
	os.Exit(m.Run())
}

// scenario builds a cluster the way the operator leaves it: jobs with their status, their pods,
// nodes and foreign pods, and what the operator publishes. Unless the scenario says otherwise
// (c.Published set, or unpublished), the operator publishes the settings the test decides with,
// and the head of the line given to firstInLine.
type scenario struct {
	c           Cluster
	head        string
	headSince   time.Time
	unpublished bool
}

func newScenario() *scenario { return &scenario{} }

// firstInLine publishes key as the operator's head of the line since ago.
func (s *scenario) firstInLine(key string, ago time.Duration) *scenario {
	s.head, s.headSince = key, t0.Add(-ago)
	return s
}

// cluster is what the CLI reads, the operator publishing set unless the scenario says otherwise.
func (s *scenario) cluster(set observe.Settings) Cluster {
	c := s.c
	if c.Published == nil && c.PublishedErr == nil && !s.unpublished {
		c.Published = &observe.Published{Settings: set, Head: s.head, HeadSince: s.headSince}
	}
	return c
}

// unpublished makes the operator's published settings unreadable, for err (nil: no reason known).
func unpublished(s *scenario, err error) *scenario {
	s.c.Published, s.c.PublishedErr, s.unpublished = nil, err, true
	return s
}

func (s *scenario) node(name string, gpus int64) *scenario {
	q := *resource.NewQuantity(gpus, resource.DecimalSI)
	s.c.Nodes = append(s.c.Nodes, corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{resourceGPU: q},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}},
	})
	return s
}

// foreign adds a running pod outside the queue holding gpus on node.
func (s *scenario) foreign(name, node string, gpus int64) *scenario {
	s.c.Pods = append(s.c.Pods, corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "raw", Name: name},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{resourceGPU: *resource.NewQuantity(gpus, resource.DecimalSI)}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	})
	return s
}

// job adds a job in namespace lab created created-ago; mutate sets its status.
func (s *scenario) job(name, user string, gpus int32, ago time.Duration, mutate ...func(*cvlabv1alpha1.CvlabJob)) *scenario {
	j := cvlabv1alpha1.CvlabJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: "lab", Name: name, UID: types.UID(name), CreationTimestamp: metav1.NewTime(t0.Add(-ago))},
		Spec:       cvlabv1alpha1.CvlabJobSpec{User: user, Image: "img", GPUs: gpus},
		Status:     cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseQueued},
	}
	for _, m := range mutate {
		m(&j)
	}
	s.c.Jobs = append(s.c.Jobs, j)
	return s
}

// running makes the last job run on node since started-ago, with its pod.
func (s *scenario) running(node string, ago time.Duration) *scenario {
	j := &s.c.Jobs[len(s.c.Jobs)-1]
	j.Status.Phase = cvlabv1alpha1.PhaseRunning
	j.Status.StartTime = ptr.To(metav1.NewTime(t0.Add(-ago)))
	j.Status.PodName = j.Name + "-1"
	j.Status.Node = node
	j.Status.Admissions = 1
	s.c.Pods = append(s.c.Pods, corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: j.Namespace, Name: j.Name + "-1",
			Labels:          map[string]string{labelJob: j.Name, cluster.LabelAdmission: "1"},
			Annotations:     map[string]string{cluster.AnnotationNode: node},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "cvlab.epfl.ch/v1alpha1", Kind: "CvlabJob", Name: j.Name, UID: j.UID, Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: ContainerName,
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{resourceGPU: *resource.NewQuantity(int64(j.Spec.GPUs), resource.DecimalSI)}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	})
	return s
}

func timeout(d time.Duration) func(*cvlabv1alpha1.CvlabJob) {
	return func(j *cvlabv1alpha1.CvlabJob) { j.Spec.Timeout = &metav1.Duration{Duration: d} }
}

func priority(p int32) func(*cvlabv1alpha1.CvlabJob) {
	return func(j *cvlabv1alpha1.CvlabJob) { j.Spec.Priority = p }
}

func message(m string) func(*cvlabv1alpha1.CvlabJob) {
	return func(j *cvlabv1alpha1.CvlabJob) { j.Status.Message = m }
}

// backoffUntil holds a waiting job back after a failed start (status.backoffUntil).
func backoffUntil(t time.Time) func(*cvlabv1alpha1.CvlabJob) {
	return func(j *cvlabv1alpha1.CvlabJob) {
		j.Status.WaitingReason, j.Status.BackoffUntil = cvlabv1alpha1.WaitingBackingOff, ptr.To(metav1.NewTime(t))
	}
}

// reservedNode promises node's GPUs to a waiting job (status.reservedNode).
func reservedNode(node string) func(*cvlabv1alpha1.CvlabJob) {
	return func(j *cvlabv1alpha1.CvlabJob) {
		j.Status.WaitingReason, j.Status.ReservedNode = cvlabv1alpha1.WaitingReserved, node
	}
}

func phase(p cvlabv1alpha1.JobPhase) func(*cvlabv1alpha1.CvlabJob) {
	return func(j *cvlabv1alpha1.CvlabJob) { j.Status.Phase = p }
}

func (s *scenario) view(set observe.Settings) *View { return Observe(s.cluster(set), set, t0) }

// lab is the scenario of the docs and the integration test: nodes n1 (4 GPUs) and n2 (3 GPUs,
// one held by a raw pod); alice runs a 4-GPU job on n1 (started 1m ago, 2h timeout), bob a
// 2-GPU job on n2 (no timeout); carol (1 GPU), alice (2) and bob (1) wait.
func lab() *scenario {
	return newScenario().node("n1", 4).node("n2", 3).foreign("raw-1", "n2", 1).
		job("alice-a", "alice", 4, 2*time.Minute, timeout(2*time.Hour)).running("n1", time.Minute).
		job("bob-b", "bob", 2, 2*time.Minute).running("n2", time.Minute).
		job("carol-c", "carol", 1, 30*time.Second).
		job("alice-d", "alice", 2, 20*time.Second).
		job("bob-e", "bob", 1, 10*time.Second)
}

// settle writes the engine's ranks, positions and reasons into the jobs' status, as the
// operator does after a decision (it admits nothing: a settled queue has nothing to admit).
func (s *scenario) settle(set observe.Settings) *scenario {
	v := Observe(s.cluster(set), set, t0)
	for i := range s.c.Jobs {
		j := &s.c.Jobs[i]
		e := v.Entries[Key(j)]
		if e == nil {
			continue
		}
		j.Status.Rank = ptr.To(int32(e.Rank))
		j.Status.UserGPUs = e.UserGPUs()
		if e.Position > 0 {
			j.Status.QueuePosition = ptr.To(int32(e.Position))
			if j.Status.Message == "" {
				j.Status.Message = "waiting: " + e.Reason
			}
		}
	}
	return s
}
