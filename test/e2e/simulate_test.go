//go:build e2e

package e2e_test

import (
	"fmt"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/simulate"
)

// kwokStep is the time granularity of the local cluster: kwok stamps a pod's start and end to
// the second, and each start waits for a decision, a binding and kwok's next pass.
const kwokStep = 2 * time.Second

// The simulator runs the operator's own decision loop on a virtual clock: the same small trace,
// run for real on the local cluster and in the simulator, gives the same admissions at the same
// times, within the kwok step.
var _ = Describe("The simulator", func() {
	It("agrees with the local cluster on a trace with a preemption and a requeue", func(ctx SpecContext) {
		ns := newNamespace(ctx, "e2e-sim")
		// 4 GPUs on 2 nodes. ann and ben fill them (a1, b1: 2 GPUs each), ann's and ben's 3rd GPUs
		// (a2, b2) wait. Once a1 and b1 run, cat's 1st GPU (c1) arrives: it outranks their 2nd
		// GPUs and, with --min-runtime=0s, evicts one of them at once; the evicted job waits again,
		// starts over when GPUs free up, and may evict in turn. Users and names sort alike, so
		// that ties between jobs created in the same second break the same way here
		// (namespace/name) and in the simulator (user/name).
		type spec struct {
			name, user string
			gpus       int32
			runtime    time.Duration
		}
		first := []spec{{"a1", "ann", 2, 10 * time.Second}, {"b1", "ben", 2, 16 * time.Second},
			{"a2", "ann", 1, 5 * time.Second}, {"b2", "ben", 1, 4 * time.Second}}
		late := spec{"c1", "cat", 1, 6 * time.Second}
		all := append(slices.Clone(first), late)

		submit := func(s spec) {
			j := job(ns, s.name, s.user, s.gpus, s.runtime.String())
			// The pod stops 1 s after its eviction (kwok's simulated shutdown).
			grace := int64(1)
			j.Spec.TerminationGracePeriodSeconds = &grace
			create(ctx, j)
		}
		for _, s := range first {
			submit(s)
		}
		// The first starts, seen before c1 evicts one of them.
		started := map[string]time.Time{}
		for _, name := range []string{"a1", "b1"} {
			runningPod(ctx, ns, name)
			started[name] = getJob(ctx, ns, name).Status.StartTime.Time
		}
		submit(late)
		for _, s := range all {
			waitFinished(ctx, ns, s.name)
		}

		// What happened. A job's status has the start of its last run; the first start of a job
		// evicted since is known for a1 and b1 only, seen above.
		type outcome struct {
			first, last, end time.Time
			preemptions      int
		}
		actual := map[string]outcome{}
		var trace []simulate.TraceJob
		for _, s := range all {
			j := getJob(ctx, ns, s.name)
			Expect(j.Status.Phase).To(Equal(cvlabv1alpha1.PhaseSucceeded), s.name)
			o := outcome{last: j.Status.StartTime.Time, end: j.Status.CompletionTime.Time, preemptions: int(j.Status.Preemptions)}
			if t, ok := started[s.name]; ok {
				o.first = t
			} else if o.preemptions == 0 {
				o.first = o.last
			}
			actual[s.name] = o
			submit := j.CreationTimestamp.Time
			if s == late {
				// c1 was created once a1 and b1 ran; the API server stamps times to the second,
				// which may be the second they started in.
				for _, t := range started {
					if !submit.After(t) {
						submit = t.Add(time.Nanosecond)
					}
				}
			}
			trace = append(trace, simulate.TraceJob{Name: s.name, User: s.user, GPUs: s.gpus, Runtime: s.runtime, Submit: submit, Grace: time.Second})
		}

		// The same trace in the simulator, with the operator's published settings and the
		// cluster's nodes.
		var cms corev1.ConfigMapList
		Expect(k8s.List(ctx, &cms)).To(Succeed())
		i := slices.IndexFunc(cms.Items, func(cm corev1.ConfigMap) bool { return cm.Name == observe.PublishedName })
		Expect(i).NotTo(Equal(-1), "the operator publishes its settings in a ConfigMap %s", observe.PublishedName)
		pub, err := observe.ParsePublished(cms.Items[i].Data)
		Expect(err).NotTo(HaveOccurred())
		Expect(pub.Settings.MinRuntime).To(BeZero())
		var nodeList corev1.NodeList
		Expect(k8s.List(ctx, &nodeList, client.MatchingLabels{"cvlab.epfl.ch/local-node": "true"})).To(Succeed())
		res, err := simulate.Run(simulate.Config{Settings: pub.Settings, Nodes: nodeList.Items, StopDelay: time.Second}, simulate.State{}, trace)
		Expect(err).NotTo(HaveOccurred())
		simulated := map[string]outcome{}
		for _, o := range res.Jobs {
			Expect(o.Start).NotTo(BeNil(), o.Name)
			Expect(o.End).NotTo(BeNil(), o.Name)
			i := slices.IndexFunc(all, func(s spec) bool { return s.name == o.Name })
			simulated[o.Name] = outcome{first: *o.Start, last: o.End.Add(-all[i].runtime), end: *o.End, preemptions: o.Preemptions}
		}

		var table strings.Builder
		clock := func(t time.Time, layout string) string {
			if t.IsZero() {
				return "?"
			}
			return t.Format(layout)
		}
		fmt.Fprintf(&table, "%-4s %-22s %-22s %-22s %s\n", "job", "first start", "last start", "end", "preemptions")
		var worst time.Duration
		for _, s := range all {
			r, m := actual[s.name], simulated[s.name]
			cell := func(a, b time.Time) string { return clock(a, "15:04:05") + " / " + clock(b, "15:04:05.0") }
			fmt.Fprintf(&table, "%-4s %-22s %-22s %-22s %d / %d\n", s.name, cell(r.first, m.first), cell(r.last, m.last), cell(r.end, m.end),
				r.preemptions, m.preemptions)
			worst = max(worst, r.last.Sub(m.last).Abs(), r.end.Sub(m.end).Abs())
			if !r.first.IsZero() {
				worst = max(worst, r.first.Sub(m.first).Abs())
			}
		}
		AddReportEntry("real / simulated", table.String()+"largest difference: "+worst.String())

		// The same evictions, the same starts and ends within the kwok step, and the same order.
		evicted := 0
		for _, s := range all {
			r, m := actual[s.name], simulated[s.name]
			Expect(m.preemptions).To(Equal(r.preemptions), "preemptions of %s\n%s", s.name, table.String())
			evicted += r.preemptions
			if !r.first.IsZero() {
				Expect(m.first).To(BeTemporally("~", r.first, kwokStep), "first start of %s\n%s", s.name, table.String())
			}
			Expect(m.last).To(BeTemporally("~", r.last, kwokStep), "last start of %s\n%s", s.name, table.String())
			Expect(m.end).To(BeTemporally("~", r.end, kwokStep), "end of %s\n%s", s.name, table.String())
		}
		Expect(evicted).To(BeNumerically(">=", 1), "the trace evicts a job\n%s", table.String())
		for _, a := range all {
			for _, b := range all {
				if actual[a.name].last.Add(kwokStep).Before(actual[b.name].last) {
					Expect(simulated[a.name].last.Before(simulated[b.name].last)).To(BeTrue(),
						"%s started before %s on the cluster, not in the simulator\n%s", a.name, b.name, table.String())
				}
			}
		}
	})
})
