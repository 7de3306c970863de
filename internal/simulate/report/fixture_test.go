package report

import (
	"fmt"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/simulate"
)

// Hostile user names, as a trace may hold them: markup, an attribute breaker, a script.
const (
	userScript = `<script>alert("x")</script>`
	userAttr   = `"><img src=x onerror=alert(1)>`
)

var t0 = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

// fixture is a hand-made two-day result of a 16-GPU lab with five users, two of them hostile
// names; scale changes the waits, so that compared results differ.
func fixture(label string, scale float64) *simulate.Result {
	dur := func(d time.Duration) time.Duration { return time.Duration(float64(d) * scale) }
	r := &simulate.Result{
		Label:    label,
		Settings: map[string]string{"preemption": label, "min-runtime": "2h", "max-head-wait": "4h"},
		Start:    t0, End: t0.Add(48 * time.Hour), Step: 10 * time.Minute,
		Users: []simulate.UserStats{
			{User: "alice", Jobs: 12, GPUHours: 210, Wait: simulate.WaitStats{Count: 12, P50: dur(20 * time.Minute), P95: dur(3 * time.Hour), Max: dur(5 * time.Hour)}},
			{User: "bob", Jobs: 8, GPUHours: 150, Wait: simulate.WaitStats{Count: 8, P50: dur(40 * time.Minute), P95: dur(4 * time.Hour), Max: dur(6 * time.Hour)}},
			{User: "carol", Jobs: 5, GPUHours: 60, Wait: simulate.WaitStats{Count: 5, P50: dur(5 * time.Minute), P95: dur(time.Hour), Max: dur(time.Hour)}},
			{User: userScript, Jobs: 2, GPUHours: 12, Wait: simulate.WaitStats{Count: 2, P50: dur(time.Minute), P95: dur(2 * time.Minute), Max: dur(2 * time.Minute)}},
			{User: userAttr, Jobs: 1, GPUHours: 4, Wait: simulate.WaitStats{Count: 1}},
		},
		Ordinals: []simulate.OrdinalStats{
			{Ordinal: 1, Wait: simulate.WaitStats{Count: 14, P50: dur(5 * time.Minute), P95: dur(40 * time.Minute), Max: dur(time.Hour)}},
			{Ordinal: 2, Wait: simulate.WaitStats{Count: 9, P50: dur(30 * time.Minute), P95: dur(3 * time.Hour), Max: dur(4 * time.Hour)}},
			{Ordinal: 3, Wait: simulate.WaitStats{Count: 5, P50: dur(2 * time.Hour), P95: dur(5 * time.Hour), Max: dur(9 * time.Hour)}},
		},
		FirstGPUWait: simulate.WaitStats{Count: 14, P50: dur(5 * time.Minute), P95: dur(40 * time.Minute), Max: dur(time.Hour)},
		AllWait:      simulate.WaitStats{Count: 28, P50: dur(25 * time.Minute), P95: dur(4 * time.Hour), Max: dur(9 * time.Hour)},
		Preemptions:  int(3 * scale), WastedGPUHours: 7.5 * scale, UsedGPUHours: 436, Utilization: 0.57,
		HeadOfLine: []simulate.HeadOfLineWait{
			{Job: "lab/bob-big", User: "bob", GPUs: 8, Wait: dur(5 * time.Hour)},
			{Job: "lab/alice-sweep", User: "alice", GPUs: 4, Wait: dur(2 * time.Hour)},
		},
		Fairness: 1 - 0.2*scale, Decisions: 1234, WallTime: 42 * time.Millisecond,
	}
	users := []string{"alice", "bob", "carol", userScript, userAttr}
	for i := range 30 {
		start := t0.Add(time.Duration(i) * 90 * time.Minute)
		wait := dur(time.Duration(i%7) * 10 * time.Minute)
		started, end := start.Add(wait), start.Add(wait+3*time.Hour)
		r.Jobs = append(r.Jobs, simulate.JobOutcome{Name: fmt.Sprintf("lab/job-%d", i), User: users[i%len(users)], GPUs: int32(1 + i%3),
			Submit: start, Start: &started, End: &end, Wait: wait, FirstWait: wait, Ordinal: int32(1 + i%3), Phase: "Succeeded"})
	}
	for at := t0; !at.After(r.End); at = at.Add(r.Step) {
		h := at.Sub(t0).Hours()
		// A day's shape: busy in the afternoon, quiet at night.
		load := int32(8 + 6*((int(h)+6)%24)/24)
		p := simulate.TimelinePoint{At: at, Capacity: 16, ByUser: map[string]int32{
			"alice": load / 2, "bob": load / 4, "carol": load / 8, userScript: 1, userAttr: load - load/2 - load/4 - load/8 - 1}}
		p.Busy = load
		p.Idle = load / 5
		p.Waiting = int(load) / 3
		r.Timeline = append(r.Timeline, p)
	}
	return r
}
