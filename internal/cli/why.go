package cli

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

// Explain says in plain sentences where a job stands and why, from the engine: its rank and the
// part of the rule that put it there, the GPUs free against those it needs and where it could
// fit, what would let it start (GPUs freed, a smaller size, both tried on the engine), whether
// it may preempt and whom, and an estimated start from the running jobs' timeouts. me is the
// person asking: their jobs are "your" jobs.
func Explain(v *View, key, me string) string {
	j := v.Jobs[key]
	x := &explainer{v: v, j: j, key: key, b: &strings.Builder{}}
	x.owner = j.Spec.User + "'s"
	if j.Spec.User == me {
		x.owner = "your"
	}
	st := &j.Status
	e := v.Entries[key]
	switch {
	case st.Phase == cvlabv1alpha1.PhaseSucceeded || st.Phase == cvlabv1alpha1.PhaseFailed:
		x.finished()
	case j.Spec.Suspend:
		x.line("%s is suspended by its owner: it is not in the queue and holds no GPU.", key)
		x.line("To queue it again: kubectl patch cvj %s -n %s --type=merge -p '{\"spec\":{\"suspend\":false}}'", j.Name, j.Namespace)
	case j.Spec.GPUs == 0:
		x.line("%s needs no GPU: CPU-only jobs never wait for the queue (phase %s).", key, phaseOf(j))
	case e == nil:
		x.line("%s is not in the queue (phase %s).", key, phaseOf(j))
	case e.State == queue.Holding:
		x.holding(e)
	default:
		x.waiting(e)
	}
	x.idle(e)
	if st.Message != "" {
		x.line("Operator's status: %s", st.Message)
	}
	if e != nil {
		for _, n := range v.Notes {
			x.line("Note: %s", n)
		}
	}
	return x.b.String()
}

type explainer struct {
	v     *View
	j     *cvlabv1alpha1.CvlabJob
	key   string
	owner string // "your" or "alice's"
	b     *strings.Builder
}

func (x *explainer) line(format string, args ...any) {
	fmt.Fprintf(x.b, format+"\n", args...)
}

func phaseOf(j *cvlabv1alpha1.CvlabJob) string {
	if j.Status.Phase == "" {
		return string(cvlabv1alpha1.PhaseQueued)
	}
	return string(j.Status.Phase)
}

func (x *explainer) finished() {
	j, now := x.j, x.v.Now
	verb := "succeeded"
	if j.Status.Phase == cvlabv1alpha1.PhaseFailed {
		verb = "failed"
		if c := meta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionFinished); c != nil && c.Reason != "" && c.Reason != "Failed" {
			verb += " (" + c.Reason + ")"
		}
	}
	at := ""
	if t := j.Status.CompletionTime; t != nil {
		at = fmt.Sprintf(" at %s (%s ago)", clock(t.Time, now), age(t.Time, now))
	}
	x.line("%s %s%s: it is no longer in the queue and holds no GPU.", x.key, verb, at)
}

// rankLine is the job's rank and the sentences of the rule that put it there.
func (x *explainer) rankLine(e *queue.Entry) {
	total := len(x.v.Decision.Order)
	what := fmt.Sprintf("it is on %s %s", x.owner, gpuOrdinals(e.FirstGPU, e.LastGPU))
	if e.FirstGPU != e.LastGPU {
		what += fmt.Sprintf(" (a %d-GPU job ranks by its last GPU, the %s)", e.GPUs, queue.Ordinal(e.LastGPU))
	}
	x.line("Rank %d of %d: %s.", e.Rank, total, what)
	var lower, same, own []string
	var lowerOrds []int32
	for _, o := range x.v.Decision.Order[:e.Rank-1] {
		switch {
		case o.User == e.User:
			own = append(own, o.Key)
		case o.LastGPU < e.LastGPU:
			lower = append(lower, o.Key)
			if !slices.Contains(lowerOrds, o.LastGPU) {
				lowerOrds = append(lowerOrds, o.LastGPU)
			}
		default:
			same = append(same, o.Key)
		}
	}
	if e.Rank == 1 {
		x.line("  No job ranks above it.")
		return
	}
	slices.Sort(lowerOrds)
	var parts []string
	if len(lower) > 0 {
		parts = append(parts, fmt.Sprintf("%d on others' %s %s", len(lower), ordinalSet(lowerOrds), pluralWord(len(lowerOrds), "GPU", "GPUs")))
	}
	if len(own) > 0 {
		who := "your own"
		if x.owner != "your" {
			who = x.owner[:len(x.owner)-2] + "'s own"
		}
		parts = append(parts, fmt.Sprintf("%d of %s jobs (higher priority or submitted earlier: %s)", len(own), who, names(own, 3)))
	}
	if len(same) > 0 {
		parts = append(parts, fmt.Sprintf("%d on others' %s GPU submitted before it", len(same), queue.Ordinal(e.LastGPU)))
	}
	x.line("  %s above it: %s.", plural(e.Rank-1, "job ranks", "jobs rank"), strings.Join(parts, ", "))
}

