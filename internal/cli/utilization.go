package cli

import (
	"fmt"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

// What the UTIL column shows besides a percent: "-" when the job does not run on GPUs (nothing
// to measure), "?" when it runs and its utilisation is unknown (no data is never idleness).
const (
	utilNone    = "-"
	utilUnknown = "?"
)

// runsOnGPUs tells whether the job runs with GPUs: only such a job has a utilisation.
func runsOnGPUs(j *cvlabv1alpha1.CvlabJob) bool {
	return j.Spec.GPUs > 0 && j.Status.Phase == cvlabv1alpha1.PhaseRunning
}

// utilText is the UTIL cell of a row: "87%", "?" or "-".
func (q *QueueRow) utilText() string {
	switch {
	case q.GPUs == 0 || q.Phase != string(cvlabv1alpha1.PhaseRunning):
		return utilNone
	case q.Utilization == nil:
		return utilUnknown
	}
	return fmt.Sprintf("%d%%", q.Utilization.Percent)
}

// idleFor is how long a running job's GPUs have been idle, to the minute past one minute.
func idleFor(since, now time.Time) string {
	d := max(now.Sub(since), 0)
	if d >= time.Minute {
		d = d.Truncate(time.Minute)
	} else {
		d = d.Truncate(time.Second)
	}
	if d == 0 {
		return "0s"
	}
	return shortDuration(d)
}

// idleText is the IDLE cell of a row: "-" when its GPUs are not idle, else for how long, with
// "warned" or "reclaimable" once the GPUIdle condition says so.
func (q *QueueRow) idleText(now time.Time) string {
	if q.IdleSince == nil || q.Phase != string(cvlabv1alpha1.PhaseRunning) {
		return "-"
	}
	s := idleFor(*q.IdleSince, now)
	switch q.Idle {
	case cvlabv1alpha1.ReasonReclaimable:
		s += " reclaimable"
	case cvlabv1alpha1.ReasonIdle:
		s += " warned"
	}
	return s
}

// reclaimText says when an idle job's GPUs count as free for the queue, by the idle settings:
// "reclaimable now", "reclaimable in 18m", "suspended in 18m", or "only warned (--idle-action=Warn)".
func reclaimText(j *cvlabv1alpha1.CvlabJob, set observe.IdleSettings, now time.Time) string {
	if set.Action == observe.IdleWarn {
		return "only warned: --idle-action=Warn"
	}
	verb := "reclaimable"
	if set.Action == observe.IdleSuspend {
		verb = "suspended"
	}
	if queueview.IdleReason(j.Status.Conditions) == cvlabv1alpha1.ReasonReclaimable {
		return verb + " now"
	}
	at := j.Status.IdleSince.Add(set.After + set.Grace)
	if !at.After(now) {
		return verb + " at the operator's next check"
	}
	return fmt.Sprintf("%s in %s", verb, idleFor(now, at))
}

// utilSum is a GPU-weighted average of the known utilisations, and the GPUs of idle jobs.
type utilSum struct {
	weighted int64
	measured int32
	running  int32
	idle     int32
}

func (s *utilSum) add(j *cvlabv1alpha1.CvlabJob) {
	if !runsOnGPUs(j) {
		return
	}
	s.running += j.Spec.GPUs
	if u := j.Status.GPUUtilization; u != nil {
		s.weighted += int64(u.Percent) * int64(j.Spec.GPUs)
		s.measured += j.Spec.GPUs
	}
	if j.Status.IdleSince != nil {
		s.idle += j.Spec.GPUs
	}
}

// average is the weighted percent, nil when no GPU is measured.
func (s utilSum) average() *int32 {
	if s.measured == 0 {
		return nil
	}
	a := int32((s.weighted + int64(s.measured)/2) / int64(s.measured))
	return &a
}

// text is the UTIL cell of a sum: "-" without running GPUs, "?" when none is measured.
func (s utilSum) text() string {
	switch a := s.average(); {
	case s.running == 0:
		return utilNone
	case a == nil:
		return utilUnknown
	default:
		return fmt.Sprintf("%d%%", *a)
	}
}

// conditionTrue returns the condition of type t when it is True with one of reasons.
func conditionTrue(conds []metav1.Condition, t string, reasons ...string) *metav1.Condition {
	c := meta.FindStatusCondition(conds, t)
	if c == nil || c.Status != metav1.ConditionTrue {
		return nil
	}
	for _, r := range reasons {
		if c.Reason == r {
			return c
		}
	}
	return nil
}

// idle explains the job's GPU utilisation: an idle-based eviction or suspension, a running
// job's utilisation and idleness, and for a waiting job the idle GPUs of the running jobs.
func (x *explainer) idle(e *queue.Entry) {
	v, j := x.v, x.j
	set := v.Settings.Idle
	policy := fmt.Sprintf("below --idle-threshold (%d%%) for --idle-after (%s) and --idle-grace (%s)", set.Threshold,
		shortDuration(set.After), shortDuration(set.Grace))
	if c := conditionTrue(j.Status.Conditions, cvlabv1alpha1.ConditionPreempted, cvlabv1alpha1.ReasonReclaimable); c != nil {
		x.line("It was evicted because its GPUs were idle (%s): a waiting job took them, and it waits again in the queue.", policy)
		if c.Message != "" {
			x.line("  Operator: %s", c.Message)
		}
	}
	if j.Spec.Suspend && conditionTrue(j.Status.Conditions, cvlabv1alpha1.ConditionGPUIdle, cvlabv1alpha1.ReasonReclaimable) != nil {
		x.line("It was suspended because its GPUs were idle (%s, --idle-action=Suspend).", policy)
	}
	switch {
	case e == nil || j.Spec.Suspend:
	case e.State == queue.Holding:
		if runsOnGPUs(j) {
			x.utilization(set)
		}
	case !e.Admit:
		x.idleBlockers(set)
	}
}

// utilization is a running job's utilisation and, when idle, what happens next.
func (x *explainer) utilization(set observe.IdleSettings) {
	v, j := x.v, x.j
	u := j.Status.GPUUtilization
	if u == nil {
		x.line("GPU utilisation: unknown (no data from the GPU exporter): never taken for idleness.")
	} else {
		mem := ""
		if u.MemoryUsedMiB > 0 {
			mem = fmt.Sprintf(", %d MiB of GPU memory", u.MemoryUsedMiB)
		}
		x.line("GPU utilisation: %d%% over %s%s (measured %s).", u.Percent, shortDuration(u.Window.Duration), mem, clock(u.MeasuredAt.Time, v.Now))
	}
	if j.Status.IdleSince == nil {
		return
	}
	since := j.Status.IdleSince.Time
	state := ""
	switch queueview.IdleReason(j.Status.Conditions) {
	case cvlabv1alpha1.ReasonReclaimable, cvlabv1alpha1.ReasonIdle:
		state = "its owner was warned; "
	default:
		if at := since.Add(set.After); at.After(v.Now) {
			state = fmt.Sprintf("warned in %s (--idle-after %s); ", idleFor(v.Now, at), shortDuration(set.After))
		}
	}
	x.line("  Its GPUs have been idle (below --idle-threshold, %d%%) for %s, since %s: %s%s.", set.Threshold, idleFor(since, v.Now),
		clock(since, v.Now), state, x.reclaimSentence(j, set))
}

// reclaimSentence is reclaimText in words for the job explained.
func (x *explainer) reclaimSentence(j *cvlabv1alpha1.CvlabJob, set observe.IdleSettings) string {
	s := reclaimText(j, set, x.v.Now)
	if set.Action == observe.IdleReclaim && queueview.IdleReason(j.Status.Conditions) == cvlabv1alpha1.ReasonReclaimable {
		s += ": its GPUs count as free, any waiting job that fits may evict it"
	}
	return s
}

// idleBlockers lists the running jobs whose GPUs are idle, longest idle first: they hold GPUs a
// waiting job could get.
func (x *explainer) idleBlockers(set observe.IdleSettings) {
	v := x.v
	type blocker struct {
		key   string
		j     *cvlabv1alpha1.CvlabJob
		node  string
		since time.Time
	}
	var bs []blocker
	for _, o := range v.Decision.Order {
		j := v.Jobs[o.Key]
		if o.State != queue.Holding || j == nil || !runsOnGPUs(j) || j.Status.IdleSince == nil {
			continue
		}
		bs = append(bs, blocker{key: o.Key, j: j, node: o.Node, since: j.Status.IdleSince.Time})
	}
	if len(bs) == 0 {
		return
	}
	slices.SortStableFunc(bs, func(a, b blocker) int { return a.since.Compare(b.since) })
	x.line("Running jobs whose GPUs are idle (below --idle-threshold, %d%%):", set.Threshold)
	for _, b := range bs {
		node := b.node
		if node == "" {
			node = "(pool)"
		}
		x.line("  %s: %s (%s) holds %s, idle for %s (%s)", node, b.key, b.j.Spec.User, gpus(b.j.Spec.GPUs), idleFor(b.since, v.Now),
			reclaimText(b.j, set, v.Now))
	}
}
