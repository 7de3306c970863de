package notify

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
)

// DueSettings say which notifications are due, and when.
type DueSettings struct {
	// Defaults are the kinds the owner of a job without spec.notify is told about (--notify).
	Defaults []Kind
	// StartedAfter: a Started message is due only after a wait at least this long
	// (--notify-started-after).
	StartedAfter time.Duration
	// DeadlineShare is the share of spec.timeout left when DeadlineSoon is due
	// (--notify-deadline-soon): 0.2 tells at 80% of the time.
	DeadlineShare float64
	// MaxAge: a transition older than this is not notified any more (a manager that was down
	// longer, a job edited long after it ended).
	MaxAge time.Duration
	// Since: transitions before it are never notified (the notifications' own start, from the
	// store): enabling notifications does not tell everyone about last month.
	Since time.Time
	// The idle policy, to say what happens to an idle job and when.
	IdleThreshold        int32
	IdleAction           string // Reclaim, Warn, Suspend
	IdleAfter, IdleGrace time.Duration
}

// Wanted are the kinds job's owner asked for: spec.notify, or the defaults.
func (s DueSettings) Wanted(job *cvlabv1alpha1.CvlabJob) []Kind {
	if len(job.Spec.Notify) == 0 {
		return s.Defaults
	}
	var kinds []Kind
	for _, k := range job.Spec.Notify {
		if k == cvlabv1alpha1.NotifyNone {
			return nil
		}
		kinds = append(kinds, Kind(k))
	}
	return kinds
}

// PlaceWait is how long a Preempted message waits for the job's new place in the queue
// (status.queuePosition, written a moment after the eviction) before it goes without it.
const PlaceWait = 30 * time.Second

