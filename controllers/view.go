package controllers

import (
	"cmp"
	"slices"
	"time"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
	"github.com/epfl-cvlab/cvlab-queue/internal/simulate"
)

// status is the job's status after this decision: what is being written, what was written, or
// what was already there (the status writer knows).
func (r *QueueReconciler) status(v *observe.Job) *cvlabv1alpha1.CvlabJobStatus {
	return r.writer.status(v.Job, v.Cur)
}

// publish records the outcome of a decision: metrics, and the snapshot the dashboard serves.
func (r *QueueReconciler) publish(obs *observe.Observation, d queue.Decision, s queue.Snapshot, now time.Time) {
	snap := &queueview.Snapshot{Time: now, NodeAware: obs.Cluster.NodeAware, Foreign: obs.Cluster.Foreign}

	// Capacity: Ready GPU nodes (or the pool), bounded by --gpu-capacity, less foreign pods.
	if obs.Cluster.NodeAware {
		for _, n := range s.Nodes {
			snap.Capacity += n.GPUs
		}
		if s.Capacity >= 0 {
			snap.Capacity = min(snap.Capacity, s.Capacity)
		}
	} else {
		snap.Capacity = s.Capacity
	}

	phases := map[string]float64{}
	users := map[string]*queueview.User{}
	user := func(name string) *queueview.User {
		if u, ok := users[name]; ok {
			return u
		}
		u := &queueview.User{User: name}
		users[name] = u
		return u
	}
	usedOn := map[string]int32{}
	jobOf := func(v *observe.Job) queueview.Job {
		st := r.status(v)
		j := queueview.Job{
			Namespace: v.Job.Namespace, Name: v.Job.Name, User: v.Job.Spec.User, GPUs: v.Job.Spec.GPUs,
			UserGPUs: st.UserGPUs, Priority: v.Job.Spec.Priority, Phase: string(st.Phase), Node: v.Node,
			Since: v.Job.CreationTimestamp.Time, Message: st.Message, Preemptions: st.Preemptions,
		}
		if st.StartTime != nil && st.Phase == cvlabv1alpha1.PhaseRunning {
			j.Since = st.StartTime.Time
		}
		if st.Rank != nil {
			j.Rank = int(*st.Rank)
		}
		if st.QueuePosition != nil {
			j.Position = int(*st.QueuePosition)
		}
		j.SetUtilization(st)
		return j
	}
	for _, v := range obs.Views {
		phases[string(r.status(v).Phase)]++
	}
	var cumulative int32
	byKey := obs.ByKey
	for _, e := range d.Order {
		v := byKey[e.Key]
		j := jobOf(v)
		cumulative += e.GPUs
		j.InCapacity = cumulative <= snap.Capacity-snap.Foreign
		snap.Jobs = append(snap.Jobs, j)
		u := user(j.User)
		switch cvlabv1alpha1.JobPhase(j.Phase) {
		case cvlabv1alpha1.PhaseAdmitted, cvlabv1alpha1.PhaseRunning:
			u.GPUsInUse += j.GPUs
			u.RunningJobs++
			snap.Used += j.GPUs
			usedOn[j.Node] += j.GPUs
		case cvlabv1alpha1.PhaseQueued:
			u.WaitingJobs++
			u.WaitingGPUs += j.GPUs
		}
	}
	for _, v := range obs.Views { // active CPU-only jobs after the GPU order
		st := r.status(v)
		if v.Job.Spec.GPUs == 0 && !IsFinished(st) && st.Phase != cvlabv1alpha1.PhaseSuspended {
			j := jobOf(v)
			j.InCapacity = true
			snap.Jobs = append(snap.Jobs, j)
		}
	}
	for _, u := range users {
		snap.Users = append(snap.Users, *u)
	}
	slices.SortFunc(snap.Users, func(a, b queueview.User) int {
		if a.GPUsInUse != b.GPUsInUse {
			return int(b.GPUsInUse - a.GPUsInUse)
		}
		return cmp.Compare(a.User, b.User)
	})
	if obs.Cluster.NodeAware {
		for _, n := range s.Nodes {
			foreign := n.Busy - n.Terminating
			snap.Nodes = append(snap.Nodes, queueview.Node{Name: n.Name, GPUs: n.GPUs, Used: usedOn[n.Name] + n.Terminating,
				Foreign: foreign, Free: max(n.GPUs-n.Busy-usedOn[n.Name], 0)})
		}
	} else {
		snap.Nodes = []queueview.Node{{GPUs: s.Capacity, Used: snap.Used + s.PoolTerminating, Foreign: s.PoolBusy - s.PoolTerminating,
			Free: max(s.Capacity-s.PoolBusy-snap.Used, 0)}}
	}
	snap.Free = max(snap.Capacity-snap.Foreign-snap.Used, 0)
	snap.SummarizeUtilization()
	snap.Preemptions = slices.Clone(r.recentPreemptions)
	snap.Estimate = estimates(simulate.Live{Observation: obs, Snapshot: s, Settings: r.opts.Settings()})

	// Metrics.
	metricCapacity.Set(float64(snap.Capacity))
	metricGPUsInUse.Reset()
	for _, u := range snap.Users {
		if u.GPUsInUse > 0 {
			metricGPUsInUse.WithLabelValues(u.User).Set(float64(u.GPUsInUse))
		}
	}
	metricJobs.Reset()
	for p, n := range phases {
		metricJobs.WithLabelValues(p).Set(n)
	}
	var waiting float64
	for _, e := range d.Order {
		if e.Position > 0 {
			waiting++
		}
	}
	metricWaiting.Set(waiting)

	if r.opts.View != nil {
		r.opts.View.Publish(snap)
	}
}

// estimates returns the waiting jobs' estimated starts, computed when the dashboard asks for
// them (simulate.Predict runs the loop forward), never in the decision: nil when they cannot be.
func estimates(l simulate.Live) func() map[string]queueview.Estimate {
	return func() map[string]queueview.Estimate {
		p, err := simulate.Predict(l)
		if err != nil {
			return nil
		}
		return p.Starts
	}
}

// notePreemption keeps the last preemptions for the dashboard.
func (r *QueueReconciler) notePreemption(p queueview.Preemption) {
	r.recentPreemptions = append([]queueview.Preemption{p}, r.recentPreemptions...)
	if len(r.recentPreemptions) > queueview.MaxPreemptions {
		r.recentPreemptions = r.recentPreemptions[:queueview.MaxPreemptions]
	}
}
