// Package report renders simulation results (internal/simulate) as one self-contained HTML file:
// inline CSS and inline SVG charts drawn here, no script, no font, no request of any kind, so that
// the file opens offline, from a mail attachment or a CI artifact. Several results (a --compare
// run) share every table and chart, one column or one series per result.
//
// Everything a trace names (users, jobs, labels) goes through html/template, which escapes it in
// text and attributes alike.
package report

import (
	"cmp"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/simulate"
)

//go:embed report.html
var pageTemplate string

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"add":  func(a, b int) int { return a + b },
	"wait": waitText,
}).Parse(pageTemplate))

// Write renders results as one HTML document. The results are shown in their order; the first
// is the reference the others are compared with.
func Write(w io.Writer, results []*simulate.Result) error {
	if len(results) == 0 {
		return errors.New("report: no simulation result")
	}
	for i, r := range results {
		if r == nil {
			return fmt.Errorf("report: result %d is nil", i)
		}
	}
	return page.Execute(w, build(results))
}

// model is what the template renders.
type model struct {
	Title   string
	Period  string
	Jobs    int
	Labels  []series
	Summary []row
	// Settings are the operator flags, one row per flag used by any result; Differs marks those
	// that differ between results.
	Settings []row
	Users    userTable
	Ordinals ordinalTable
	// Charts: GPUs per user and busy/idle/capacity per result; the others compare the results.
	PerResult  []resultCharts
	Waiting    *chart
	OrdinalBar *chart
	FirstCDF   *chart
	CDFNote    string
	HeadOfLine []headOfLine
	Footnote   string
}

// series is one entry of a legend: a result, a user, a quantity; Class styles it when Color is
// empty.
type series struct {
	Label string
	Color string
	Class string
}

// row is one line of a table with one cell per result. Best is the index of the best cell (-1:
// none or a tie), shown in bold.
type row struct {
	Name    string
	Hint    string
	Cells   []string
	Best    int
	Differs bool
}

type resultCharts struct {
	Label     string
	UserChart *chart
	BusyChart *chart
}

type headOfLine struct {
	Label string
	Rows  []simulate.HeadOfLineWait
	Total int
}

// waitText renders a wait for people: 45s, 12m, 3h5m, 2d4h; to the minute from a minute on, to
// the hour from two days on.
func waitText(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d <= 0:
		return "0"
	case d >= 2*day:
		d = d.Round(time.Hour)
		if d%day == 0 {
			return fmt.Sprintf("%dd", d/day)
		}
		return fmt.Sprintf("%dd%dh", d/day, d%day/time.Hour)
	case d >= time.Minute:
		d = d.Round(time.Minute)
	}
	return observe.ShortDuration(d)
}

func waitCells(results []*simulate.Result, name, hint string, get func(*simulate.Result) time.Duration) row {
	vals := make([]float64, len(results))
	r := row{Name: name, Hint: hint}
	for i, res := range results {
		d := get(res)
		vals[i] = float64(d)
		r.Cells = append(r.Cells, waitText(d))
	}
	r.Best = best(vals, -1)
	return r
}

// best is the index of the single best value (dir -1: lowest, +1: highest, 0: neither is
// better), or -1 with one result or a tie for best.
func best(vals []float64, dir float64) int {
	if len(vals) < 2 || dir == 0 {
		return -1
	}
	bi, ties := 0, 0
	for i, v := range vals[1:] {
		switch {
		case v*dir > vals[bi]*dir:
			bi, ties = i+1, 0
		case v == vals[bi]:
			ties++
		}
	}
	if ties > 0 {
		return -1
	}
	return bi
}

func numRow(results []*simulate.Result, name, hint string, dir float64, get func(*simulate.Result) float64, format func(float64) string) row {
	vals := make([]float64, len(results))
	r := row{Name: name, Hint: hint}
	for i, res := range results {
		vals[i] = get(res)
		r.Cells = append(r.Cells, format(vals[i]))
	}
	r.Best = best(vals, dir)
	return r
}

func fixed(prec int) func(float64) string {
	return func(v float64) string { return strconv.FormatFloat(v, 'f', prec, 64) }
}

func percent(v float64) string { return strconv.FormatFloat(v*100, 'f', 1, 64) + "%" }