// Due are the notifications job's status (and its pod's, for an exit code; nil when unknown)
// calls for at now: one per transition, keyed so that the same transition always gives the same
// key. Next is when Due should look again although nothing changed (a DeadlineSoon to come, a
// preemption waiting for the job's new place); zero when never. It only reads typed fields: sentences are passed on as Detail, never parsed.
func Due(job *cvlabv1alpha1.CvlabJob, pod *corev1.Pod, s DueSettings, now time.Time) (events []Event, next time.Time) {
	wanted := s.Wanted(job)
	if len(wanted) == 0 {
		return nil, time.Time{}
	}
	st := &job.Status
	ref := JobRef{Namespace: job.Namespace, Name: job.Name, User: job.Spec.User, UserGPUs: st.UserGPUs}
	fresh := func(at time.Time) bool {
		return !at.IsZero() && !at.Before(s.Since) && (s.MaxAge <= 0 || now.Sub(at) <= s.MaxAge)
	}
	add := func(kind Kind, n string, at time.Time, fill func(*Event)) {
		if !slices.Contains(wanted, kind) || !fresh(at) {
			return
		}
		e := Event{Key: fmt.Sprintf("%s.%s.%s", job.UID, kind, n), Kind: kind, Job: ref, At: at}
		fill(&e)
		events = append(events, e)
	}

	soon := func(at time.Time) {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	if ev := st.LastEviction; ev != nil && ev.Reason != cvlabv1alpha1.EvictionUnschedulable {
		if st.Phase == cvlabv1alpha1.PhaseQueued && st.QueuePosition == nil && st.Admissions == ev.Admission &&
			st.WaitingReason != cvlabv1alpha1.WaitingBackingOff && now.Before(ev.Time.Add(PlaceWait)) {
			// Its new place in the queue is written a moment after the eviction: the owner is
			// told where the job stands once it is, or PlaceWait after the eviction.
			soon(ev.Time.Add(PlaceWait))
		} else {
			add(KindPreempted, fmt.Sprint(ev.Admission), ev.Time.Time, func(e *Event) {
				e.Reason, e.Node = string(ev.Reason), ev.Node
				if c := meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionPreempted); c != nil && c.Status == "True" {
					e.Detail = c.Message
				}
				if ev.Preemptor != "" {
					ns, name := splitKey(ev.Preemptor)
					e.Preemptor = &JobRef{Namespace: ns, Name: name, User: ev.PreemptorUser}
				}
				if st.QueuePosition != nil {
					e.QueuePosition = *st.QueuePosition
				}
				if ev.Reason != cvlabv1alpha1.EvictionPreempted && st.IdleSince != nil {
					e.IdleSince = st.IdleSince.Time
				}
				if ev.Reason == cvlabv1alpha1.EvictionIdleSuspended && st.BackoffUntil != nil {
					e.NextAt = st.BackoffUntil.Time // held back until then
				}
			})
		}
	}

	switch st.Phase {
	case cvlabv1alpha1.PhaseFailed, cvlabv1alpha1.PhaseSucceeded:
		if st.CompletionTime == nil {
			break
		}
		kind := KindSucceeded
		if st.Phase == cvlabv1alpha1.PhaseFailed {
			kind = KindFailed
		}
		add(kind, "final", st.CompletionTime.Time, func(e *Event) {
			e.Detail, e.Pod, e.Node = st.Message, st.PodName, st.Node
			if c := meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionFinished); c != nil {
				e.Reason = c.Reason
			}
			if pod != nil && pod.Name == st.PodName {
				e.ExitCode = exitCode(pod)
			}
		})

	case cvlabv1alpha1.PhaseRunning:
		if st.StartTime == nil {
			break
		}
		started := st.StartTime.Time
		n := fmt.Sprint(st.Admissions)
		// Waiting since its creation, or since its last eviction when that ended the admission
		// before this one.
		queued := job.CreationTimestamp.Time
		if ev := st.LastEviction; ev != nil && ev.Admission < st.Admissions && ev.Time.After(queued) {
			queued = ev.Time.Time
		}
		if waited := started.Sub(queued); waited >= s.StartedAfter && s.StartedAfter > 0 {
			add(KindStarted, n, started, func(e *Event) { e.Waited, e.Node, e.Pod = waited, st.Node, st.PodName })
		}
		if t := job.Spec.Timeout; t != nil && t.Duration > 0 && s.DeadlineShare > 0 && slices.Contains(wanted, KindDeadlineSoon) {
			end := started.Add(t.Duration)
			at := end.Add(-time.Duration(float64(t.Duration) * s.DeadlineShare))
			switch {
			case now.Before(at):
				soon(at)
			case now.Before(end):
				add(KindDeadlineSoon, n, at, func(e *Event) { e.NextAt, e.Timeout, e.Node, e.Pod = end, t.Duration, st.Node, st.PodName })
			}
		}
		if c := meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionGPUIdle); c != nil && c.Status == "True" && st.IdleSince != nil {
			since := st.IdleSince.Time
			add(KindGPUIdle, fmt.Sprint(since.Unix()), c.LastTransitionTime.Time, func(e *Event) {
				e.Reason, e.Detail, e.IdleSince, e.IdlePercent, e.NextAction = c.Reason, c.Message, since, s.IdleThreshold, s.IdleAction
				e.Node = st.Node
				if s.IdleAction != "Warn" {
					e.NextAt = since.Add(s.IdleAfter + s.IdleGrace)
				}
			})
		}
	}
	return events, next
}

// exitCode is the exit code of the pod's job container (any container that ended with an error
// when it has none of that name); nil when none ended.
func exitCode(p *corev1.Pod) *int32 {
	var code *int32
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil {
			if cs.Name == cluster.ContainerName {
				return &t.ExitCode
			}
			if code == nil || t.ExitCode != 0 {
				code = &t.ExitCode
			}
		}
	}
	return code
}

// splitKey splits the "namespace/name" of a typed status field (status.lastEviction.preemptor).
func splitKey(key string) (namespace, name string) {
	namespace, name, _ = strings.Cut(key, "/")
	return namespace, name
}
