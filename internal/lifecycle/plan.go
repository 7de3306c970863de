package lifecycle

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// Actions are what a decision asks the loop to do, in this order: evictions (status first, so
// that a requeued job never looks failed), unfinished evictions, other deletions, pod creations.
type Actions struct {
	// Entries are the decision's entries by job key.
	Entries    map[string]*queue.Entry
	Evictions  []observe.Eviction
	Unfinished []observe.UnfinishedEviction
	Deletions  []*corev1.Pod
	Creations  []*Creation
}

// Creation is one pod to create, for View's next admission, on Node ("" for CPU-only jobs and in
// pool mode); Err is set by the loop when it failed.
type Creation struct {
	View *observe.Job
	Node string
	Err  error
}

// Plan turns a decision into actions: pure, so that a decision's consequences are unit-tested
// without an API server, and simulated.
func Plan(obs *observe.Observation, d queue.Decision) Actions {
	p := Actions{Entries: make(map[string]*queue.Entry, len(d.Order)), Unfinished: obs.UnfinishedEvictions, Deletions: obs.ToDelete}
	for i := range d.Order {
		p.Entries[d.Order[i].Key] = &d.Order[i]
	}
	// Evictions: jobs requeued because their pod was unschedulable too long, and preemptions.
	p.Evictions = slices.Clone(obs.Requeues)
	for _, pr := range d.Preemptions {
		p.Evictions = append(p.Evictions, PreemptionEvictions(obs, pr, p.Entries)...)
	}
	admit := map[string]string{} // key → node
	for _, k := range d.AdmitCPU {
		admit[k] = ""
	}
	for _, e := range d.Order {
		if e.Admit {
			admit[e.Key] = e.Node
		}
	}
	for _, v := range obs.Views {
		if len(admit) == 0 {
			break // most decisions admit no one: no key to build for every job
		}
		if node, ok := admit[v.Key()]; ok {
			delete(admit, v.Key())
			p.Creations = append(p.Creations, &Creation{View: v, Node: node})
		}
	}
	return p
}

// PreemptionEvictions turns one preemption into evictions of its victims, and reserves the node
// for the preemptor until it starts.
func PreemptionEvictions(obs *observe.Observation, pr queue.Preemption, entries map[string]*queue.Entry) []observe.Eviction {
	p, pe := obs.ByKey[pr.Preemptor], entries[pr.Preemptor]
	var out []observe.Eviction
	for _, k := range pr.Victims {
		v, ve := obs.ByKey[k], entries[k]
		if v == nil || v.Live == nil || ve == nil {
			continue
		}
		msg := fmt.Sprintf("evicted for %s, %s's %s outrank%s your %s; back in the queue",
			pr.Preemptor, p.Job.Spec.User, gpuOrdinals(pe.FirstGPU, pe.LastGPU), plural(pe.FirstGPU == pe.LastGPU), gpuOrdinals(ve.FirstGPU, ve.LastGPU))
		var idleSince time.Time
		if ve.Idle { // reclaimed: any waiting job may evict an idle job (queue.Job.Idle)
			idleSince = v.GPU.Since
			msg = fmt.Sprintf("evicted for %s: your GPUs were idle (below %d%%) since %s; back in the queue",
				pr.Preemptor, v.GPU.Settings.Threshold, idleSince.UTC().Format(time.RFC3339))
		}
		out = append(out, observe.Eviction{View: v, Reason: cvlabv1alpha1.EventPreempted, Message: msg, Preemptor: p, Node: pr.Node, IdleSince: idleSince})
	}
	return out
}

// PodName is the deterministic name of the pod of a job's n-th admission: a retry of the same
// admission can never create a second pod.
func PodName(job *cvlabv1alpha1.CvlabJob, admission int32) string {
	suffix := "-" + strconv.Itoa(int(admission))
	name := job.Name
	if max := 253 - len(suffix); len(name) > max {
		name = strings.TrimRight(name[:max], ".-") // a DNS subdomain's parts end alphanumeric
	}
	return name + suffix
}

// gpuOrdinals names a user's GPU ordinals: "1st GPU", "2nd-3rd GPUs".
func gpuOrdinals(first, last int32) string {
	if first == last {
		return queue.Ordinal(last) + " GPU"
	}
	return queue.Ordinal(first) + "-" + queue.Ordinal(last) + " GPUs"
}

func plural(single bool) string {
	if single {
		return "s"
	}
	return ""
}

func ptrInt32(n int) *int32 {
	v := int32(n)
	return &v
}
