package simulate_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/simulate"
)

// TestPodsAreTheOperators: what the observation reads of a simulated pod is what it reads of the
// operator's (controllers.BuildPod) for the same admission.
func TestPodsAreTheOperators(t *testing.T) {
	type read struct {
		Name, Namespace, Node, Owner string
		GPUs, Admission              int32
		Grace, Deadline              int64
	}
	readOf := func(p *corev1.Pod) read {
		uid, _ := observe.JobOf(p)
		return read{p.Name, p.Namespace, cluster.PodNode(p), string(uid), cluster.PodGPUs(p), cluster.PodAdmission(p),
			*p.Spec.TerminationGracePeriodSeconds, *p.Spec.ActiveDeadlineSeconds}
	}
	for name, tr := range map[string]simulate.TraceJob{
		"defaults":            {Name: "train", User: "alice", GPUs: 4, Runtime: time.Hour, Timeout: 90 * time.Minute},
		"grace and fractions": {Name: "nb", User: "bob", GPUs: 1, Runtime: time.Hour, Timeout: 1500 * time.Millisecond, Grace: 4500 * time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			job, ours, err := simulate.SimulatedPod(tr, 2, "n1")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(readOf(controllers.BuildPod(job, 2, "n1", "n1")), readOf(ours)); diff != "" {
				t.Errorf("(-operator's +simulated):\n%s", diff)
			}
		})
	}
}
