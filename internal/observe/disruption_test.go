package observe

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPodDisruption(t *testing.T) {
	cond := func(reason string) corev1.PodCondition {
		return corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: reason, Message: "m"}
	}
	cases := map[string]struct {
		status corev1.PodStatus
		want   string // part of the answer; "" for none
	}{
		"running":                     {status: corev1.PodStatus{Phase: corev1.PodRunning}},
		"failed on its own":           {status: corev1.PodStatus{Phase: corev1.PodFailed}},
		"deadline exceeded":           {status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "DeadlineExceeded"}},
		"kubelet eviction":            {status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "low on memory"}, want: "evicted by the kubelet"},
		"taint manager":               {status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{cond("DeletionByTaintManager")}}, want: "DeletionByTaintManager"},
		"pod GC of a deleted node":    {status: corev1.PodStatus{Phase: corev1.PodFailed, Conditions: []corev1.PodCondition{cond("DeletionByPodGC")}}, want: "DeletionByPodGC"},
		"drain (eviction API)":        {status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{cond("EvictionByEvictionAPI")}}, want: "EvictionByEvictionAPI"},
		"condition no longer applies": {status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionFalse}}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := PodDisruption(&corev1.Pod{Spec: corev1.PodSpec{NodeName: "n"}, Status: tc.status})
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("PodDisruption = %q, want %q", got, tc.want)
			}
		})
	}
}