func build(results []*simulate.Result) *model {
	m := &model{Title: "Queue simulation"}
	first := results[0]
	m.Jobs = len(first.Jobs)
	start, end := first.Start, first.End
	for _, r := range results {
		m.Labels = append(m.Labels, series{Label: labelOf(r), Color: resultColor(len(m.Labels))})
		if r.Start.Before(start) {
			start = r.Start
		}
		if r.End.After(end) {
			end = r.End
		}
	}
	if len(results) > 1 {
		m.Title = "Queue simulation: " + strconv.Itoa(len(results)) + " settings compared"
	}
	m.Period = fmt.Sprintf("%s – %s UTC (%s)", start.UTC().Format("Mon 2 Jan 2006 15:04"), end.UTC().Format("Mon 2 Jan 2006 15:04"),
		duration.HumanDuration(end.Sub(start)))

	count := func(phase string) func(*simulate.Result) float64 {
		return func(r *simulate.Result) float64 {
			n := 0
			for _, j := range r.Jobs {
				if phase == "" && j.Start == nil || phase != "" && j.Phase == phase {
					n++
				}
			}
			return float64(n)
		}
	}
	m.Summary = []row{
		numRow(results, "Jobs finished", "succeeded within the simulated period", +1, count("Succeeded"), fixed(0)),
		numRow(results, "Jobs never started", "still waiting at the end of the period", -1, count(""), fixed(0)),
		numRow(results, "GPU-hours used", "", +1, func(r *simulate.Result) float64 { return r.UsedGPUHours }, fixed(0)),
		numRow(results, "Utilisation", "GPU-hours used over capacity-hours", +1, func(r *simulate.Result) float64 { return r.Utilization }, percent),
		waitCells(results, "Wait p50, all jobs", "time from submission (or requeue) to start", func(r *simulate.Result) time.Duration { return r.AllWait.P50 }),
		waitCells(results, "Wait p95, all jobs", "", func(r *simulate.Result) time.Duration { return r.AllWait.P95 }),
		waitCells(results, "Wait max, all jobs", "", func(r *simulate.Result) time.Duration { return r.AllWait.Max }),
		waitCells(results, "Wait p50, 1st-GPU jobs", "jobs submitted as their owner's 1st GPU", func(r *simulate.Result) time.Duration { return r.FirstGPUWait.P50 }),
		waitCells(results, "Wait p95, 1st-GPU jobs", "", func(r *simulate.Result) time.Duration { return r.FirstGPUWait.P95 }),
		waitCells(results, "Longest head-of-line wait", "big jobs that became first in line", func(r *simulate.Result) time.Duration {
			var most time.Duration
			for _, h := range r.HeadOfLine {
				most = max(most, h.Wait)
			}
			return most
		}),
		numRow(results, "Preemptions", "running jobs evicted", -1, func(r *simulate.Result) float64 { return float64(r.Preemptions) }, fixed(0)),
		numRow(results, "Wasted GPU-hours", "work lost to evictions", -1, func(r *simulate.Result) float64 { return r.WastedGPUHours }, fixed(1)),
		numRow(results, "Idle reclaims", "idle jobs whose GPUs were taken", 0, func(r *simulate.Result) float64 { return float64(r.IdleReclaims) }, fixed(0)),
		numRow(results, "Fairness (Jain)", "over GPU-hours of users with waiting work; 1 is equal", +1, func(r *simulate.Result) float64 { return r.Fairness }, fixed(3)),
		numRow(results, "Decisions", "engine decisions simulated", 0, func(r *simulate.Result) float64 { return float64(r.Decisions) }, fixed(0)),
		{Name: "Simulated in", Best: -1, Cells: cellsOf(results, func(r *simulate.Result) string { return r.WallTime.Round(time.Millisecond).String() })},
	}
	m.Settings = settingsRows(results)
	m.Users = buildUserTable(results)
	m.Ordinals = buildOrdinalTable(results)

	colors := userColors(results)
	for _, r := range results {
		m.PerResult = append(m.PerResult, resultCharts{Label: labelOf(r), UserChart: userChart(r, colors, start, end), BusyChart: busyChart(r, start, end)})
		h := slices.Clone(r.HeadOfLine)
		slices.SortStableFunc(h, func(a, b simulate.HeadOfLineWait) int { return cmp.Compare(b.Wait, a.Wait) })
		m.HeadOfLine = append(m.HeadOfLine, headOfLine{Label: labelOf(r), Rows: h[:min(len(h), 10)], Total: len(h)})
	}
	m.Waiting = waitingChart(results, m.Labels, start, end)
	m.OrdinalBar = ordinalChart(results, m.Labels, m.Ordinals)
	m.FirstCDF, m.CDFNote = cdfChart(results, m.Labels)
	return m
}