func pluralWord(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// names lists job keys, at most max of them.
func names(keys []string, limit int) string {
	if len(keys) <= limit {
		return strings.Join(keys, ", ")
	}
	return strings.Join(keys[:limit], ", ") + fmt.Sprintf(" and %d more", len(keys)-limit)
}

func (x *explainer) waiting(e *queue.Entry) {
	v, j := x.v, x.j
	waitingTotal := 0
	for _, o := range v.Decision.Order {
		if o.Position > 0 {
			waitingTotal++
		}
	}
	if e.Admit {
		x.line("%s (%s, %s, priority %d) is waiting, but it fits now%s: the operator starts it at its next decision (a few seconds).",
			x.key, j.Spec.User, gpus(j.Spec.GPUs), j.Spec.Priority, onNode(e.Node))
		x.rankLine(e)
		return
	}
	x.line("%s (%s, %s, priority %d) is waiting: position %d of %d in the queue.", x.key, j.Spec.User, gpus(j.Spec.GPUs), j.Spec.Priority, e.Position, waitingTotal)
	x.rankLine(e)
	x.lastEviction()

	reason := e.Reason
	if e.Blocking {
		reason = strings.TrimSuffix(reason, "; first in line, so no job ranked below it starts before it")
	}
	switch {
	case e.Wait == queue.HeadOfLine:
		x.line("Why it waits: %s: that job is first in line and has waited longer than --max-head-wait (%s), so no job ranked below it starts before it.",
			reason, shortDuration(v.Settings.MaxHeadWait))
		x.ahead(e)
		x.letItStart(e)
		x.preemption(e)
		x.estimate()
		return
	case e.Wait == queue.BackingOff:
		x.line("Why it waits: its last start failed (see its events); the operator tries again at %s.", when(e.NotBefore, v.Now))
		x.estimate()
		return
	case preemptionOf(v.Decision, x.key) != nil:
		pr := preemptionOf(v.Decision, x.key)
		x.line("Why it waits: it is evicting %s%s (--preemption=%s); it starts as soon as their pods are gone (their grace period), and the GPUs they free are kept for it.",
			x.describe(pr.Victims), onNode(pr.Node), v.Settings.Preemption.String())
		return
	case e.Wait == queue.Reserved:
		x.line("Why it waits: %s; it starts as soon as their pods are gone (their grace period), and the GPUs they free are kept for it.", reason)
		return
	case e.Wait == queue.NeverFits:
		x.line("Why it waits: it can never start as it is: %s.", reason)
		if most := x.largest(); most > 0 {
			x.line("What would let it start: resubmit it with at most %s.", gpus(most))
		}
		return
	default:
		x.line("Why it waits: %s.", reason)
	}
	if e.Blocking {
		x.line("  It is first in line and has waited --max-head-wait (%s): no job ranked below it starts before it.", shortDuration(v.Settings.MaxHeadWait))
	}
	x.nodes(e)
	x.ahead(e)
	x.letItStart(e)
	x.preemption(e)
	x.estimate()
}

// lastEviction says why the queue stopped the job's last run (status.lastEviction), while it has
// not run again since.
func (x *explainer) lastEviction() {
	st := &x.j.Status
	ev := st.LastEviction
	if ev == nil || ev.Admission < st.Admissions {
		return
	}
	at := clock(ev.Time.Time, x.v.Now) + onNode(ev.Node)
	switch ev.Reason {
	case cvlabv1alpha1.EvictionPreempted:
		x.line("Its last run was stopped at %s for %s (%s's job, ranked above it); it is back in the queue with its place kept.", at, ev.Preemptor, ev.PreemptorUser)
	case cvlabv1alpha1.EvictionIdleReclaimed:
		x.line("Its last run was stopped at %s: its GPUs sat idle and %s (%s's job) took them; until it runs again it starts only on free GPUs and preempts no one.", at, ev.Preemptor, ev.PreemptorUser)
	case cvlabv1alpha1.EvictionIdleSuspended:
		x.line("Its last run was stopped at %s: its GPUs sat idle (--idle-action=Suspend); until it runs again it starts only on free GPUs and preempts no one.", at)
	case cvlabv1alpha1.EvictionUnschedulable:
		x.line("Its last pod was stopped at %s: it stayed unschedulable for --unschedulable-timeout (see its events).", at)
	}
}

func onNode(n string) string {
	if n == "" {
		return ""
	}
	return " on node " + n
}

// largest is the most GPUs a job can ever get: the largest node, bounded by the capacity.
func (x *explainer) largest() int32 {
	v := x.v
	if !v.NodeAware {
		return v.Capacity
	}
	var most int32
	for _, n := range v.Nodes {
		most = max(most, n.GPUs)
	}
	if v.Settings.GPUCapacity >= 0 {
		most = min(most, v.Settings.GPUCapacity)
	}
	return most
}

// nodes lists the GPU nodes' free GPUs and where the job could fit.
func (x *explainer) nodes(e *queue.Entry) {
	v := x.v
	if !v.NodeAware {
		x.line("  The queue is one pool of %s (no GPU node advertises nvidia.com/gpu): placement is left to the scheduler.", gpus(v.Capacity))
		return
	}
	reservedOn := map[string][]string{}
	for k, n := range v.Decision.Reserved {
		reservedOn[n] = append(reservedOn[n], k)
	}
	var parts []string
	type fit struct {
		name       string
		gpus, more int32
	}
	var fits []fit
	for _, n := range v.Nodes {
		p := fmt.Sprintf("%s %d of %d free", n.Name, max(n.Free(), 0), n.GPUs)
		var extra []string
		if n.Foreign > 0 {
			extra = append(extra, fmt.Sprintf("%d used by other pods", n.Foreign))
		}
		if n.Terminating > 0 {
			extra = append(extra, fmt.Sprintf("%d being freed", n.Terminating))
		}
		if r := reservedOn[n.Name]; len(r) > 0 {
			slices.Sort(r)
			extra = append(extra, "kept for "+strings.Join(r, ", "))
		}
		if len(extra) > 0 {
			p += " (" + strings.Join(extra, ", ") + ")"
		}
		parts = append(parts, p)
		if n.GPUs >= e.GPUs {
			fits = append(fits, fit{n.Name, n.GPUs, e.GPUs - max(n.Free(), 0)})
		}
	}
	if len(parts) == 0 {
		x.line("  No GPU node is Ready.")
		return
	}
	if len(parts) > 8 {
		parts = append(parts[:8], fmt.Sprintf("and %d more", len(parts)-8))
	}
	x.line("  Nodes: %s.", strings.Join(parts, ", "))
	slices.SortFunc(fits, func(a, b fit) int { return cmp.Or(cmp.Compare(a.more, b.more), cmp.Compare(a.name, b.name)) })
	var where []string
	for i, f := range fits {
		if i == 4 {
			where = append(where, fmt.Sprintf("%d other nodes", len(fits)-4))
			break
		}
		where = append(where, fmt.Sprintf("%s (%d GPUs, %d more needed)", f.name, f.gpus, max(f.more, 0)))
	}
	if len(where) > 0 {
		x.line("  A job runs on one node: it fits on %s.", strings.Join(orList(where), ""))
	}
	if v.Settings.GPUCapacity >= 0 && v.Held+e.GPUs > v.Settings.GPUCapacity {
		x.line("  The queue's share (--gpu-capacity %d) is the limit: its jobs hold %d.", v.Settings.GPUCapacity, v.Held)
	}
}

// orList joins "a", "b", "c" as "a, b or c".
func orList(items []string) []string {
	if len(items) <= 1 {
		return items
	}
	return []string{strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]}
}

