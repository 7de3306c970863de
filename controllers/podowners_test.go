package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// TestPodOwners: what the operator publishes for the policy job-pod-connect, from an observation,
// the pods the cache does not show yet and the decision's own creations (observe → decide → plan,
// with the operator's own pods): every pod that is or may soon be running has its owner, and only
// those.
func TestPodOwners(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	now := t0.Add(time.Hour)
	job := func(ns, name, user string, status cvlabv1alpha1.JobPhase, admissions int32) *cvlabv1alpha1.CvlabJob {
		j := &cvlabv1alpha1.CvlabJob{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(t0)},
			Spec:       cvlabv1alpha1.CvlabJobSpec{User: user, Image: "img"},
			Status:     cvlabv1alpha1.CvlabJobStatus{Phase: status, Admissions: admissions},
		}
		if admissions > 0 {
			j.Status.PodName = lifecycle.PodName(j, admissions)
		}
		return j
	}
	pod := func(j *cvlabv1alpha1.CvlabJob, admission int32, phase corev1.PodPhase) corev1.Pod {
		p := BuildPod(j, admission, "", "")
		p.Status.Phase = phase
		return *p
	}
	deleting := func(p corev1.Pod) corev1.Pod {
		p.DeletionTimestamp = &metav1.Time{Time: now}
		return p
	}
	alice := job("lab", "alice-train", "alice", cvlabv1alpha1.PhaseRunning, 1)
	bob := job("lab", "bob-jupyter", "bob", cvlabv1alpha1.PhaseRunning, 2)
	carol := job("other", "carol-eval", "carol", cvlabv1alpha1.PhaseQueued, 0)
	dave := job("lab", "dave-done", "dave", cvlabv1alpha1.PhaseSucceeded, 1)
	gone := job("lab", "gone", "erin", cvlabv1alpha1.PhaseRunning, 1)
	raw := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "lab", Name: "raw", Labels: map[string]string{LabelUser: "frank"}}}
	// Names near the 242-character limit: their keys are cut, and two of them share a cut key.
	longName := strings.Repeat("a", 240)
	long1, long2 := job("research", longName+"-x", "alice", cvlabv1alpha1.PhaseRunning, 1), job("research", longName+"-y", "bob", cvlabv1alpha1.PhaseRunning, 1)
	longKey := ("longpod.research." + longName + "-x-1")[:253]

	cases := map[string]struct {
		jobs     []*cvlabv1alpha1.CvlabJob
		pods     []corev1.Pod
		expected map[types.UID]observe.Expectation
		want     map[string]string
	}{
		"running and pending pods: their jobs' users": {
			jobs: []*cvlabv1alpha1.CvlabJob{alice, bob},
			pods: []corev1.Pod{pod(alice, 1, corev1.PodRunning), pod(bob, 2, corev1.PodPending)},
			want: map[string]string{"pod.lab.alice-train-1": "alice", "pod.lab.bob-jupyter-2": "bob"},
		},
		"a finished pod needs none: nothing runs in it": {
			jobs: []*cvlabv1alpha1.CvlabJob{dave},
			pods: []corev1.Pod{pod(dave, 1, corev1.PodSucceeded)},
			want: map[string]string{},
		},
		"pods being deleted keep theirs until they are gone, an older admission's too": {
			jobs: []*cvlabv1alpha1.CvlabJob{bob},
			pods: []corev1.Pod{deleting(pod(bob, 1, corev1.PodRunning)), deleting(pod(bob, 2, corev1.PodRunning))},
			want: map[string]string{"pod.lab.bob-jupyter-1": "bob", "pod.lab.bob-jupyter-2": "bob"},
		},
		"a pod whose job is gone: the user label the operator gave it": {
			pods: []corev1.Pod{deleting(pod(gone, 1, corev1.PodRunning))},
			want: map[string]string{"pod.lab.gone-1": "erin"},
		},
		"a pod that is not the queue's needs none: the policy leaves it to RBAC": {
			pods: []corev1.Pod{raw},
			want: map[string]string{},
		},
		"a pod created in an earlier decision that the cache does not show yet": {
			jobs:     []*cvlabv1alpha1.CvlabJob{bob},
			expected: map[types.UID]observe.Expectation{bob.UID: {Pod: "bob-jupyter-2", Since: now}},
			want:     map[string]string{"pod.lab.bob-jupyter-2": "bob"},
		},
		"the pods this decision creates: the next admission's name, in their namespace": {
			jobs: []*cvlabv1alpha1.CvlabJob{alice, carol},
			pods: []corev1.Pod{pod(alice, 1, corev1.PodRunning)},
			want: map[string]string{"pod.lab.alice-train-1": "alice", "pod.other.carol-eval-1": "carol"},
		},
		"keys too long for a ConfigMap are cut, one line per pod": {
			jobs: []*cvlabv1alpha1.CvlabJob{long1, long2},
			pods: []corev1.Pod{pod(long1, 1, corev1.PodRunning), pod(long2, 1, corev1.PodRunning)},
			want: map[string]string{longKey: longName + "-x-1=alice\n" + longName + "-y-1=bob"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ledger := observe.NewLedger()
			for uid, e := range tc.expected {
				ledger.Expected[uid] = e
			}
			obs := observe.Observe(observe.Input{Jobs: tc.jobs, Pods: tc.pods, Ledger: ledger, Now: now,
				Settings: observe.Settings{Preemption: queue.PreemptNever, GPUCapacity: -1, MaxHeadWait: time.Hour}})
			p := lifecycle.Plan(obs, queue.Decide(obs.Snapshot(now)))
			got := podOwnerData(wantedPodOwners(tc.pods, obs, ledger.Expected, p.Creations))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("published owners (-want +got):\n%s", diff)
			}
			for key := range got {
				if len(key) > 253 || strings.Trim(key, "-._abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
					t.Errorf("%q is not a ConfigMap key", key)
				}
			}
		})
	}
}

// TestPodOwnerKey: the key is the policy's (config/policies/job_pod_connect.yaml): "pod.<ns>.<pod>"
// while it fits in a ConfigMap key, else "longpod.<ns>.<pod>" cut at 253 characters.
func TestPodOwnerKey(t *testing.T) {
	name242 := strings.Repeat("b", 242)
	cases := map[string]struct {
		ns, pod string
		key     string
		long    bool
	}{
		"a usual name":           {ns: "cvlab", pod: "alice-train-1", key: "pod.cvlab.alice-train-1"},
		"exactly 253 characters": {ns: "lab", pod: strings.Repeat("c", 245), key: "pod.lab." + strings.Repeat("c", 245)},
		"one more is cut":        {ns: "lab", pod: strings.Repeat("c", 246), key: ("longpod.lab." + strings.Repeat("c", 246))[:253], long: true},
		"the longest job name":   {ns: "cvlab", pod: name242 + "-12", key: ("longpod.cvlab." + name242)[:253], long: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			key, long := PodOwnerKey(tc.ns, tc.pod)
			if key != tc.key || long != tc.long {
				t.Errorf("PodOwnerKey(%q, %q) = %q, %v; want %q, %v", tc.ns, tc.pod, key, long, tc.key, tc.long)
			}
		})
	}
}
