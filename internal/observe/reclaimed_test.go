package observe

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// TestSnapshotReclaimed: a waiting job whose idle GPUs were taken back, and that was not admitted
// since, preempts no one (queue.Job.Reclaimed); read from status.lastEviction alone.
func TestSnapshotReclaimed(t *testing.T) {
	evicted := func(reason cvlabv1alpha1.EvictionReason, admission int32) jobOpt {
		return func(j *cvlabv1alpha1.CvlabJob) {
			j.Status.LastEviction = &cvlabv1alpha1.Eviction{Reason: reason, Admission: admission, Time: metav1.NewTime(t0)}
		}
	}
	cases := map[string]struct {
		job  *cvlabv1alpha1.CvlabJob
		want bool
	}{
		"never evicted":                          {job: newJob("a", 1, status(cvlabv1alpha1.PhaseQueued, 0, "")), want: false},
		"preempted by rank":                      {job: newJob("a", 1, status(cvlabv1alpha1.PhaseQueued, 1, ""), evicted(cvlabv1alpha1.EvictionPreempted, 1)), want: false},
		"idle GPUs given to a waiting job":       {job: newJob("a", 1, status(cvlabv1alpha1.PhaseQueued, 1, ""), evicted(cvlabv1alpha1.EvictionIdleReclaimed, 1)), want: true},
		"suspended for idling":                   {job: newJob("a", 1, status(cvlabv1alpha1.PhaseQueued, 1, ""), evicted(cvlabv1alpha1.EvictionIdleSuspended, 1)), want: true},
		"reclaimed, then ran again, then queued": {job: newJob("a", 1, status(cvlabv1alpha1.PhaseQueued, 2, ""), evicted(cvlabv1alpha1.EvictionIdleReclaimed, 1)), want: false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			obs := Observe(Input{Jobs: []*cvlabv1alpha1.CvlabJob{tc.job}, Nodes: oneNode(), Settings: DefaultSettings(), Now: now})
			s := obs.Snapshot(now)
			if len(s.Jobs) != 1 {
				t.Fatalf("snapshot has %d jobs, want 1", len(s.Jobs))
			}
			if got := s.Jobs[0].Reclaimed; got != tc.want {
				t.Errorf("Reclaimed = %v, want %v", got, tc.want)
			}
		})
	}
}
