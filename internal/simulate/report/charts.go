package report

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/simulate"
)

// Chart geometry, in SVG user units (the SVG scales to the page's width).
const (
	chartW, chartH                       = 960, 260
	padLeft, padRight, padTop, padBottom = 56, 14, 24, 30
	plotW, plotH                         = chartW - padLeft - padRight, chartH - padTop - padBottom
	// maxColumns bounds the timeline columns drawn, maxCDFPoints the steps of a distribution.
	maxColumns, maxCDFPoints = 240, 400
	// topUsers are the users drawn in their own color; the others share one.
	topUsers             = 10
	othersColor          = "#9aa3ae"
	busyColor, idleColor = "#1a7f37", "#d29922"
	// groupShare is the share of an ordinal's slot its bars take, barShare of a bar's slot.
	groupShare, barShare = 0.7, 0.8
	cdfCutQuantile       = 0.99
)

// resultPalette colors the results of a comparison; userPalette the users.
var (
	resultPalette = []string{"#1f6feb", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#0a7ea4", "#e16f24", "#57606a"}
	userPalette   = []string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#2f4b7c"}
)

func resultColor(i int) string { return resultPalette[i%len(resultPalette)] }

// chart is one SVG chart: filled shapes, lines, bars and whiskers over axes with ticks.
type chart struct {
	Title string
	Desc  string
	W, H  int
	// The plot's corners: top-left (X0, Y0), bottom-right (X1, Y1).
	X0, Y0, X1, Y1 float64
	PW, PH         float64
	XTicks         []tick
	YTicks         []tick
	YLabel         string
	Areas          []shape
	Lines          []shape
	Bars           []bar
	Marks          []bar // thin marks over bars (whiskers, maxima)
	Legend         []series
}

type tick struct {
	Pos   float64
	Label string
}

// shape is a polygon or a polyline. Color is its fill or stroke; without one, Class styles it (the
// capacity line takes the text's color, dark or light).
type shape struct {
	Points string
	Color  string
	Class  string
	Label  string
}

type bar struct {
	X, Y, W, H float64
	Color      string
	Opacity    float64
	Title      string
}

func newChart(title, desc, ylabel string) *chart {
	return &chart{Title: title, Desc: desc, YLabel: ylabel, W: chartW, H: chartH, X0: padLeft, Y0: padTop,
		X1: padLeft + plotW, Y1: padTop + plotH, PW: plotW, PH: plotH}
}

// points renders a polyline or polygon's points.
func points(xs, ys []float64) string {
	var b strings.Builder
	for i := range xs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatFloat(xs[i], 'f', 1, 64))
		b.WriteByte(',')
		b.WriteString(strconv.FormatFloat(ys[i], 'f', 1, 64))
	}
	return b.String()
}