// ahead counts the waiting jobs ranked above it.
func (x *explainer) ahead(e *queue.Entry) {
	var n int
	var g int32
	for _, o := range x.v.Decision.Order[:e.Rank-1] {
		if o.State == queue.Waiting && !o.Admit {
			n++
			g += o.GPUs
		}
	}
	if n > 0 {
		x.line("  %s ranked above it %s for %s: when GPUs free up they go first, unless they do not fit.",
			plural(n, "job", "jobs"), pluralWord(n, "waits", "wait"), gpus(g))
	}
}

// letItStart tries, on the engine, how many freed GPUs and how small a size would start it now.
func (x *explainer) letItStart(e *queue.Entry) {
	v := x.v
	x.line("What would let it start:")
	if k, where, ok := x.freed(e); ok {
		more := fmt.Sprintf("%d more %s free", k, pluralWord(int(k), "GPU", "GPUs"))
		if v.NodeAware {
			more += " on one node (" + strings.Join(orList(where), "") + ")"
		}
		if k > e.GPUs {
			more += ": the jobs ranked above it that fit take the first ones"
		}
		x.line("  - %s.", more)
	} else {
		x.line("  - freeing GPUs alone would not start it now.")
	}
	if e.GPUs > 1 {
		found := false
		for m := e.GPUs - 1; m >= 1; m-- {
			s := cloneSnapshot(v.Snapshot)
			for i := range s.Jobs {
				if s.Jobs[i].Key == x.key {
					s.Jobs[i].GPUs = m
				}
			}
			if d := queue.Decide(s); entryOf(d, x.key).Admit {
				x.line("  - with %s instead of %d it would start now%s.", gpus(m), e.GPUs, onNode(entryOf(d, x.key).Node))
				found = true
				break
			}
		}
		if !found {
			x.line("  - with fewer GPUs it would not start now either.")
		}
	}
}

