package cli

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// whyCase is a scenario and the job asked about.
type whyCase struct {
	s   *scenario
	set observe.Settings
	key string
	me  string
}

func settings(f func(*observe.Settings)) observe.Settings {
	s := observe.DefaultSettings()
	f(&s)
	return s
}

// whyScenarios are engine scenarios whose answers are known (worked out by hand in the comments).
func whyScenarios() map[string]whyCase {
	def := observe.DefaultSettings()
	return map[string]whyCase{
		// carol's only job, on her 1st GPU, ranks first; nothing is free and the only job ranked
		// below it that holds GPUs is alice's 4-GPU job, 1 minute old: carol evicts it when it
		// reaches --min-runtime (10m), at 09:09.
		"1st GPU waits for a young victim": {s: lab(), set: def, key: "lab/carol-c", me: "carol"},
		// alice's 2-GPU job after her 4-GPU job covers her 5th-6th GPUs: 3 jobs of others on
		// 1st-3rd GPUs and her own job rank above; it cannot preempt; it starts at 09:09 when
		// carol evicts alice-a (4 GPUs free on n1: carol 1, bob-e 1, alice-d 2).
		"5th-6th GPUs behind others": {s: lab(), set: def, key: "lab/alice-d", me: "alice"},
		// Without preemption, alice-d starts when alice-a reaches its 2h timeout at 10:59.
		"estimate from a timeout": {s: lab(), set: settings(func(s *observe.Settings) { s.Preemption = queue.PreemptNever }), key: "lab/alice-d", me: "alice"},
		// dave's 3rd GPU: 7 jobs on others' 1st/2nd GPUs and his own 2 rank above.
		"3rd GPU behind others' 1st/2nd": {s: third(), set: def, key: "lab/dave-3", me: "dave"},
		// 2 of 4 GPUs free, needs 3: with 2 GPUs it would start now; 1 more freed would do.
		"a smaller size would start now": {s: newScenario().node("n1", 4).
			job("ann-1", "ann", 2, time.Hour).running("n1", time.Hour).
			job("ben-1", "ben", 3, time.Minute), set: def, key: "lab/ben-1", me: "ben"},
		// Two nodes with 2 free each: a 4-GPU job waits although 4 GPUs are free.
		"fragmented": {s: newScenario().node("n1", 4).node("n2", 4).
			job("ann-1", "ann", 2, time.Hour).running("n1", time.Hour).
			job("ben-1", "ben", 2, time.Hour).running("n2", time.Hour).
			job("cat-1", "cat", 4, time.Minute), set: def, key: "lab/cat-1", me: "cat"},
		"never fits": {s: newScenario().node("n1", 8).job("big", "ann", 12, time.Minute), set: def, key: "lab/big", me: "ann"},
		// ben's 8-GPU job is first in line and has waited --max-head-wait (the operator publishes
		// it as its head since 35m): ann's 1-GPU job on her 9th GPU ranks below it and is held,
		// although 4 GPUs are free.
		"held behind a blocking head": {s: newScenario().node("n1", 8).node("n2", 8).
			job("ann-1", "ann", 8, 2*time.Hour).running("n1", 2*time.Hour).
			job("dan-1", "dan", 4, 2*time.Hour).running("n2", 2*time.Hour).
			job("big", "ben", 8, 40*time.Minute, message("waiting: 4 GPUs free, needs 8; first in line, so no job ranked below it starts before it; next in line")).
			job("small", "ann", 1, 30*time.Minute).firstInLine("lab/big", 35*time.Minute), set: def, key: "lab/small", me: "ann"},
		// Its start failed: status.backoffUntil holds it back until 09:05.
		"backing off": {s: newScenario().node("n1", 8).
			job("ann-1", "ann", 1, time.Minute, backoffUntil(t0.Add(5*time.Minute)),
				message("waiting: backing off after a failed start until 2026-11-29T09:05:00Z; next in line")),
			set: def, key: "lab/ann-1", me: "ann"},
		// ann preempted bob's job on n1; its pod is still stopping.
		"waiting for its victims to stop": {s: preempting(), set: def, key: "lab/ann-1", me: "ann"},
		// bob-2 is back in the queue after ann's eviction, told why from status.lastEviction.
		"preempted, back in the queue": {s: preempting(), set: def, key: "lab/bob-2", me: "bob"},
		"fits now":                     {s: newScenario().node("n1", 8).job("ann-1", "ann", 1, time.Second), set: def, key: "lab/ann-1", me: "ann"},
		// Under Rank, bob's job on his 2nd GPU may evict cat's job on her 4th GPU (ranked below it)
		// once it has run --min-runtime, at 09:05.
		"Rank policy": {s: newScenario().node("n1", 2).
			job("bob-1", "bob", 1, 3*time.Hour).running("n1", 3*time.Hour).
			job("cat-1", "cat", 3, 2*time.Hour).
			job("cat-2", "cat", 1, 2*time.Hour).running("n1", 5*time.Minute).
			job("bob-2", "bob", 1, time.Minute),
			set: settings(func(s *observe.Settings) { s.Preemption = queue.PreemptRank }), key: "lab/bob-2", me: "bob"},
		// No GPU node: a pool of --gpu-capacity 4 GPUs. ben's 1st-2nd GPUs outrank ann's 1st-3rd
		// GPUs, which started 5 minutes ago: ben evicts it at 09:05.
		"pool mode": {s: newScenario().
			job("ann-1", "ann", 3, time.Hour, phase(cvlabv1alpha1.PhaseRunning), func(j *cvlabv1alpha1.CvlabJob) {
				j.Status.StartTime = ptr.To(metav1.NewTime(t0.Add(-5 * time.Minute)))
			}).
			job("ben-1", "ben", 2, time.Minute),
			set: settings(func(s *observe.Settings) { s.GPUCapacity = 4 }), key: "lab/ben-1", me: "ben"},
		"running beyond the cut": {s: lab(), set: def, key: "lab/alice-a", me: "alice"},
		"running, safe":          {s: lab(), set: def, key: "lab/bob-b", me: "alice"},
		"admitted, unschedulable": {s: func() *scenario {
			s := newScenario().node("n1", 4).job("ann-1", "ann", 1, time.Hour).running("n1", 0)
			j, p := &s.c.Jobs[0], &s.c.Pods[0]
			j.Status.Phase, j.Status.StartTime = cvlabv1alpha1.PhaseAdmitted, nil
			p.Spec.NodeName, p.Status.Phase = "", corev1.PodPending
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
				Message: "0/3 nodes are available: 1 Insufficient memory."}}
			return s
		}(), set: def, key: "lab/ann-1", me: "ann"},
		"succeeded": {s: newScenario().job("ann-1", "ann", 1, time.Hour, func(j *cvlabv1alpha1.CvlabJob) {
			j.Status.Phase, j.Status.CompletionTime, j.Status.Message = cvlabv1alpha1.PhaseSucceeded, ptr.To(metav1.NewTime(t0.Add(-20*time.Minute))), "pod ann-1-1 succeeded"
		}), set: def, key: "lab/ann-1", me: "ann"},
		"failed on its timeout": {s: newScenario().job("ann-1", "ann", 1, time.Hour, func(j *cvlabv1alpha1.CvlabJob) {
			j.Status.Phase, j.Status.CompletionTime = cvlabv1alpha1.PhaseFailed, ptr.To(metav1.NewTime(t0.Add(-2*time.Hour)))
			j.Status.Message = "pod ann-1-1 was stopped after the job's timeout of 1h0m0s"
			j.Status.Conditions = []metav1.Condition{{Type: "Finished", Status: "True", Reason: "DeadlineExceeded"}}
		}), set: def, key: "lab/ann-1", me: "ann"},
		"suspended": {s: newScenario().job("ann-1", "ann", 1, time.Hour, func(j *cvlabv1alpha1.CvlabJob) {
			j.Spec.Suspend, j.Status.Phase = true, cvlabv1alpha1.PhaseSuspended
			j.Status.Message = "suspended by its owner: set spec.suspend to false to queue it again"
		}), set: def, key: "lab/ann-1", me: "ann"},
		"CPU only": {s: newScenario().job("prep", "ann", 0, time.Minute, phase(cvlabv1alpha1.PhaseRunning)), set: def, key: "lab/prep", me: "ann"},
	}
}