// niceStep is a step of 1, 2 or 5 times a power of ten that cuts 0..top in at most n parts.
func niceStep(top float64, n int) float64 {
	if top <= 0 {
		return 1
	}
	raw := top / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// yScale sets the y ticks of a chart of values from 0 to at least top, and returns the value → y
// function and the value at the top of the axis.
func (c *chart) yScale(top float64, label func(float64) string) (func(float64) float64, float64) {
	step := niceStep(top, 5)
	top = math.Max(step, math.Ceil(top/step)*step)
	y := func(v float64) float64 { return c.Y0 + c.PH - v/top*c.PH }
	for v := 0.0; v <= top+step/2; v += step {
		c.YTicks = append(c.YTicks, tick{Pos: y(v), Label: label(v)})
	}
	return y, top
}

func count(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// timeAxis sets the x ticks of a chart from start to end and returns the time → x function.
func (c *chart) timeAxis(start, end time.Time) func(time.Time) float64 {
	span := end.Sub(start)
	if span <= 0 {
		span = time.Hour
	}
	x := func(t time.Time) float64 { return c.X0 + float64(t.Sub(start))/float64(span)*c.PW }
	step := 7 * 24 * time.Hour
	for _, s := range []time.Duration{15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour,
		12 * time.Hour, 24 * time.Hour, 48 * time.Hour} {
		if span/s <= 10 {
			step = s
			break
		}
	}
	t := start.UTC().Truncate(step)
	if step >= 24*time.Hour {
		t = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	}
	for ; !t.After(end); t = t.Add(step) {
		if t.Before(start) {
			continue
		}
		label := t.Format("15:04")
		switch {
		case step >= 24*time.Hour:
			label = t.Format("Mon 2 Jan")
		case t.Hour() == 0 && t.Minute() == 0:
			label = t.Format("Mon 2")
		}
		c.XTicks = append(c.XTicks, tick{Pos: x(t), Label: label})
	}
	return x
}

// bucket is the timeline averaged over one column of a chart.
type bucket struct {
	At                   time.Time
	ByUser               map[string]float64
	Busy, Idle, Capacity float64
	Waiting              float64
}

// buckets averages a timeline into at most maxColumns columns, so that a month sampled every
// minute draws as fast as a day; an average keeps the area of each series (its GPU-hours).
func buckets(tl []simulate.TimelinePoint) []bucket {
	if len(tl) == 0 {
		return nil
	}
	per := (len(tl) + maxColumns - 1) / maxColumns
	var out []bucket
	for i := 0; i < len(tl); i += per {
		part := tl[i:min(i+per, len(tl))]
		b := bucket{ByUser: map[string]float64{}}
		var at time.Duration
		for _, p := range part {
			at += p.At.Sub(part[0].At)
			for u, g := range p.ByUser {
				b.ByUser[u] += float64(g)
			}
			b.Busy += float64(p.Busy)
			b.Idle += float64(p.Idle)
			b.Capacity += float64(p.Capacity)
			b.Waiting += float64(p.Waiting)
		}
		n := float64(len(part))
		b.At = part[0].At.Add(at / time.Duration(len(part)))
		for u := range b.ByUser {
			b.ByUser[u] /= n
		}
		b.Busy, b.Idle, b.Capacity, b.Waiting = b.Busy/n, b.Idle/n, b.Capacity/n, b.Waiting/n
		out = append(out, b)
	}
	return out
}

// userColors gives the users with the most GPU time over all results a color each, the same in
// every chart; the others share one.
func userColors(results []*simulate.Result) map[string]string {
	total := map[string]float64{}
	for _, r := range results {
		for _, p := range r.Timeline {
			for u, g := range p.ByUser {
				total[u] += float64(g)
			}
		}
	}
	users := make([]string, 0, len(total))
	for u, t := range total {
		if t > 0 {
			users = append(users, u)
		}
	}
	slices.SortFunc(users, func(a, b string) int { return cmp.Or(cmp.Compare(total[b], total[a]), cmp.Compare(a, b)) })
	colors := map[string]string{}
	for i, u := range users[:min(len(users), topUsers)] {
		colors[u] = userPalette[i%len(userPalette)]
	}
	return colors
}

// gpuAxes are the buckets of r's timeline and c's axes for them: time, and GPUs up to the
// largest of the capacity and the GPUs held; no buckets when the timeline is empty.
func (c *chart) gpuAxes(r *simulate.Result, start, end time.Time) ([]bucket, func(time.Time) float64, func(float64) float64) {
	bs := buckets(r.Timeline)
	if len(bs) == 0 {
		return nil, nil, nil
	}
	var top float64
	for _, b := range bs {
		top = max(top, b.Capacity, b.Busy)
	}
	y, _ := c.yScale(top, count)
	return bs, c.timeAxis(start, end), y
}

// userChart stacks each user's GPUs over time, the capacity as a line above.
func userChart(r *simulate.Result, colors map[string]string, start, end time.Time) *chart {
	c := newChart("GPUs per user", "GPUs held by each user's jobs over time, stacked; the line is the capacity.", "GPUs")
	bs, x, y := c.gpuAxes(r, start, end)
	if len(bs) == 0 {
		return nil
	}
	// Layers from the bottom: the colored users by total, then the others.
	var layers []string
	for u := range colors {
		layers = append(layers, u)
	}
	slices.SortFunc(layers, func(a, b string) int {
		return cmp.Compare(slices.Index(userPalette, colors[a]), slices.Index(userPalette, colors[b]))
	})
	seen := map[string]bool{}
	for _, b := range bs {
		for u, g := range b.ByUser {
			if g > 0 {
				seen[u] = true
			}
		}
	}
	others := false
	for u := range seen {
		if _, ok := colors[u]; !ok {
			others = true
		}
	}
	if others {
		layers = append(layers, "")
	}
	xs := make([]float64, len(bs))
	for i, b := range bs {
		xs[i] = x(b.At)
	}
	below := make([]float64, len(bs))
	for _, u := range layers {
		if u != "" && !seen[u] {
			continue
		}
		upper := make([]float64, len(bs))
		for i, b := range bs {
			v := b.ByUser[u]
			if u == "" {
				v = 0
				for name, g := range b.ByUser {
					if _, ok := colors[name]; !ok {
						v += g
					}
				}
			}
			upper[i] = below[i] + v
		}
		px := append(slices.Clone(xs), reversed(xs)...)
		py := make([]float64, 0, 2*len(bs))
		for _, v := range upper {
			py = append(py, y(v))
		}
		for i := len(below) - 1; i >= 0; i-- {
			py = append(py, y(below[i]))
		}
		color, label := colors[u], u
		if u == "" {
			color, label = othersColor, "others"
		}
		c.Areas = append(c.Areas, shape{Points: points(px, py), Color: color, Label: label})
		c.Legend = append(c.Legend, series{Label: label, Color: color})
		below = upper
	}
	capY := make([]float64, len(bs))
	for i, b := range bs {
		capY[i] = y(b.Capacity)
	}
	c.Lines = append(c.Lines, shape{Points: points(xs, capY), Class: "capacity", Label: "capacity"})
	c.Legend = append(c.Legend, series{Label: "capacity", Class: "capacity"})
	return c
}

func reversed(xs []float64) []float64 {
	r := slices.Clone(xs)
	slices.Reverse(r)
	return r
}

// busyChart draws the GPUs held (of which idle) under the capacity.
func busyChart(r *simulate.Result, start, end time.Time) *chart {
	c := newChart("Busy, idle and capacity", "GPUs held by jobs, of which idle (below the idle threshold), and the capacity.", "GPUs")
	bs, x, y := c.gpuAxes(r, start, end)
	if len(bs) == 0 {
		return nil
	}
	xs := make([]float64, len(bs))
	busy, idle, capa := make([]float64, len(bs)), make([]float64, len(bs)), make([]float64, len(bs))
	for i, b := range bs {
		xs[i], busy[i], idle[i], capa[i] = x(b.At), y(b.Busy), y(b.Idle), y(b.Capacity)
	}
	base := make([]float64, len(bs))
	for i := range base {
		base[i] = y(0)
	}
	area := func(top []float64) string {
		return points(append(slices.Clone(xs), reversed(xs)...), append(slices.Clone(top), base...))
	}
	c.Areas = append(c.Areas, shape{Points: area(busy), Color: busyColor, Label: "busy"}, shape{Points: area(idle), Color: idleColor, Label: "idle"})
	c.Lines = append(c.Lines, shape{Points: points(xs, capa), Class: "capacity", Label: "capacity"})
	c.Legend = []series{{Label: "busy", Color: busyColor}, {Label: "of which idle", Color: idleColor}, {Label: "capacity", Class: "capacity"}}
	return c
}

// waitingChart draws the GPU jobs waiting over time, one line per result.
func waitingChart(results []*simulate.Result, labels []series, start, end time.Time) *chart {
	c := newChart("Jobs waiting", "GPU jobs waiting over time, one line per setting.", "jobs")
	all := make([][]bucket, len(results))
	var top float64
	for i, r := range results {
		all[i] = buckets(r.Timeline)
		for _, b := range all[i] {
			top = max(top, b.Waiting)
		}
	}
	x := c.timeAxis(start, end)
	y, _ := c.yScale(top, count)
	for i, bs := range all {
		if len(bs) == 0 {
			continue
		}
		xs, ys := make([]float64, len(bs)), make([]float64, len(bs))
		for k, b := range bs {
			xs[k], ys[k] = x(b.At), y(b.Waiting)
		}
		c.Lines = append(c.Lines, shape{Points: points(xs, ys), Color: labels[i].Color, Label: labels[i].Label})
	}
	if len(c.Lines) == 0 {
		return nil
	}
	c.Legend = labels
	return c
}

// hours renders a wait axis label.
func hours(v float64) string {
	return waitText(time.Duration(v * float64(time.Hour)))
}

// ordinalChart draws, per GPU ordinal, one bar per result: the p95 wait light, the p50 dark, and
// the maximum as a mark (clipped to the chart when it is far above the p95s).
func ordinalChart(results []*simulate.Result, labels []series, t ordinalTable) *chart {
	if len(t.Rows) == 0 {
		return nil
	}
	c := newChart("Wait by GPU ordinal", "Wait of jobs by their owner's GPU ordinal when they were submitted (1st, 2nd, …): bar to the p95, dark part to the p50, mark at the maximum.", "wait")
	var top float64
	for _, rw := range t.Rows {
		for _, cell := range rw.Cells {
			top = max(top, cell.p95.Hours())
		}
	}
	y, axisTop := c.yScale(top, hours)
	group := c.PW / float64(len(t.Rows))
	width := group * groupShare / float64(len(results))
	for g, rw := range t.Rows {
		x0 := c.X0 + float64(g)*group + group*(1-groupShare)/2
		c.XTicks = append(c.XTicks, tick{Pos: c.X0 + (float64(g)+0.5)*group, Label: rw.Ordinal + " GPU"})
		for i, cell := range rw.Cells {
			if cell.Count == 0 {
				continue
			}
			x := x0 + float64(i)*width
			w := width * barShare
			who := fmt.Sprintf("%s, %s GPU: ", labels[i].Label, rw.Ordinal)
			c.Bars = append(c.Bars,
				bar{X: x, Y: y(cell.p95.Hours()), W: w, H: y(0) - y(cell.p95.Hours()), Color: labels[i].Color, Opacity: 0.35, Title: who + "p95 " + cell.P95},
				bar{X: x, Y: y(cell.p50.Hours()), W: w, H: y(0) - y(cell.p50.Hours()), Color: labels[i].Color, Opacity: 1, Title: who + "p50 " + cell.P50})
			m := min(cell.max.Hours(), axisTop)
			c.Marks = append(c.Marks, bar{X: x - 1, Y: y(m) - 1, W: w + 2, H: 2, Opacity: 1, Title: who + "max " + cell.Max})
		}
	}
	c.Legend = labels
	return c
}

// cdfChart draws the distribution of the 1st-GPU jobs' first waits, one line per result: the
// share of jobs that started within a wait. Most start at once and a few wait for days, so the
// wait axis is logarithmic (in minutes, from 0) and stops at the 99th percentile; the note says so.
func cdfChart(results []*simulate.Result, labels []series) (*chart, string) {
	waits := make([][]time.Duration, len(results))
	var all []time.Duration
	for i, r := range results {
		for _, j := range r.Jobs {
			if j.Ordinal == 1 && j.Start != nil {
				waits[i] = append(waits[i], j.FirstWait)
			}
		}
		slices.Sort(waits[i])
		all = append(all, waits[i]...)
	}
	if len(all) == 0 {
		return nil, ""
	}
	slices.Sort(all)
	cut := max(all[min(int(math.Ceil(cdfCutQuantile*float64(len(all))))-1, len(all)-1)], time.Minute)
	note := ""
	if most := all[len(all)-1]; most > cut {
		note = fmt.Sprintf("The 1st-GPU wait axis stops at the 99th percentile of these waits (%s); the longest is %s.", waitText(cut), waitText(most))
	}
	c := newChart("1st-GPU jobs: time to start", "Share of the jobs submitted as their owner's 1st GPU that waited at most this long (wait axis logarithmic).", "share")
	scale := math.Log1p(cut.Minutes())
	xOf := func(d time.Duration) float64 { return c.X0 + math.Min(math.Log1p(max(d, 0).Minutes())/scale, 1)*c.PW }
	for _, t := range []time.Duration{0, time.Minute, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 12 * time.Hour, 72 * time.Hour, 14 * 24 * time.Hour} {
		if t <= cut {
			c.XTicks = append(c.XTicks, tick{Pos: xOf(t), Label: waitText(t)})
		}
	}
	y, _ := c.yScale(1, func(v float64) string { return strconv.Itoa(int(math.Round(v*100))) + "%" })
	for i, ws := range waits {
		if len(ws) == 0 {
			continue
		}
		// A step function: at each wait, the share jumps to the jobs that waited at most that
		// long. Sampled at most maxCDFPoints times.
		xs, ys := []float64{xOf(0)}, []float64{y(0)}
		n := len(ws)
		stride := max(1, n/maxCDFPoints)
		for k := 0; k < n; k += stride {
			last := min(k+stride, n) - 1
			xs = append(xs, xOf(ws[k]), xOf(ws[last]))
			ys = append(ys, ys[len(ys)-1], y(float64(last+1)/float64(n)))
		}
		xs, ys = append(xs, xOf(cut)), append(ys, ys[len(ys)-1])
		c.Lines = append(c.Lines, shape{Points: points(xs, ys), Color: labels[i].Color, Label: labels[i].Label})
	}
	c.Legend = labels
	return c, note
}