func entryOf(d queue.Decision, key string) *queue.Entry {
	for i := range d.Order {
		if d.Order[i].Key == key {
			return &d.Order[i]
		}
	}
	return &queue.Entry{}
}

// freed finds the fewest GPUs that, freed on one node (or in the pool), would start the job
// now, and the nodes where that works.
func (x *explainer) freed(e *queue.Entry) (int32, []string, bool) {
	v := x.v
	try := func(node int, k int32) bool {
		s := cloneSnapshot(v.Snapshot)
		if node < 0 {
			s.PoolBusy -= k
		} else {
			s.Nodes[node].Busy -= k
		}
		if s.Capacity >= 0 && v.NodeAware {
			s.Capacity += k
		} else if !v.NodeAware {
			s.Capacity = max(s.Capacity, 0)
		}
		return entryOf(queue.Decide(s), x.key).Admit
	}
	// The waiting jobs ranked above it take freed GPUs first.
	limit := e.GPUs
	for _, o := range v.Decision.Order[:e.Rank-1] {
		if o.State == queue.Waiting {
			limit += o.GPUs
		}
	}
	for k := int32(1); k <= limit; k++ {
		var where []string
		if !v.NodeAware {
			if try(-1, k) {
				return k, nil, true
			}
			continue
		}
		for i, n := range v.Nodes {
			// Only GPUs someone holds there can be freed.
			if k <= n.GPUs-max(n.Free(), 0) && try(i, k) {
				where = append(where, n.Name)
			}
		}
		if len(where) > 0 {
			if len(where) > 4 {
				where = append(where[:4], fmt.Sprintf("%d other nodes", len(where)-4))
			}
			return k, where, true
		}
	}
	return 0, nil, false
}

