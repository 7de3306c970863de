package queueview

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// SetUtilization fills the job's utilisation fields from its status: status.gpuUtilization,
// status.idleSince and the GPUIdle condition. Only a running job's are shown.
func (j *Job) SetUtilization(st *cvlabv1alpha1.CvlabJobStatus) {
	j.Utilization, j.IdleSince, j.Idle = nil, nil, ""
	if st.Phase != cvlabv1alpha1.PhaseRunning {
		return
	}
	if u := st.GPUUtilization; u != nil {
		j.Utilization = &Utilization{Percent: u.Percent, MemoryUsedMiB: u.MemoryUsedMiB,
			Window: observe.ShortDuration(u.Window.Duration), MeasuredAt: u.MeasuredAt.Time}
	}
	if st.IdleSince != nil {
		t := st.IdleSince.Time
		j.IdleSince = &t
	}
	j.Idle = IdleReason(st.Conditions)
}

// IdleReason is the GPUIdle condition's reason while it is True (Idle or Reclaimable), else "".
func IdleReason(conds []metav1.Condition) string {
	c := meta.FindStatusCondition(conds, cvlabv1alpha1.ConditionGPUIdle)
	if c == nil || c.Status != metav1.ConditionTrue {
		return ""
	}
	return c.Reason
}

// utilSum accumulates a GPU-weighted average.
type utilSum struct {
	weighted int64
	gpus     int32
	idle     int32
}

func (s *utilSum) add(j *Job) {
	if j.Utilization != nil {
		s.weighted += int64(j.Utilization.Percent) * int64(j.GPUs)
		s.gpus += j.GPUs
	}
	if j.IdleSince != nil {
		s.idle += j.GPUs
	}
}

func (s utilSum) average() *int32 {
	if s.gpus == 0 {
		return nil
	}
	a := int32((s.weighted + int64(s.gpus)/2) / int64(s.gpus))
	return &a
}

// SummarizeUtilization fills the users' and nodes' utilisation from the running GPU jobs:
// the GPU-weighted average of the jobs whose utilisation is known, and the GPUs of idle jobs.
// Without GPU nodes the pool (the node named "") sums up every job.
func (s *Snapshot) SummarizeUtilization() {
	users, nodes := map[string]*utilSum{}, map[string]*utilSum{}
	var pool utilSum
	for i := range s.Jobs {
		j := &s.Jobs[i]
		if j.GPUs == 0 || j.Phase != string(cvlabv1alpha1.PhaseRunning) {
			continue
		}
		for _, m := range []struct {
			m   map[string]*utilSum
			key string
		}{{users, j.User}, {nodes, j.Node}} {
			if m.m[m.key] == nil {
				m.m[m.key] = &utilSum{}
			}
			m.m[m.key].add(j)
		}
		pool.add(j)
	}
	for i := range s.Users {
		u := &s.Users[i]
		sum := utilSum{}
		if p := users[u.User]; p != nil {
			sum = *p
		}
		u.Utilization, u.MeasuredGPUs, u.IdleGPUs = sum.average(), sum.gpus, sum.idle
	}
	for i := range s.Nodes {
		n := &s.Nodes[i]
		sum := utilSum{}
		if n.Name == "" && !s.NodeAware {
			sum = pool
		} else if p := nodes[n.Name]; p != nil {
			sum = *p
		}
		n.Utilization, n.MeasuredGPUs, n.IdleGPUs = sum.average(), sum.gpus, sum.idle
	}
}
