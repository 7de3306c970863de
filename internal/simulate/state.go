package simulate

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

// AnnotationExpectedRuntime is a job's annotation with the run time its owner expects, a Go
// duration ("6h", "90m"): predictions end the job's run then instead of at its spec.timeout. It
// only informs estimates: the operator never stops a job for it.
const AnnotationExpectedRuntime = "cvlab.epfl.ch/expected-runtime"

// Live is the queue as the operator's decision loop (or kubectl cvlab) observed it: the
// observation and the engine's snapshot made from it, with the settings decided with.
type Live struct {
	Observation *observe.Observation
	Snapshot    queue.Snapshot
	Settings    observe.Settings
}

// FromLive returns the simulation that continues the live queue: its GPU nodes (less the GPUs
// held by pods outside the queue), and a State with its running and waiting jobs. A job runs for
// its expected runtime (AnnotationExpectedRuntime) or until its spec.timeout, or forever. Notes say what was assumed of which job (an annotation that does not parse,
// a run past its expected runtime). A job being evicted waits again, its GPUs free at once.
func FromLive(l Live) (Config, State, []string) {
	s := l.Snapshot
	set := l.Settings
	// The snapshot's nodes are the selected ones already.
	set.NodeSelector = labels.Everything()
	cfg := Config{Settings: set, Start: s.Now, Step: 24 * time.Hour}
	for _, n := range s.Nodes {
		// Pods outside the queue keep their GPUs; the queue's terminating pods free theirs soon.
		cfg.Nodes = append(cfg.Nodes, gpuNode(n.Name, n.GPUs-(n.Busy-n.Terminating)))
	}
	if len(s.Nodes) == 0 && s.Capacity >= 0 {
		cfg.Settings.GPUCapacity = max(s.Capacity-(s.PoolBusy-s.PoolTerminating), 0)
	}
	st := State{Now: s.Now, Head: s.Head, HeadSince: s.HeadSince}
	var notes []string
	for _, q := range s.Jobs {
		v := l.Observation.ByKey[q.Key]
		if v == nil {
			continue
		}
		j := v.Job
		sj := StateJob{Namespace: j.Namespace, Admissions: v.LastAdmission, Preemptions: int(j.Status.Preemptions),
			TraceJob: TraceJob{Name: j.Name, User: q.User, GPUs: q.GPUs, Priority: q.Priority, Submit: q.Created}}
		if t := j.Spec.Timeout; t != nil {
			sj.Timeout = t.Duration
		}
		if g := j.Spec.TerminationGracePeriodSeconds; g != nil {
			sj.Grace = time.Duration(*g) * time.Second
		}
		if q.State == queue.Holding && !q.Evicting {
			sj.Started, sj.Node = q.Started, q.Node
			if sj.Started.IsZero() { // admitted, its pod not running yet: it starts about now
				sj.Started = s.Now
			}
		}
		if raw, ok := j.Annotations[AnnotationExpectedRuntime]; ok {
			d, err := time.ParseDuration(raw)
			switch {
			case err != nil || d <= 0:
				notes = append(notes, fmt.Sprintf("%s: annotation %s=%q is not a positive duration (such as 6h or 90m): ignored",
					q.Key, AnnotationExpectedRuntime, raw))
			case !sj.Started.IsZero() && !sj.Started.Add(d).After(s.Now):
				notes = append(notes, fmt.Sprintf("%s has run past its expected runtime (%s): assumed to run until its timeout",
					q.Key, observe.ShortDuration(d)))
			default:
				sj.Runtime = d
			}
		}
		st.Jobs = append(st.Jobs, sj)
	}
	return cfg, st, notes
}

// gpuNode is a Ready node with gpus allocatable GPUs.
func gpuNode(name string, gpus int32) corev1.Node {
	return readyNode(name, corev1.ResourceList{cluster.ResourceGPU: *resource.NewQuantity(int64(max(gpus, 0)), resource.DecimalSI)})
}

// Estimate is a waiting job's predicted start: At, or when unknown (zero At) Unknown says why.
// It is the dashboard's own type, so that a prediction is shown as it is.
type Estimate = queueview.Estimate

// Prediction is what Predict foresees of the live queue.
type Prediction struct {
	// Starts are the waiting jobs' estimated starts, by "namespace/name".
	Starts map[string]Estimate
	// Forever are the jobs that run forever in the prediction (no timeout, no expected runtime),
	// running now or started on the way: when they start, by "namespace/name".
	Forever map[string]time.Time
	// Notes are what FromLive assumed of which job.
	Notes []string
}

// Predict runs the live queue forward with no new job (FromLive) and returns the waiting jobs'
// estimated starts. Every job, running or started on the way, ends at its expected runtime or
// timeout, or never. A job that has not started when nothing is left to happen has no estimate:
// it waits for jobs that never end, or it cannot start at all.
func Predict(l Live) (Prediction, error) {
	cfg, st, notes := FromLive(l)
	p := Prediction{Starts: map[string]Estimate{}, Forever: map[string]time.Time{}, Notes: notes}
	res, err := Run(cfg, st, nil)
	if err != nil {
		return p, err
	}
	waiting := map[string]bool{}
	for _, j := range st.Jobs {
		if j.Started.IsZero() {
			waiting[j.Namespace+"/"+j.Name] = true
		}
	}
	notBefore := map[string]time.Time{}
	for _, q := range l.Snapshot.Jobs {
		notBefore[q.Key] = q.NotBefore
	}
	for _, o := range res.Jobs {
		if o.Phase == string(cvlabv1alpha1.PhaseRunning) {
			p.Forever[o.Namespace+"/"+o.Name] = *o.Start
		}
	}
	forever := slices.Sorted(maps.Keys(p.Forever))
	unknown := "it would not start even once every job ahead of it has ended"
	switch len(forever) {
	case 0:
	case 1:
		unknown = forever[0] + " has no timeout"
	default:
		unknown = names(forever, 3) + " have no timeout"
	}
	for _, o := range res.Jobs {
		key := o.Namespace + "/" + o.Name
		switch {
		case !waiting[key]:
		case o.Start != nil:
			// A job backing off after a failed start starts at the end of its backoff at the
			// earliest (the simulation does not know backoffs).
			p.Starts[key] = Estimate{At: later(*o.Start, notBefore[key])}
		default:
			p.Starts[key] = Estimate{Unknown: unknown}
		}
	}
	return p, nil
}

// names lists keys, at most limit of them.
func names(keys []string, limit int) string {
	if len(keys) <= limit {
		return strings.Join(keys, ", ")
	}
	return strings.Join(keys[:limit], ", ") + fmt.Sprintf(" and %d more", len(keys)-limit)
}
