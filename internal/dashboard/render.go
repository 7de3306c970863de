package dashboard

import (
	"fmt"
	"strings"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

// page is what the templates render. Every string in it is data, escaped by html/template.
type page struct {
	Title string
	// User is the ?user= filter.
	User string
	// Snap is nil before the first decision.
	Snap       *queueview.Snapshot
	Updated    string
	UpdatedISO string
	UpdatedAgo string
	// SnapID is the id of the snapshot's event (see serveEvents).
	SnapID string
	// Available is the GPUs the queue can hand out (capacity less foreign pods): the capacity cut.
	Available int32
	// Total counts all jobs (the stats), Summary the jobs shown.
	Total    Summary
	Summary  Summary
	Jobs     []jobRow
	Users    []userRow
	Nodes    []nodeRow
	Preempts []preemptionRow
}

type jobRow struct {
	queueview.Job
	// CutBefore, CutAfter: the capacity cut falls just above, below this row. CPUFirst: the
	// first CPU-only job.
	CutBefore, CutAfter, CPUFirst bool
	PhaseClass                    string
	For, SinceISO                 string
	Util                          utilCell
	// Est is a waiting job's estimated start ("14:30 (in 2h10m)", "unknown"), EstTitle its
	// assumptions or why it is unknown; empty without an estimate.
	Est, EstTitle string
}

// utilCell is a running GPU job's utilisation: Running false shows a dash (not measured: the
// job does not run or has no GPU), Known false shows "unknown" (never 0).
type utilCell struct {
	Running, Known bool
	Pct            int
	Title          string
	// IdleFor is how long the job's GPUs have been idle ("" when they are not); Reclaimable
	// once the GPUIdle condition says its GPUs count as free for the queue; Warned once the
	// owner was told (condition reason Idle).
	IdleFor             string
	Warned, Reclaimable bool
}

type userRow struct {
	// U is the user's sums (not embedded: its field User would clash with the type's name).
	U                queueview.User
	UsedPct, WaitPct int
	// UtilPct is the user's GPU-weighted utilisation (U.Utilization), UtilKnown false when none
	// of their running jobs is measured.
	UtilPct   int
	UtilKnown bool
	// Running: the user has a running GPU job (the utilisation line is shown).
	Running bool
}

type nodeRow struct {
	queueview.Node
	Label                        string
	UsedPct, ForeignPct, FreePct int
	UtilPct                      int
	UtilKnown                    bool
	// Running: a running GPU job is on the node ("unknown" rather than a dash when unmeasured).
	Running bool
}

type preemptionRow struct {
	queueview.Preemption
	Ago, TimeLocal, Users string
}

// build turns a snapshot into the page, keeping the jobs, users and preemptions that match filter.
func (h *Handler) build(snap *queueview.Snapshot, filter string, now time.Time) *page {
	p := &page{Title: h.title, User: filter, Snap: snap}
	if snap == nil {
		return p
	}
	p.Updated = snap.Time.In(h.loc).Format("2006-01-02 15:04:05 MST")
	p.UpdatedISO = snap.Time.UTC().Format(time.RFC3339)
	p.UpdatedAgo = humanDuration(now.Sub(snap.Time))
	_, p.SnapID = h.encoded(snap)
	p.Available = max(snap.Capacity-snap.Foreign, 0)

	jobs := filterJobs(snap.Jobs, filter)
	h.addEstimates(snap, jobs)
	p.Total, p.Summary = summarize(snap.Jobs), summarize(jobs)
	// The cut falls after the last GPU job that fits. With a filter it stays between the shown
	// jobs that fit and those that do not (at the end when all shown fit), as long as one GPU
	// job is shown: the same rows the script leaves when it filters the whole table.
	cutExists := false
	for _, j := range snap.Jobs {
		cutExists = cutExists || (j.GPUs > 0 && !j.InCapacity)
	}
	placed, cpu, lastGPU := false, false, -1
	for _, j := range jobs {
		r := jobRow{Job: j, PhaseClass: phaseClass(j.Phase), For: "–", Util: utilOf(j, now, h.loc)}
		if !j.Since.IsZero() {
			r.For = humanDuration(now.Sub(j.Since))
			r.SinceISO = j.Since.UTC().Format(time.RFC3339)
		}
		switch e := j.EstimatedStart; {
		case e == nil:
		case e.At.IsZero():
			r.Est, r.EstTitle = "unknown", e.Unknown
		case !e.At.After(now):
			r.Est, r.EstTitle = "now", queueview.EstimateAssumption
		default:
			r.Est, r.EstTitle = e.At.In(h.loc).Format("15:04")+" (in "+humanDuration(e.At.Sub(now))+")", queueview.EstimateAssumption
		}
		if j.GPUs > 0 {
			lastGPU = len(p.Jobs)
			if !j.InCapacity && !placed {
				r.CutBefore, placed = true, true
			}
		} else if !cpu {
			r.CPUFirst, cpu = true, true
		}
		p.Jobs = append(p.Jobs, r)
	}
	if cutExists && !placed && lastGPU >= 0 {
		p.Jobs[lastGPU].CutAfter = true
	}

	// Who runs GPU jobs where: only they have a utilisation, known or not.
	runningUsers, runningNodes := map[string]bool{}, map[string]bool{}
	for _, j := range snap.Jobs {
		if j.GPUs > 0 && j.Phase == "Running" {
			runningUsers[j.User], runningNodes[j.Node] = true, true
		}
	}
	scale := max(snap.Capacity, 1)
	for _, u := range snap.Users {
		if !matches(filter, u.User) {
			continue
		}
		used := pct(u.GPUsInUse, scale)
		r := userRow{U: u, UsedPct: used, WaitPct: min(pct(u.WaitingGPUs, scale), 100-used), Running: runningUsers[u.User]}
		if u.Utilization != nil {
			r.UtilPct, r.UtilKnown = clampPct(*u.Utilization), true
		}
		p.Users = append(p.Users, r)
	}
	for _, n := range snap.Nodes {
		r := nodeRow{Node: n, Label: n.Name, Running: runningNodes[n.Name] || (!snap.NodeAware && len(runningUsers) > 0)}
		if r.Label == "" {
			r.Label = "(pool)"
		}
		total := max(n.GPUs, 1)
		r.UsedPct = pct(n.Used, total)
		r.ForeignPct = min(pct(n.Foreign, total), 100-r.UsedPct)
		r.FreePct = min(pct(n.Free, total), 100-r.UsedPct-r.ForeignPct)
		if n.Utilization != nil {
			r.UtilPct, r.UtilKnown = clampPct(*n.Utilization), true
		}
		p.Nodes = append(p.Nodes, r)
	}
	for _, e := range snap.Preemptions {
		if !matches(filter, e.PreemptorUser) && !matches(filter, e.VictimUser) {
			continue
		}
		p.Preempts = append(p.Preempts, preemptionRow{Preemption: e, Ago: humanDuration(now.Sub(e.Time)),
			TimeLocal: e.Time.In(h.loc).Format("2006-01-02 15:04:05 MST"), Users: e.PreemptorUser + " " + e.VictimUser})
	}
	return p
}

// utilOf is the utilisation cell of a job.
func utilOf(j queueview.Job, now time.Time, loc *time.Location) utilCell {
	c := utilCell{Running: j.GPUs > 0 && j.Phase == "Running"}
	if !c.Running {
		return c
	}
	if u := j.Utilization; u != nil {
		c.Known, c.Pct = true, clampPct(u.Percent)
		c.Title = fmt.Sprintf("%d%% average", u.Percent)
		if u.Window != "" {
			c.Title += " over " + u.Window
		}
		if u.MemoryUsedMiB > 0 {
			c.Title += fmt.Sprintf(", %d MiB of GPU memory used", u.MemoryUsedMiB)
		}
		if !u.MeasuredAt.IsZero() {
			c.Title += ", measured " + u.MeasuredAt.In(loc).Format("15:04:05")
		}
	} else {
		c.Title = "no utilisation data (exporter down, no series or a stale sample): unknown, never taken for idle"
	}
	if j.IdleSince != nil {
		c.IdleFor = humanDuration(now.Sub(*j.IdleSince))
	}
	c.Warned = j.Idle != ""
	c.Reclaimable = j.Idle == "Reclaimable"
	return c
}

// clampPct is a percent within 0…100.
func clampPct(p int32) int { return int(max(min(p, 100), 0)) }

// phaseClass is the CSS class of a phase, from a fixed set.
func phaseClass(phase string) string {
	switch phase {
	case "Queued", "Suspended", "Admitted", "Running", "Succeeded", "Failed":
		return strings.ToLower(phase)
	}
	return "other"
}

// pct is n of total in whole percent, within 0…100.
func pct(n, total int32) int {
	if total <= 0 || n <= 0 {
		return 0
	}
	return min(int((int64(n)*100+int64(total)/2)/int64(total)), 100)
}

// humanDuration is a short duration for people: 45s, 12m, 3h05m, 2d4h.
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		h, m := int(d/time.Hour), int(d/time.Minute)%60
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%02dm", h, m)
	default:
		days, h := int(d/(24*time.Hour)), int(d/time.Hour)%24
		if h == 0 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%dh", days, h)
	}
}

// plural is "1 job", "2 jobs".
func plural(n any, word string) string {
	var v int64
	switch n := n.(type) {
	case int:
		v = int64(n)
	case int32:
		v = int64(n)
	case int64:
		v = n
	}
	if v == 1 {
		return fmt.Sprintf("%d %s", v, word)
	}
	return fmt.Sprintf("%d %ss", v, word)
}
