package lifecycle_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// TestPlan: observe → decide → plan on plain values, with the operator's own pods
// (BuildPod), no API server. The plan is what the loop then does: evictions (with the sentence the
// owner is told), other deletions, and pod creations on their nodes.
func TestPlan(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	now := t0.Add(time.Hour)
	job := func(name, user string, gpus int32, created time.Duration, status cvlabv1alpha1.JobPhase) *cvlabv1alpha1.CvlabJob {
		j := &cvlabv1alpha1.CvlabJob{
			ObjectMeta: metav1.ObjectMeta{Namespace: "lab", Name: name, UID: types.UID("uid-" + name),
				CreationTimestamp: metav1.NewTime(t0.Add(created))},
			Spec:   cvlabv1alpha1.CvlabJobSpec{User: user, Image: "img", GPUs: gpus},
			Status: cvlabv1alpha1.CvlabJobStatus{Phase: status},
		}
		if status == cvlabv1alpha1.PhaseRunning {
			j.Status.Admissions, j.Status.PodName, j.Status.Node = 1, name+"-1", "n1"
			j.Status.StartTime = &metav1.Time{Time: t0}
		}
		return j
	}
	running := func(j *cvlabv1alpha1.CvlabJob) corev1.Pod {
		p := controllers.BuildPod(j, 1, "n1", "n1")
		p.Spec.NodeName = "n1"
		p.Status.Phase = corev1.PodRunning
		return *p
	}
	node := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{
		Allocatable: corev1.ResourceList{controllers.ResourceGPU: resource.MustParse("4")},
		Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}

	// bob's 3rd and 4th GPUs run; alice's 1st waits: she preempts his lowest-ranked job.
	bob1, bob2 := job("bob-1", "bob", 2, 0, cvlabv1alpha1.PhaseRunning), job("bob-2", "bob", 2, time.Minute, cvlabv1alpha1.PhaseRunning)
	alice := job("alice", "alice", 2, 2*time.Minute, cvlabv1alpha1.PhaseQueued)
	cpu := job("cpu", "carol", 0, 3*time.Minute, "")
	orphan := controllers.BuildPod(job("gone", "dave", 1, 0, ""), 1, "n1", "n1")

	type want struct {
		Evict    []string // job: event reason: message
		Delete   []string
		Create   []string // job@node
		Unfinish []string
	}
	cases := map[string]struct {
		jobs     []*cvlabv1alpha1.CvlabJob
		pods     []corev1.Pod
		settings observe.Settings
		want     want
	}{
		"a first GPU preempts the lowest-ranked running job; a CPU job starts at once": {
			jobs: []*cvlabv1alpha1.CvlabJob{bob1, bob2, alice, cpu}, pods: []corev1.Pod{running(bob1), running(bob2)},
			settings: observe.Settings{Preemption: queue.PreemptFirstGPU, GPUCapacity: -1, MaxHeadWait: time.Hour},
			want: want{
				Evict:  []string{"bob-2: Preempted: evicted for lab/alice, alice's 1st-2nd GPUs outrank your 3rd-4th GPUs; back in the queue"},
				Create: []string{"cpu@"},
			},
		},
		"no preemption under Never: alice waits": {
			jobs: []*cvlabv1alpha1.CvlabJob{bob1, bob2, alice}, pods: []corev1.Pod{running(bob1), running(bob2)},
			settings: observe.Settings{Preemption: queue.PreemptNever, GPUCapacity: -1, MaxHeadWait: time.Hour},
		},
		"free GPUs: admitted on its node; a pod whose job is gone is deleted": {
			jobs: []*cvlabv1alpha1.CvlabJob{bob1, alice}, pods: []corev1.Pod{running(bob1), *orphan},
			settings: observe.Settings{Preemption: queue.PreemptFirstGPU, GPUCapacity: -1, MaxHeadWait: time.Hour},
			want:     want{Delete: []string{"gone-1"}},
		},
		"free GPUs: admitted on its node": {
			jobs: []*cvlabv1alpha1.CvlabJob{bob1, alice}, pods: []corev1.Pod{running(bob1)},
			settings: observe.Settings{Preemption: queue.PreemptFirstGPU, GPUCapacity: -1, MaxHeadWait: time.Hour},
			want:     want{Create: []string{"alice@n1"}},
		},
		"an eviction written in status whose pod still runs is finished; with GPUs free the job starts again": {
			jobs: []*cvlabv1alpha1.CvlabJob{func() *cvlabv1alpha1.CvlabJob {
				j := bob2.DeepCopy()
				j.Status.Phase = cvlabv1alpha1.PhaseQueued
				return j
			}()}, pods: []corev1.Pod{running(bob2)},
			settings: observe.Settings{Preemption: queue.PreemptFirstGPU, GPUCapacity: -1, MaxHeadWait: time.Hour},
			want:     want{Unfinish: []string{"bob-2-1"}, Create: []string{"bob-2@n1"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			obs := observe.Observe(observe.Input{Jobs: tc.jobs, Pods: tc.pods, Nodes: []corev1.Node{node},
				Settings: tc.settings, Ledger: observe.NewLedger(), Now: now})
			p := lifecycle.Plan(obs, queue.Decide(obs.Snapshot(now)))
			var got want
			for _, ev := range p.Evictions {
				got.Evict = append(got.Evict, ev.View.Job.Name+": "+ev.Reason+": "+ev.Message)
			}
			for _, pod := range p.Deletions {
				got.Delete = append(got.Delete, pod.Name)
			}
			for _, c := range p.Creations {
				got.Create = append(got.Create, c.View.Job.Name+"@"+c.Node)
			}
			for _, u := range p.Unfinished {
				got.Unfinish = append(got.Unfinish, u.Pod.Name)
			}
			slices.Sort(got.Create)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}
