package queueview

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

func TestSetUtilization(t *testing.T) {
	measured := &cvlabv1alpha1.GPUUtilization{Percent: 3, MemoryUsedMiB: 512, Window: metav1.Duration{Duration: 5 * time.Minute},
		MeasuredAt: metav1.NewTime(t0)}
	idle := metav1.NewTime(t0.Add(-2 * time.Hour))
	cond := func(status metav1.ConditionStatus, reason string) []metav1.Condition {
		return []metav1.Condition{{Type: cvlabv1alpha1.ConditionGPUIdle, Status: status, Reason: reason}}
	}
	for name, tc := range map[string]struct {
		st   cvlabv1alpha1.CvlabJobStatus
		want Job
	}{
		"unknown": {cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseRunning}, Job{}},
		"measured, busy": {cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseRunning, GPUUtilization: measured,
			Conditions: cond(metav1.ConditionFalse, cvlabv1alpha1.ReasonActive)},
			Job{Utilization: &Utilization{Percent: 3, MemoryUsedMiB: 512, Window: "5m", MeasuredAt: t0}}},
		"idle, warned": {cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseRunning, GPUUtilization: measured, IdleSince: &idle,
			Conditions: cond(metav1.ConditionTrue, cvlabv1alpha1.ReasonIdle)},
			Job{Utilization: &Utilization{Percent: 3, MemoryUsedMiB: 512, Window: "5m", MeasuredAt: t0}, IdleSince: &idle.Time, Idle: "Idle"}},
		"reclaimable": {cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseRunning, IdleSince: &idle,
			Conditions: cond(metav1.ConditionTrue, cvlabv1alpha1.ReasonReclaimable)},
			Job{IdleSince: &idle.Time, Idle: "Reclaimable"}},
		"not running: nothing shown": {cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseQueued, GPUUtilization: measured, IdleSince: &idle},
			Job{}},
	} {
		t.Run(name, func(t *testing.T) {
			var got Job
			got.SetUtilization(&tc.st)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestSummarizeUtilization(t *testing.T) {
	u := func(p int32) *Utilization { return &Utilization{Percent: p} }
	p := func(v int32) *int32 { return &v }
	idle := t0
	for name, tc := range map[string]struct {
		snap  Snapshot
		users map[string]User
		nodes map[string]Node
	}{
		"GPU-weighted, unknown left out, idle GPUs counted": {
			Snapshot{NodeAware: true, Jobs: []Job{
				{User: "a", GPUs: 3, Phase: "Running", Node: "n1", Utilization: u(90)},
				{User: "a", GPUs: 1, Phase: "Running", Node: "n2", Utilization: u(10), IdleSince: &idle},
				{User: "a", GPUs: 2, Phase: "Running", Node: "n2"}, // unknown
				{User: "b", GPUs: 2, Phase: "Running", Node: "n2"}, // unknown
				{User: "b", GPUs: 1, Phase: "Queued", Utilization: u(50)},
				{User: "c", Phase: "Running", Node: "n1", Utilization: u(50)}, // CPU-only
			}, Users: []User{{User: "a"}, {User: "b"}}, Nodes: []Node{{Name: "n1"}, {Name: "n2"}, {Name: "n3"}}},
			map[string]User{"a": {User: "a", Utilization: p(70), MeasuredGPUs: 4, IdleGPUs: 1}, "b": {User: "b"}},
			map[string]Node{"n1": {Name: "n1", Utilization: p(90), MeasuredGPUs: 3}, "n2": {Name: "n2", Utilization: p(10), MeasuredGPUs: 1, IdleGPUs: 1},
				"n3": {Name: "n3"}},
		},
		"the pool sums up every job": {
			Snapshot{Jobs: []Job{
				{User: "a", GPUs: 1, Phase: "Running", Utilization: u(0), IdleSince: &idle},
				{User: "b", GPUs: 1, Phase: "Running", Utilization: u(51)},
			}, Users: []User{{User: "a"}, {User: "b"}}, Nodes: []Node{{}}},
			map[string]User{"a": {User: "a", Utilization: p(0), MeasuredGPUs: 1, IdleGPUs: 1}, "b": {User: "b", Utilization: p(51), MeasuredGPUs: 1}},
			map[string]Node{"": {Utilization: p(26), MeasuredGPUs: 2, IdleGPUs: 1}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			tc.snap.SummarizeUtilization()
			users, nodes := map[string]User{}, map[string]Node{}
			for _, u := range tc.snap.Users {
				users[u.User] = u
			}
			for _, n := range tc.snap.Nodes {
				nodes[n.Name] = n
			}
			if diff := cmp.Diff(tc.users, users); diff != "" {
				t.Errorf("users (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.nodes, nodes); diff != "" {
				t.Errorf("nodes (-want +got):\n%s", diff)
			}
		})
	}
}