func labelOf(r *simulate.Result) string {
	if r.Label == "" {
		return "simulation"
	}
	return r.Label
}

func cellsOf(results []*simulate.Result, f func(*simulate.Result) string) []string {
	var cells []string
	for _, r := range results {
		cells = append(cells, f(r))
	}
	return cells
}

// settingsRows lists every flag any result set, marking those that differ.
func settingsRows(results []*simulate.Result) []row {
	keys := map[string]bool{}
	for _, r := range results {
		for k := range r.Settings {
			keys[k] = true
		}
	}
	var rows []row
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		rw := row{Name: "--" + k, Best: -1}
		for _, r := range results {
			v, ok := r.Settings[k]
			if !ok {
				v = "–"
			}
			if len(rw.Cells) > 0 && v != rw.Cells[0] {
				rw.Differs = true
			}
			rw.Cells = append(rw.Cells, v)
		}
		rows = append(rows, rw)
	}
	return rows
}

// userTable is the per-user table: one group of columns per result.
type userTable struct {
	Rows []userRow
}

type userRow struct {
	User  string
	Jobs  int
	Cells []userCells
}

type userCells struct {
	GPUHours, P50, P95, Max string
}

func buildUserTable(results []*simulate.Result) userTable {
	var t userTable
	idx := map[string]int{}
	hours := map[string]float64{}
	for ri, r := range results {
		for _, u := range r.Users {
			i, ok := idx[u.User]
			if !ok {
				i = len(t.Rows)
				idx[u.User] = i
				t.Rows = append(t.Rows, userRow{User: u.User, Jobs: u.Jobs, Cells: make([]userCells, len(results))})
				for c := range t.Rows[i].Cells {
					t.Rows[i].Cells[c] = userCells{GPUHours: "–", P50: "–", P95: "–", Max: "–"}
				}
			}
			if ri == 0 {
				hours[u.User] = u.GPUHours
			}
			t.Rows[i].Cells[ri] = userCells{GPUHours: strconv.FormatFloat(u.GPUHours, 'f', 1, 64),
				P50: waitText(u.Wait.P50), P95: waitText(u.Wait.P95), Max: waitText(u.Wait.Max)}
		}
	}
	slices.SortStableFunc(t.Rows, func(a, b userRow) int {
		return cmp.Or(cmp.Compare(hours[b.User], hours[a.User]), cmp.Compare(a.User, b.User))
	})
	return t
}

// maxOrdinals is how many GPU ordinals the report shows: a user who queues hundreds of 1-GPU
// jobs has hundreds of ordinals, and past the first ones they all mean "waits for everyone else".
const maxOrdinals = 12

// ordinalTable is the wait per GPU ordinal: one row per ordinal (the first maxOrdinals), one group
// per result; More ordinals up to the Last are left out.
type ordinalTable struct {
	Rows []ordinalRow
	More int
	Last string
}

type ordinalRow struct {
	Ordinal string
	Cells   []ordinalCells
}

type ordinalCells struct {
	Count         int
	P50, P95, Max string
	p50, p95, max time.Duration
}

func buildOrdinalTable(results []*simulate.Result) ordinalTable {
	var ords []int32
	for _, r := range results {
		for _, o := range r.Ordinals {
			if !slices.Contains(ords, o.Ordinal) {
				ords = append(ords, o.Ordinal)
			}
		}
	}
	slices.Sort(ords)
	var t ordinalTable
	if len(ords) > maxOrdinals {
		t.More, t.Last = len(ords)-maxOrdinals, queue.Ordinal(ords[len(ords)-1])
		ords = ords[:maxOrdinals]
	}
	for _, o := range ords {
		rw := ordinalRow{Ordinal: queue.Ordinal(o)}
		for _, r := range results {
			c := ordinalCells{P50: "–", P95: "–", Max: "–"}
			for _, s := range r.Ordinals {
				if s.Ordinal == o {
					c = ordinalCells{Count: s.Wait.Count, P50: waitText(s.Wait.P50), P95: waitText(s.Wait.P95), Max: waitText(s.Wait.Max),
						p50: s.Wait.P50, p95: s.Wait.P95, max: s.Wait.Max}
				}
			}
			rw.Cells = append(rw.Cells, c)
		}
		t.Rows = append(t.Rows, rw)
	}
	return t
}