// preemption says whether the job may evict running jobs, whom and when.
func (x *explainer) preemption(e *queue.Entry) {
	v := x.v
	policy := v.Settings.Preemption
	head := fmt.Sprintf("Preemption (--preemption=%s): ", policy.String())
	switch {
	case policy == queue.PreemptNever:
		x.line(head + "the cluster never evicts running jobs.")
		return
	case policy == queue.PreemptFirstGPU && e.FirstGPU != 1:
		x.line(head+"it cannot evict anyone: only a job on its user's 1st GPU may, and this one is on %s %s.", x.owner, gpuOrdinals(e.FirstGPU, e.LastGPU))
		return
	}
	step, ok := simulate(v, func(s simStep) bool {
		return preemptionOf(s.Decision, x.key) != nil || entryOf(s.Decision, x.key).Admit
	})
	if ok {
		if pr := preemptionOf(step.Decision, x.key); pr != nil {
			victims := x.describe(pr.Victims)
			if !step.At.After(v.Now) {
				x.line(head+"it evicts %s%s now.", victims, onNode(pr.Node))
			} else {
				x.line(head+"it may evict %s%s at %s, once %s run --min-runtime (%s).", victims, onNode(pr.Node), when(step.At, v.Now),
					pluralWord(len(pr.Victims), "that job has", "those jobs have"), shortDuration(v.Settings.MinRuntime))
			}
			return
		}
	}
	below := 0
	for _, o := range v.Decision.Order[e.Rank:] {
		if o.State == queue.Holding {
			below++
		}
	}
	if below == 0 {
		x.line(head + "it may evict running jobs ranked below it, but none is running.")
		return
	}
	where := "on one node"
	if !v.NodeAware {
		where = "in the pool"
	}
	x.line(head+"it may evict running jobs ranked below it, but evicting them (%s) would not free %s %s.",
		plural(below, "job", "jobs"), gpus(e.GPUs), where)
}

// describe names jobs with their rank and GPUs: "lab/a (rank 4, alice's 3rd GPU)".
func (x *explainer) describe(keys []string) string {
	var parts []string
	for _, k := range keys {
		if o := x.v.Entries[k]; o != nil {
			parts = append(parts, fmt.Sprintf("%s (rank %d, %s's %s)", k, o.Rank, o.User, gpuOrdinals(o.FirstGPU, o.LastGPU)))
		} else {
			parts = append(parts, k)
		}
	}
	return strings.Join(parts, ", ")
}

func preemptionOf(d queue.Decision, key string) *queue.Preemption {
	for i := range d.Preemptions {
		if d.Preemptions[i].Preemptor == key {
			return &d.Preemptions[i]
		}
	}
	return nil
}

// estimate says when the job should start (Predict): the operator's decision loop run forward
// with the running jobs ending at their timeout or expected runtime, and no new job.
func (x *explainer) estimate() {
	v := x.v
	p, err := Predict(v)
	est, ok := p.Starts[x.key]
	switch {
	case err != nil:
		x.line("Estimated start: unknown: %s.", err)
		return
	case !ok:
		return
	case est.At.IsZero():
		x.line("Estimated start: unknown: %s.", est.Unknown)
		return
	}
	caveat := queueview.EstimateAssumption
	// The jobs without an end that hold GPUs before it starts.
	var forever []string
	for k, start := range p.Forever {
		if k != x.key && start.Before(est.At) {
			forever = append(forever, k)
		}
	}
	slices.Sort(forever)
	if len(forever) > 0 {
		caveat = fmt.Sprintf("%s; %s without a timeout %s assumed to run forever", caveat, names(forever, 3), pluralWord(len(forever), "is", "are"))
	}
	if d := est.At.Sub(v.Now); d > 0 {
		x.line("Estimated start: in about %s (%s), %s.", shortDuration(max(d.Round(time.Minute), time.Minute)), clock(est.At, v.Now), caveat)
	} else {
		x.line("Estimated start: now, %s.", caveat)
	}
	for _, n := range p.Notes[:min(len(p.Notes), 3)] {
		x.line("  Note: %s", n)
	}
}