// third: one 8-GPU node, full. ann, ben and cat run jobs on their 1st and 2nd GPUs (cat's 2nd
// waits), eve on her 1st, dave on his 1st and 2nd; dave's 3rd waits.
func third() *scenario {
	s := newScenario().node("n1", 8)
	for i, u := range []string{"ann", "ben", "cat", "dave", "eve"} {
		ago := time.Duration(10-i) * time.Hour
		s.job(u+"-1", u, 1, ago).running("n1", ago)
	}
	for i, u := range []string{"ann", "ben", "dave"} {
		ago := time.Duration(5-i) * time.Hour
		s.job(u+"-2", u, 1, ago).running("n1", ago)
	}
	return s.job("cat-2", "cat", 1, 2*time.Hour).job("dave-3", "dave", 1, time.Hour)
}

// preempting: ann (1st GPU) evicted bob's 2nd-GPU job on n1, whose pod is still stopping; n1's
// GPUs are kept for ann (status.reservedNode).
func preempting() *scenario {
	s := newScenario().node("n1", 2).
		job("bob-1", "bob", 1, 3*time.Hour).running("n1", 3*time.Hour).
		job("bob-2", "bob", 1, 2*time.Hour).running("n1", 2*time.Hour).
		job("ann-1", "ann", 1, time.Minute, reservedNode("n1"), message("waiting: waiting for the jobs it preempted to stop on node n1; next in line"))
	j := &s.c.Jobs[1]
	j.Status.Phase, j.Status.StartTime, j.Status.Node = cvlabv1alpha1.PhaseQueued, nil, ""
	j.Status.Message = "evicted for lab/ann-1, ann's 1st GPU outranks your 2nd GPU; back in the queue"
	j.Status.LastEviction = &cvlabv1alpha1.Eviction{Reason: cvlabv1alpha1.EvictionPreempted, Preemptor: "lab/ann-1", PreemptorUser: "ann",
		Node: "n1", Admission: j.Status.Admissions, Time: metav1.NewTime(t0.Add(-5 * time.Second))}
	s.c.Pods[1].DeletionTimestamp = ptr.To(metav1.NewTime(t0.Add(-5 * time.Second)))
	return s
}
