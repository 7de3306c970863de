package report

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/html"

	"github.com/epfl-cvlab/cvlab-queue/internal/simulate"
)

// render writes the report and parses it as a browser would.
func render(t *testing.T, results ...*simulate.Result) (string, *html.Node) {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, results); err != nil {
		t.Fatalf("Write: %v", err)
	}
	doc, err := html.Parse(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatalf("parsing the report: %v", err)
	}
	return b.String(), doc
}

// all finds the elements for which match is true, in document order.
func all(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for d := range n.Descendants() {
		if d.Type == html.ElementNode && match(d) {
			out = append(out, d)
		}
	}
	return out
}

func tag(name string) func(*html.Node) bool {
	return func(n *html.Node) bool { return n.Data == name }
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func byID(doc *html.Node, id string) *html.Node {
	found := all(doc, func(n *html.Node) bool { return attr(n, "id") == id })
	if len(found) == 0 {
		return nil
	}
	return found[0]
}

func text(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return strings.TrimSpace(b.String())
}

func TestWriteColumnsPerResult(t *testing.T) {
	tests := map[string]struct {
		results []*simulate.Result
		labels  []string
	}{
		"one result":           {results: []*simulate.Result{fixture("FirstGPU", 1)}, labels: []string{"FirstGPU"}},
		"three results":        {results: []*simulate.Result{fixture("FirstGPU", 1), fixture("Rank", 0.5), fixture("Never", 2)}, labels: []string{"FirstGPU", "Rank", "Never"}},
		"an unlabelled result": {results: []*simulate.Result{fixture("", 1)}, labels: []string{"simulation"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, doc := render(t, tc.results...)
			summary := byID(doc, "summary")
			if summary == nil {
				t.Fatal("no summary table")
			}
			var heads []string
			for _, th := range all(summary, func(n *html.Node) bool { return n.Data == "th" && strings.Contains(attr(n, "class"), "result") }) {
				heads = append(heads, text(th))
			}
			if diff := cmp.Diff(tc.labels, heads); diff != "" {
				t.Errorf("summary columns (-want +got):\n%s", diff)
			}
			for _, tr := range all(summary, tag("tr"))[1:] {
				if attr(tr, "class") == "section" {
					continue
				}
				if cells := all(tr, tag("td")); len(cells) != len(tc.results) {
					t.Errorf("summary row %q has %d cells, want one per result (%d)", text(all(tr, tag("th"))[0]), len(cells), len(tc.results))
				}
			}
			// Per result: a per-user chart and a busy chart; then the waiting jobs, the
			// ordinals and the 1st-GPU distribution.
			if got, want := len(all(doc, tag("svg"))), 2*len(tc.results)+3; got != want {
				t.Errorf("%d charts, want %d", got, want)
			}
			// The user groups of columns: one per result.
			users := byID(doc, "users")
			if got := len(all(users, func(n *html.Node) bool { return n.Data == "th" && attr(n, "class") == "group" })); got != len(tc.results) {
				t.Errorf("user table has %d groups of columns, want %d", got, len(tc.results))
			}
		})
	}
}

func TestWriteSummaryFigures(t *testing.T) {
	_, doc := render(t, fixture("FirstGPU", 1), fixture("Never", 2))
	rows := map[string][]string{}
	best := map[string]int{}
	for _, tr := range all(byID(doc, "summary"), tag("tr")) {
		th := all(tr, tag("th"))
		if len(th) == 0 || th[0].FirstChild == nil || strings.Contains(attr(tr, "class"), "section") {
			continue
		}
		name := text(th[0])
		if hint := all(th[0], func(n *html.Node) bool { return attr(n, "class") == "hint" }); len(hint) > 0 {
			name = strings.TrimSuffix(name, text(hint[0]))
		}
		for i, td := range all(tr, tag("td")) {
			rows[name] = append(rows[name], text(td))
			if strings.Contains(attr(td, "class"), "best") {
				best[name] = i + 1
			}
		}
	}
	want := map[string][]string{
		"Jobs finished":             {"30", "30"},
		"Jobs never started":        {"0", "0"},
		"GPU-hours used":            {"436", "436"},
		"Utilisation":               {"57.0%", "57.0%"},
		"Wait p50, all jobs":        {"25m", "50m"},
		"Wait p95, all jobs":        {"4h", "8h"},
		"Wait max, all jobs":        {"9h", "18h"},
		"Wait p50, 1st-GPU jobs":    {"5m", "10m"},
		"Wait p95, 1st-GPU jobs":    {"40m", "1h20m"},
		"Longest head-of-line wait": {"5h", "10h"},
		"Preemptions":               {"3", "6"},
		"Wasted GPU-hours":          {"7.5", "15.0"},
		"Idle reclaims":             {"0", "0"},
		"Fairness (Jain)":           {"0.800", "0.600"},
		"Decisions":                 {"1234", "1234"},
		"Simulated in":              {"42ms", "42ms"},
		"--max-head-wait":           {"4h", "4h"},
		"--min-runtime":             {"2h", "2h"},
		"--preemption":              {"FirstGPU", "Never"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
	// The best of each compared figure is marked: shorter waits, fewer preemptions, fairer.
	wantBest := map[string]int{"Wait p50, all jobs": 1, "Wait p95, all jobs": 1, "Wait max, all jobs": 1, "Wait p50, 1st-GPU jobs": 1,
		"Wait p95, 1st-GPU jobs": 1, "Longest head-of-line wait": 1, "Preemptions": 1, "Wasted GPU-hours": 1, "Fairness (Jain)": 1}
	if diff := cmp.Diff(wantBest, best); diff != "" {
		t.Errorf("best cells (-want +got):\n%s", diff)
	}
	differs := all(byID(doc, "summary"), func(n *html.Node) bool { return strings.Contains(attr(n, "class"), "differs") })
	if len(differs) != 1 || !strings.Contains(text(differs[0]), "--preemption") {
		t.Errorf("the settings that differ are not marked: %d rows marked", len(differs))
	}
}

func TestWriteEscapesTraceNames(t *testing.T) {
	r := fixture("FirstGPU", 1)
	r.Label = `</title><script>alert(2)</script>`
	r.HeadOfLine = append(r.HeadOfLine, simulate.HeadOfLineWait{Job: `lab/<b>bold</b>`, User: userAttr, GPUs: 4})
	out, doc := render(t, r)
	if n := len(all(doc, tag("script"))); n != 0 {
		t.Errorf("the report holds %d script elements; trace names must be text", n)
	}
	if n := len(all(doc, tag("img"))); n != 0 {
		t.Errorf("the report holds %d img elements; trace names must be text", n)
	}
	if strings.Contains(out, "<script>") || strings.Contains(out, "<b>bold") {
		t.Error("a name from the trace is in the report unescaped")
	}
	// The names read back as they were, as text.
	var users []string
	for _, tr := range all(byID(doc, "users"), func(n *html.Node) bool { return attr(n, "data-user") != "" }) {
		users = append(users, attr(tr, "data-user"))
		if got := text(all(tr, tag("th"))[0]); got != attr(tr, "data-user") {
			t.Errorf("user cell %q, want %q", got, attr(tr, "data-user"))
		}
	}
	if diff := cmp.Diff([]string{"alice", "bob", "carol", userScript, userAttr}, users); diff != "" {
		t.Errorf("users (-want +got):\n%s", diff)
	}
	if got := text(all(doc, tag("title"))[0]); got != "Queue simulation" {
		t.Errorf("page title %q", got)
	}
	var legends []string
	for _, p := range all(doc, func(n *html.Node) bool { return attr(n, "class") == "legend" }) {
		legends = append(legends, text(p))
	}
	if !strings.Contains(strings.Join(legends, "\n"), userScript) {
		t.Errorf("the user chart's legend lacks %q: %q", userScript, legends)
	}
	if !strings.Contains(text(byID(doc, "summary")), r.Label) {
		t.Error("the label is not shown as text in the summary")
	}
}

// TestWriteSelfContained checks that nothing in the report would make a request: no script, no
// external style or font, no URL but the SVG namespace and data: URLs.
func TestWriteSelfContained(t *testing.T) {
	out, doc := render(t, fixture("FirstGPU", 1), fixture("Rank", 0.5))
	for _, n := range all(doc, func(*html.Node) bool { return true }) {
		for _, a := range n.Attr {
			switch a.Key {
			case "src", "href", "srcset", "action", "poster", "data":
				if !strings.HasPrefix(a.Val, "data:") {
					t.Errorf("<%s %s=%q> would make a request", n.Data, a.Key, a.Val)
				}
			}
		}
		if n.Data == "script" || n.Data == "iframe" || n.Data == "object" {
			t.Errorf("<%s> in the report", n.Data)
		}
	}
	for _, s := range []string{"@import", "url(", "@font-face"} {
		if strings.Contains(out, s) {
			t.Errorf("the report's style holds %q", s)
		}
	}
	if len(out) > 400<<10 {
		t.Errorf("the report is %d KiB: the charts should be bucketed", len(out)>>10)
	}
}

func TestWriteLongTimelineIsBucketed(t *testing.T) {
	r := fixture("FirstGPU", 1)
	// 30 days sampled every minute: 43,201 points.
	r.End = r.Start.Add(30 * 24 * 60 * r.Step / 10)
	r.Step /= 10
	base := r.Timeline[0]
	r.Timeline = nil
	for at := r.Start; !at.After(r.End); at = at.Add(r.Step) {
		p := base
		p.At = at
		r.Timeline = append(r.Timeline, p)
	}
	out, doc := render(t, r)
	for _, poly := range all(doc, tag("polygon")) {
		if n := len(strings.Fields(attr(poly, "points"))); n > 2*maxColumns {
			t.Errorf("a polygon of %d points", n)
		}
	}
	if len(out) > 1<<20 {
		t.Errorf("the report is %d KiB", len(out)>>10)
	}
}

func TestWriteNoResult(t *testing.T) {
	if err := Write(&bytes.Buffer{}, nil); err == nil {
		t.Error("Write of no result: no error")
	}
}

// A user who queues many 1-GPU jobs has many GPU ordinals: the report shows the first ones and
// says how many more there are.
func TestWriteManyOrdinals(t *testing.T) {
	r := fixture("FirstGPU", 1)
	r.Ordinals = nil
	for o := int32(1); o <= 40; o++ {
		r.Ordinals = append(r.Ordinals, simulate.OrdinalStats{Ordinal: o, Wait: simulate.WaitStats{Count: 1, P50: time.Hour, P95: time.Hour, Max: time.Hour}})
	}
	out, doc := render(t, r)
	var rows []string
	for _, tr := range all(byID(doc, "ordinals"), tag("tr"))[2:] {
		rows = append(rows, text(all(tr, tag("th"))[0]))
	}
	want := []string{"1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th", "11th", "12th"}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("ordinal rows (-want +got):\n%s", diff)
	}
	if !strings.Contains(out, "and 28 more ordinals, up to the 40th GPU") {
		t.Error("the report does not say that 28 ordinals are left out")
	}
}

func TestWaitText(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0", 45 * time.Second: "45s", 90 * time.Second: "2m", 3*time.Hour + 5*time.Minute + 20*time.Second: "3h5m",
		47 * time.Hour: "47h", 52*time.Hour + 20*time.Minute: "2d4h", 72 * time.Hour: "3d",
	} {
		if got := waitText(d); got != want {
			t.Errorf("waitText(%s) = %q, want %q", d, got, want)
		}
	}
}