// holding explains an admitted or running job.
func (x *explainer) holding(e *queue.Entry) {
	v, j := x.v, x.j
	node := e.Node
	if node == "" {
		node = "an unknown node"
	} else {
		node = "node " + node
	}
	switch {
	case j.Status.Phase == cvlabv1alpha1.PhaseRunning && j.Status.StartTime != nil:
		x.line("%s is running on %s since %s (for %s), on %s %s: rank %d of %d.", x.key, node, clock(j.Status.StartTime.Time, v.Now),
			age(j.Status.StartTime.Time, v.Now), x.owner, gpuOrdinals(e.FirstGPU, e.LastGPU), e.Rank, len(v.Decision.Order))
	default:
		x.line("%s is admitted: its pod %s on %s has not started yet; it holds %s (%s %s), rank %d of %d.", x.key, j.Status.PodName, node,
			gpus(e.GPUs), x.owner, gpuOrdinals(e.FirstGPU, e.LastGPU), e.Rank, len(v.Decision.Order))
		if p := v.Pods[x.key]; p != nil {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
					x.line("  The scheduler cannot place it yet: %s", c.Message)
				}
			}
		}
	}
	if t, ok := v.Timeouts[x.key]; ok {
		if j.Status.StartTime != nil {
			x.line("Timeout %s: it is stopped at %s at the latest.", shortDuration(t), when(j.Status.StartTime.Add(t), v.Now))
		} else {
			x.line("Timeout %s: counted from when its pod starts.", shortDuration(t))
		}
	} else {
		x.line("No timeout: it runs until it ends by itself or is cancelled.")
	}
	var cumulative int32
	for _, o := range v.Decision.Order[:e.Rank] {
		cumulative += o.GPUs
	}
	if v.CapacityKnown && cumulative > v.Budget {
		x.line("It ranks beyond the capacity cut: with the jobs ranked above it, %s are wanted and the queue can hold %d.",
			gpus(cumulative), max(v.Budget, 0))
	}
	if v.Settings.Preemption == queue.PreemptNever {
		x.line("Preemption (--preemption=Never): it is never evicted.")
		return
	}
	step, ok := simulate(v, func(s simStep) bool { return victimOf(s.Decision, x.key) != nil })
	if !ok {
		x.line("Preemption (--preemption=%s): no waiting job may evict it now.", v.Settings.Preemption.String())
		return
	}
	pr := victimOf(step.Decision, x.key)
	if !step.At.After(v.Now) {
		x.line("Preemption (--preemption=%s): it is being evicted for %s.", v.Settings.Preemption.String(), x.describe([]string{pr.Preemptor}))
		return
	}
	x.line("Preemption (--preemption=%s): it may be evicted for %s at %s, once it has run --min-runtime (%s).",
		v.Settings.Preemption.String(), x.describe([]string{pr.Preemptor}), when(step.At, v.Now), shortDuration(v.Settings.MinRuntime))
}

func victimOf(d queue.Decision, key string) *queue.Preemption {
	for i := range d.Preemptions {
		if slices.Contains(d.Preemptions[i].Victims, key) {
			return &d.Preemptions[i]
		}
	}
	return nil
}

// simStep is one decision of a simulation.
type simStep struct {
	At       time.Time
	Decision queue.Decision
}

// simulate runs the engine forward in time from the view, with no new job and no job ending:
// admitted jobs start at once, evicted jobs wait again. It stops at the first decision for which
// stop is true, and gives up when the decision can no longer change. (Estimated starts, which
// need jobs to end, run the operator's whole loop: Predict.)
func simulate(v *View, stop func(simStep) bool) (simStep, bool) {
	s := cloneSnapshot(v.Snapshot)
	for range 500 {
		d := queue.Decide(cloneSnapshot(s))
		if step := (simStep{At: s.Now, Decision: d}); stop(step) {
			return step, true
		}
		idx := make(map[string]int, len(s.Jobs))
		for i, j := range s.Jobs {
			idx[j.Key] = i
		}
		changed := false
		for _, o := range d.Order {
			if o.Admit {
				j := &s.Jobs[idx[o.Key]]
				j.State, j.Node, j.Started = queue.Holding, o.Node, s.Now
				changed = true
			}
		}
		for _, pr := range d.Preemptions {
			for _, k := range pr.Victims {
				j := &s.Jobs[idx[k]]
				j.State, j.Node, j.Started = queue.Waiting, "", time.Time{}
				changed = true
			}
		}
		s.Reserved, s.Head, s.HeadSince = d.Reserved, d.Head, d.HeadSince
		if changed {
			continue // decide again at the same time
		}
		if !d.Wakeup.After(s.Now) {
			return simStep{}, false
		}
		s.Now = d.Wakeup
	}
	return simStep{}, false
}
