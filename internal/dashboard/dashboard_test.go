package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/html"

	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// fixture is a queue of 8 GPUs, 1 held by a foreign pod: the jobs ranked 1-3 fit in the 7 left
// (2+4+1), the cut falls before carol's job.
func fixture() *queueview.Snapshot {
	return &queueview.Snapshot{
		Time: t0, Capacity: 8, Used: 6, Foreign: 1, Free: 1, NodeAware: true,
		Jobs: []queueview.Job{
			{Namespace: "lab", Name: "alice-train", User: "alice", GPUs: 2, UserGPUs: "1-2", Phase: "Running", Rank: 1, Node: "gpu-1",
				Since: t0.Add(-3*time.Hour - 5*time.Minute), Message: "running on gpu-1", InCapacity: true},
			{Namespace: "lab", Name: "bob-big", User: "bob", GPUs: 4, UserGPUs: "1-4", Priority: 1, Phase: "Running", Rank: 2, Node: "gpu-2",
				Since: t0.Add(-12 * time.Minute), Message: "running on gpu-2", InCapacity: true},
			{Namespace: "lab", Name: "alice-eval", User: "alice", GPUs: 1, UserGPUs: "3", Phase: "Queued", Rank: 3, Position: 1,
				Since: t0.Add(-45 * time.Second), Message: "waiting: 1 GPU free, needs 1", InCapacity: true},
			{Namespace: "lab", Name: "carol-sweep", User: "carol", GPUs: 2, UserGPUs: "1-2", Phase: "Queued", Rank: 4, Position: 2,
				Since: t0.Add(-2 * time.Minute), Message: "waiting: 1 job ahead", Preemptions: 1},
			{Namespace: "lab", Name: "bob-more", User: "bob", GPUs: 4, UserGPUs: "5-8", Priority: -1, Phase: "Queued", Rank: 5, Position: 3,
				Since: t0.Add(-26 * time.Hour), Message: "waiting: 2 jobs ahead"},
			{Namespace: "lab", Name: "dave-cpu", User: "dave", Phase: "Running", Node: "cpu-1", Since: t0.Add(-time.Minute),
				Message: "running on cpu-1", InCapacity: true},
		},
		Users: []queueview.User{
			{User: "bob", GPUsInUse: 4, RunningJobs: 1, WaitingJobs: 1, WaitingGPUs: 4},
			{User: "alice", GPUsInUse: 2, RunningJobs: 1, WaitingJobs: 1, WaitingGPUs: 1},
			{User: "carol", WaitingJobs: 1, WaitingGPUs: 2},
			{User: "dave", RunningJobs: 1},
		},
		Nodes: []queueview.Node{
			{Name: "gpu-1", GPUs: 4, Used: 2, Foreign: 1, Free: 1},
			{Name: "gpu-2", GPUs: 4, Used: 4},
		},
		Preemptions: []queueview.Preemption{
			{Time: t0.Add(-20 * time.Minute), Preemptor: "lab/alice-train", PreemptorUser: "alice", Victim: "lab/carol-sweep",
				VictimUser: "carol", Node: "gpu-1", Reason: "preempted by lab/alice-train (alice's GPU #1)"},
		},
	}
}

func newHandler(store *queueview.Store, opts ...Option) *Handler {
	return New(store, append([]Option{WithClock(func() time.Time { return t0.Add(5 * time.Second) }),
		WithLocation(time.UTC), WithEventInterval(0)}, opts...)...)
}

func published(s *queueview.Snapshot) *queueview.Store {
	store := &queueview.Store{}
	store.Publish(s)
	return store
}

func do(h http.Handler, method, target string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w
}

func parse(t *testing.T, body string) *html.Node {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the HTML: %v", err)
	}
	return doc
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func hasClass(n *html.Node, class string) bool {
	v, _ := attr(n, "class")
	for _, c := range strings.Fields(v) {
		if c == class {
			return true
		}
	}
	return false
}

// find returns the elements for which match is true, in document order.
func find(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for c := range n.Descendants() {
		if c.Type == html.ElementNode && match(c) {
			out = append(out, c)
		}
	}
	return out
}

func byID(n *html.Node, id string) *html.Node {
	els := find(n, func(e *html.Node) bool { v, ok := attr(e, "id"); return ok && v == id })
	if len(els) == 0 {
		return nil
	}
	return els[0]
}

func text(n *html.Node) string {
	var b strings.Builder
	for c := range n.Descendants() {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// rows is the jobs table as a list: each job's namespace/name, "--cut--" for the capacity cut,
// "--cpu--" for the CPU-only header, "--none--" for a shown empty row.
func rows(t *testing.T, doc *html.Node) []string {
	t.Helper()
	table := byID(doc, "jobs")
	if table == nil {
		t.Fatal("no table#jobs")
	}
	var out []string
	for _, tr := range find(table, func(e *html.Node) bool { return e.Data == "tr" }) {
		_, hidden := attr(tr, "hidden")
		switch {
		case hasClass(tr, "cut"):
			out = append(out, "--cut--")
		case hasClass(tr, "section"):
			out = append(out, "--cpu--")
		case hasClass(tr, "job"):
			job, _ := attr(tr, "data-job")
			out = append(out, job)
		case hasClass(tr, "empty") && !hidden:
			out = append(out, "--none--")
		}
	}
	return out
}

func TestRoutes(t *testing.T) {
	h := newHandler(published(fixture()))
	for name, tc := range map[string]struct {
		method, target string
		status         int
		contentType    string
	}{
		"page":              {"GET", "/", 200, "text/html; charset=utf-8"},
		"page with filter":  {"GET", "/?user=alice", 200, "text/html; charset=utf-8"},
		"page HEAD":         {"HEAD", "/", 200, "text/html; charset=utf-8"},
		"fragment":          {"GET", "/fragment?user=bob", 200, "text/html; charset=utf-8"},
		"script":            {"GET", "/static/app.js", 200, "text/javascript; charset=utf-8"},
		"style":             {"GET", "/static/style.css", 200, "text/css; charset=utf-8"},
		"queue":             {"GET", "/api/v1/queue", 200, "application/json; charset=utf-8"},
		"users":             {"GET", "/api/v1/users", 200, "application/json; charset=utf-8"},
		"nodes":             {"GET", "/api/v1/nodes", 200, "application/json; charset=utf-8"},
		"preemptions":       {"GET", "/api/v1/preemptions", 200, "application/json; charset=utf-8"},
		"events HEAD":       {"HEAD", "/api/v1/events", 200, "text/event-stream; charset=utf-8"},
		"unknown API":       {"GET", "/api/v1/jobs", 404, "application/json; charset=utf-8"},
		"unknown page":      {"GET", "/admin", 404, "text/plain; charset=utf-8"},
		"unknown static":    {"GET", "/static/secret.txt", 404, "text/plain; charset=utf-8"},
		"POST refused":      {"POST", "/", 405, "application/json; charset=utf-8"},
		"DELETE refused":    {"DELETE", "/api/v1/queue", 405, "application/json; charset=utf-8"},
		"PUT refused":       {"PUT", "/api/v1/events", 405, "application/json; charset=utf-8"},
		"OPTIONS refused":   {"OPTIONS", "/api/v1/queue", 405, "application/json; charset=utf-8"},
		"path traversal":    {"GET", "/static/../dashboard.go", 307, "text/html; charset=utf-8"}, // to /dashboard.go: 404
		"templates private": {"GET", "/templates/dashboard.html", 404, "text/plain; charset=utf-8"},
	} {
		t.Run(name, func(t *testing.T) {
			w := do(h, tc.method, tc.target)
			got := map[string]any{"status": w.Code, "Content-Type": w.Header().Get("Content-Type"),
				"Content-Security-Policy": w.Header().Get("Content-Security-Policy"), "X-Content-Type-Options": w.Header().Get("X-Content-Type-Options")}
			want := map[string]any{"status": tc.status, "Content-Type": tc.contentType,
				"Content-Security-Policy": ContentSecurityPolicy, "X-Content-Type-Options": "nosniff"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s %s (-want +got):\n%s", tc.method, tc.target, diff)
			}
			if tc.status == 405 && w.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow = %q, want GET, HEAD", w.Header().Get("Allow"))
			}
		})
	}
}

func TestBeforeFirstDecision(t *testing.T) {
	h := newHandler(&queueview.Store{})
	for name, target := range map[string]string{
		"queue": "/api/v1/queue", "users": "/api/v1/users", "nodes": "/api/v1/nodes", "preemptions": "/api/v1/preemptions",
	} {
		t.Run(name, func(t *testing.T) {
			w := do(h, "GET", target)
			var body ErrorResponse
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q is not JSON: %v", w.Body.String(), err)
			}
			got := map[string]any{"status": w.Code, "Content-Type": w.Header().Get("Content-Type"), "Retry-After": w.Header().Get("Retry-After"),
				"says why": strings.Contains(body.Error, "no queue decision yet")}
			want := map[string]any{"status": 503, "Content-Type": "application/json; charset=utf-8", "Retry-After": "5", "says why": true}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s\nbody: %s", diff, w.Body.String())
			}
		})
	}
	t.Run("page", func(t *testing.T) {
		w := do(h, "GET", "/")
		doc := parse(t, w.Body.String())
		if w.Code != 503 || byID(doc, "no-snapshot") == nil || byID(doc, "jobs") != nil {
			t.Errorf("status %d, want 503 with the waiting notice and no table:\n%s", w.Code, w.Body.String())
		}
	})
}

func TestQueueJSON(t *testing.T) {
	snap := fixture()
	h := newHandler(published(snap))
	for name, tc := range map[string]struct {
		target string
		want   QueueResponse
	}{
		"all": {"/api/v1/queue", QueueResponse{Time: t0, Cluster: Cluster{Capacity: 8, Used: 6, Foreign: 1, Free: 1, NodeAware: true},
			Summary: Summary{Jobs: 6, GPUJobs: 5, Running: 3, Queued: 3, GPUsInUse: 6, WaitingGPUs: 7, BeyondCapacity: 2},
			Jobs:    snap.Jobs}},
		"alice": {"/api/v1/queue?user=alice", QueueResponse{Time: t0, Cluster: Cluster{Capacity: 8, Used: 6, Foreign: 1, Free: 1, NodeAware: true},
			User: "alice", Summary: Summary{Jobs: 2, GPUJobs: 2, Running: 1, Queued: 1, GPUsInUse: 2, WaitingGPUs: 1},
			Jobs: []queueview.Job{snap.Jobs[0], snap.Jobs[2]}}},
		"nobody": {"/api/v1/queue?user=nobody", QueueResponse{Time: t0, Cluster: Cluster{Capacity: 8, Used: 6, Foreign: 1, Free: 1, NodeAware: true},
			User: "nobody", Jobs: []queueview.Job{}}},
	} {
		t.Run(name, func(t *testing.T) {
			w := do(h, "GET", tc.target)
			if w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body.String())
			}
			var got QueueResponse
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	t.Run("field names", func(t *testing.T) {
		var raw struct {
			Top  map[string]json.RawMessage
			Jobs []map[string]any `json:"jobs"`
		}
		body := do(h, "GET", "/api/v1/queue").Body.Bytes()
		if err := json.Unmarshal(body, &raw.Top); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatal(err)
		}
		var top []string
		for k := range raw.Top {
			top = append(top, k)
		}
		job := raw.Jobs[3] // carol's: every field set
		var fields []string
		for k := range job {
			fields = append(fields, k)
		}
		got := map[string][]string{"top": sorted(top), "job": sorted(fields)}
		want := map[string][]string{
			"top": {"capacity", "foreign", "free", "jobs", "nodeAware", "summary", "time", "used"},
			"job": {"gpus", "inCapacity", "message", "name", "namespace", "phase", "position", "preemptions", "priority", "rank", "since", "user", "userGPUs"},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("JSON field names (-want +got):\n%s", diff)
		}
	})
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func TestOtherJSON(t *testing.T) {
	snap := fixture()
	h := newHandler(published(snap))
	cluster := Cluster{Capacity: 8, Used: 6, Foreign: 1, Free: 1, NodeAware: true}
	for name, tc := range map[string]struct {
		target string
		into   func() any
		want   any
	}{
		"users": {"/api/v1/users", func() any { return &UsersResponse{} },
			&UsersResponse{Time: t0, Capacity: 8, Users: snap.Users}},
		"users of bob": {"/api/v1/users?user=BOB", func() any { return &UsersResponse{} },
			&UsersResponse{Time: t0, Capacity: 8, User: "BOB", Users: snap.Users[:1]}},
		"nodes": {"/api/v1/nodes", func() any { return &NodesResponse{} },
			&NodesResponse{Time: t0, Cluster: cluster, Nodes: snap.Nodes}},
		"preemptions": {"/api/v1/preemptions", func() any { return &PreemptionsResponse{} },
			&PreemptionsResponse{Time: t0, Preemptions: snap.Preemptions}},
		"preemptions of the victim": {"/api/v1/preemptions?user=carol", func() any { return &PreemptionsResponse{} },
			&PreemptionsResponse{Time: t0, User: "carol", Preemptions: snap.Preemptions}},
		"preemptions of someone else": {"/api/v1/preemptions?user=dave", func() any { return &PreemptionsResponse{} },
			&PreemptionsResponse{Time: t0, User: "dave", Preemptions: []queueview.Preemption{}}},
	} {
		t.Run(name, func(t *testing.T) {
			w := do(h, "GET", tc.target)
			got := tc.into()
			if err := json.Unmarshal(w.Body.Bytes(), got); err != nil {
				t.Fatalf("status %d, body %q: %v", w.Code, w.Body.String(), err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("empty lists are [] not null", func(t *testing.T) {
		h := newHandler(published(&queueview.Snapshot{Time: t0}))
		for _, target := range []string{"/api/v1/queue", "/api/v1/users", "/api/v1/nodes", "/api/v1/preemptions"} {
			if body := do(h, "GET", target).Body.String(); strings.Contains(body, "null") {
				t.Errorf("%s: %s", target, body)
			}
		}
	})
}

func TestPage(t *testing.T) {
	doc := parse(t, do(newHandler(published(fixture())), "GET", "/").Body.String())
	row := func(job string) map[string]string {
		trs := find(doc, func(e *html.Node) bool { v, _ := attr(e, "data-job"); return v == job })
		if len(trs) != 1 {
			t.Fatalf("%d rows for %s", len(trs), job)
		}
		cells := map[string]string{}
		for _, td := range find(trs[0], func(e *html.Node) bool { return e.Data == "td" }) {
			label, _ := attr(td, "data-label")
			cells[label] = text(td)
		}
		return cells
	}
	got := map[string]any{
		"carol":   row("lab/carol-sweep"),
		"dave":    row("lab/dave-cpu"),
		"updated": text(byID(doc, "snapshot")),
		"stats":   []string{text(byID(doc, "stat-capacity")), text(byID(doc, "stat-used")), text(byID(doc, "stat-free")), text(byID(doc, "stat-foreign"))},
		"viewport": len(find(doc, func(e *html.Node) bool {
			v, _ := attr(e, "name")
			c, _ := attr(e, "content")
			return e.Data == "meta" && v == "viewport" && strings.Contains(c, "width=device-width")
		})),
		"user bars": len(find(byID(doc, "users"), func(e *html.Node) bool { return hasClass(e, "bar") })),
		"bob's bar": func() []string {
			li := find(byID(doc, "users"), func(e *html.Node) bool { v, _ := attr(e, "data-user"); return e.Data == "li" && v == "bob" })[0]
			var classes []string
			for _, s := range find(li, func(e *html.Node) bool { return hasClass(e, "seg") }) {
				v, _ := attr(s, "class")
				classes = append(classes, v)
			}
			return classes
		}(),
		"nodes":       len(find(byID(doc, "nodes"), func(e *html.Node) bool { return e.Data == "tr" })) - 1,
		"preemptions": text(find(byID(doc, "preemptions"), func(e *html.Node) bool { v, _ := attr(e, "data-user"); return v == "alice carol" })[0]),
	}
	want := map[string]any{
		"carol": map[string]string{"Rank": "4", "Position": "2", "User": "carol", "Job": "lab/carol-sweep", "GPUs": "2", "GPU#": "1-2",
			"Priority": "0", "Phase": "Queued ↺1", "Node": "–", "For": "2m", "GPU util": "–", "Message": "waiting: 1 job ahead"},
		"dave": map[string]string{"Rank": "–", "Position": "–", "User": "dave", "Job": "lab/dave-cpu", "GPUs": "0", "GPU#": "–",
			"Priority": "0", "Phase": "Running", "Node": "cpu-1", "For": "1m", "GPU util": "–", "Message": "running on cpu-1"},
		"updated":     "Last updated 2026-03-02 10:00:00 UTC (5s ago)",
		"stats":       []string{"8", "6", "1", "1"},
		"viewport":    1,
		"user bars":   4,
		"bob's bar":   []string{"seg used w-50", "seg wait w-50"},
		"nodes":       2,
		"preemptions": "20m ago lab/alice-train (alice) lab/carol-sweep (carol) gpu-1 preempted by lab/alice-train (alice's GPU #1)",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestCapacityCutAndFilter(t *testing.T) {
	allFit := fixture()
	allFit.Jobs = allFit.Jobs[:3]
	cpuOnly := fixture()
	cpuOnly.Jobs = cpuOnly.Jobs[5:]
	noneFit := fixture()
	noneFit.Jobs = []queueview.Job{fixture().Jobs[4]}
	for name, tc := range map[string]struct {
		snap   *queueview.Snapshot
		target string
		want   []string
	}{
		"all jobs":                   {fixture(), "/", []string{"lab/alice-train", "lab/bob-big", "lab/alice-eval", "--cut--", "lab/carol-sweep", "lab/bob-more", "--cpu--", "lab/dave-cpu"}},
		"alice: all fit, cut below":  {fixture(), "/?user=alice", []string{"lab/alice-train", "lab/alice-eval", "--cut--"}},
		"dave: CPU only, no cut":     {fixture(), "/?user=dave", []string{"--cpu--", "lab/dave-cpu"}},
		"bob: cut between":           {fixture(), "/?user=bob", []string{"lab/bob-big", "--cut--", "lab/bob-more"}},
		"case-insensitive substring": {fixture(), "/?user=AR", []string{"--cut--", "lab/carol-sweep"}},
		"nobody":                     {fixture(), "/?user=nobody", []string{"--none--"}},
		"fragment too":               {fixture(), "/fragment?user=bob", []string{"lab/bob-big", "--cut--", "lab/bob-more"}},
		"all fit: no cut":            {allFit, "/", []string{"lab/alice-train", "lab/bob-big", "lab/alice-eval"}},
		"CPU-only jobs":              {cpuOnly, "/", []string{"--cpu--", "lab/dave-cpu"}},
		"none fits":                  {noneFit, "/", []string{"--cut--", "lab/bob-more"}},
		"empty queue":                {&queueview.Snapshot{Time: t0}, "/", []string{"--none--"}},
	} {
		t.Run(name, func(t *testing.T) {
			w := do(newHandler(published(tc.snap)), "GET", tc.target)
			if diff := cmp.Diff(tc.want, rows(t, parse(t, w.Body.String()))); diff != "" {
				t.Errorf("rows of %s (-want +got):\n%s", tc.target, diff)
			}
		})
	}
}

func TestFilterInputKeepsValue(t *testing.T) {
	doc := parse(t, do(newHandler(published(fixture())), "GET", "/?user=alice").Body.String())
	input := byID(doc, "user-filter")
	v, _ := attr(input, "value")
	name, _ := attr(input, "name")
	if v != "alice" || name != "user" {
		t.Errorf("filter input: name %q value %q", name, v)
	}
}

const (
	xssScript = `<script>alert(1)</script>`
	xssAttr   = `"><img src=x onerror=alert(1)>`
)

// TestHostileStrings: user data goes through html/template, so tags in it come out as text.
func TestHostileStrings(t *testing.T) {
	snap := fixture()
	j := &snap.Jobs[0]
	j.User, j.Name, j.Namespace, j.Message, j.Node, j.UserGPUs = xssScript, xssAttr, xssAttr, xssScript+xssAttr, xssAttr, xssScript
	snap.Users[0].User = xssAttr
	snap.Nodes[0].Name = xssScript
	p := &snap.Preemptions[0]
	p.Preemptor, p.PreemptorUser, p.Victim, p.VictimUser, p.Reason, p.Node = xssScript, xssAttr, xssAttr, xssScript, xssScript+xssAttr, xssAttr
	h := newHandler(published(snap))

	for name, target := range map[string]string{
		"page":                  "/",
		"fragment":              "/fragment",
		"page, hostile filter":  "/?user=" + urlQuery(xssAttr),
		"page, script filter":   "/?user=" + urlQuery(xssScript),
		"fragment, attr filter": "/fragment?user=" + urlQuery(xssAttr),
	} {
		t.Run(name, func(t *testing.T) {
			body := do(h, "GET", target).Body.String()
			for _, raw := range []string{"<script>alert", "<img", "onerror=alert(1)>"} {
				if strings.Contains(body, raw) {
					t.Errorf("raw %q in the HTML", raw)
				}
			}
			doc := parse(t, body)
			var scripts []string
			for _, s := range find(doc, func(e *html.Node) bool { return e.Data == "script" }) {
				src, _ := attr(s, "src")
				scripts = append(scripts, src+":"+text(s))
			}
			got := map[string]any{
				"scripts": scripts,
				"imgs":    len(find(doc, func(e *html.Node) bool { return e.Data == "img" })),
				"event handler attributes": len(find(doc, func(e *html.Node) bool {
					for _, a := range e.Attr {
						if strings.HasPrefix(a.Key, "on") {
							return true
						}
					}
					return false
				})),
				"inline styles": len(find(doc, func(e *html.Node) bool { _, ok := attr(e, "style"); return ok || e.Data == "style" })),
			}
			want := map[string]any{"scripts": []string{"static/app.js:"}, "imgs": 0, "event handler attributes": 0, "inline styles": 0}
			if target == "/fragment" || strings.HasPrefix(target, "/fragment?") {
				want["scripts"] = []string(nil)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	t.Run("shown as text", func(t *testing.T) {
		doc := parse(t, do(h, "GET", "/").Body.String())
		tr := find(doc, func(e *html.Node) bool { return hasClass(e, "job") })[0]
		cells := map[string]string{}
		for _, td := range find(tr, func(e *html.Node) bool { return e.Data == "td" }) {
			label, _ := attr(td, "data-label")
			cells[label] = text(td)
		}
		dataUser, _ := attr(tr, "data-user")
		dataJob, _ := attr(tr, "data-job")
		got := map[string]string{"user": cells["User"], "job": cells["Job"], "message": cells["Message"], "node": cells["Node"],
			"data-user": dataUser, "data-job": dataJob}
		want := map[string]string{"user": xssScript, "job": xssAttr + "/" + xssAttr, "message": xssScript + xssAttr, "node": xssAttr,
			"data-user": xssScript, "data-job": xssAttr + "/" + xssAttr}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})

	t.Run("JSON", func(t *testing.T) {
		for _, target := range []string{"/api/v1/queue", "/api/v1/users", "/api/v1/nodes", "/api/v1/preemptions", "/api/v1/queue?user=" + urlQuery(xssScript)} {
			body := do(h, "GET", target).Body.String()
			if strings.ContainsAny(body, "<>") {
				t.Errorf("%s: raw < or > in %s", target, body)
			}
		}
		data, _ := h.encoded(snap)
		if strings.ContainsAny(string(data), "<>") {
			t.Errorf("event data: raw < or > in %s", data)
		}
	})
}

func urlQuery(s string) string {
	r := strings.NewReplacer("%", "%25", "&", "%26", "#", "%23", "+", "%2B", " ", "+", `"`, "%22", "<", "%3C", ">", "%3E", "=", "%3D")
	return r.Replace(s)
}

func TestHumanDuration(t *testing.T) {
	for in, want := range map[time.Duration]string{
		-time.Second:                    "0s",
		0:                               "0s",
		45 * time.Second:                "45s",
		12*time.Minute + 59*time.Second: "12m",
		3 * time.Hour:                   "3h",
		3*time.Hour + 5*time.Minute:     "3h05m",
		26 * time.Hour:                  "1d2h",
		48 * time.Hour:                  "2d",
	} {
		if got := humanDuration(in); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", in, got, want)
		}
	}
}

// sseEvent is one event read from a stream.
type sseEvent struct {
	name, id, data string
}

// readEvent reads the next event (skipping comments and the retry field).
func readEvent(t *testing.T, r *bufio.Reader) sseEvent {
	t.Helper()
	var ev sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.name != "" || ev.data != "" {
				return ev
			}
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			ev.data += strings.TrimPrefix(line, "data: ")
		}
	}
}

func TestEvents(t *testing.T) {
	store := &queueview.Store{}
	srv := httptest.NewServer(newHandler(store, WithHeartbeat(20*time.Millisecond)))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get("Content-Type"); got != "text/event-stream; charset=utf-8" {
		t.Fatalf("Content-Type %q", got)
	}
	r := bufio.NewReader(resp.Body)

	// Before the first decision the stream stays open and sends only heartbeats.
	first, err := r.ReadString('\n')
	if err != nil || first != "retry: 2000\n" {
		t.Fatalf("first line %q, %v", first, err)
	}
	time.Sleep(60 * time.Millisecond)

	decode := func(ev sseEvent) *queueview.Snapshot {
		var s queueview.Snapshot
		if err := json.Unmarshal([]byte(ev.data), &s); err != nil {
			t.Fatalf("event data %q: %v", ev.data, err)
		}
		return &s
	}
	snap := fixture()
	store.Publish(snap)
	ev := readEvent(t, r)
	if diff := cmp.Diff(snap, decode(ev)); ev.name != "snapshot" || diff != "" {
		t.Errorf("event %q after the first Publish (-want +got):\n%s", ev.name, diff)
	}

	next := fixture()
	next.Time = t0.Add(time.Second)
	next.Jobs = append(next.Jobs, queueview.Job{Namespace: "lab", Name: "erin-new", User: "erin", GPUs: 1, Phase: "Queued", Rank: 6, Position: 4})
	store.Publish(next)
	ev2 := readEvent(t, r)
	got := decode(ev2)
	if ev2.id == ev.id || len(got.Jobs) != 7 || got.Jobs[6].Name != "erin-new" {
		t.Errorf("second event id %q (first %q), jobs %d", ev2.id, ev.id, len(got.Jobs))
	}

	// The page names the same snapshot, so that the script does not fetch what it shows.
	page := parse(t, do(newHandler(store), "GET", "/").Body.String())
	if id, _ := attr(byID(page, "snapshot"), "data-id"); id == "" {
		t.Error("no snapshot id on the page")
	}
}

func TestEventsCoalesce(t *testing.T) {
	store := published(fixture())
	srv := httptest.NewServer(New(store, WithEventInterval(300*time.Millisecond)))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	readEvent(t, r)
	var last *queueview.Snapshot
	for i := range 5 { // a burst of decisions
		last = fixture()
		last.Time = t0.Add(time.Duration(i+1) * time.Second)
		store.Publish(last)
	}
	ev := readEvent(t, r)
	var got queueview.Snapshot
	if err := json.Unmarshal([]byte(ev.data), &got); err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(last.Time) {
		t.Errorf("after a burst the stream sent the snapshot of %v, want the latest %v", got.Time, last.Time)
	}
}

func TestMaxStreams(t *testing.T) {
	store := published(fixture())
	srv := httptest.NewServer(New(store, WithMaxStreams(1)))
	defer srv.Close()
	first, err := http.Get(srv.URL + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	second, err := http.Get(srv.URL + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Body.Close()
	if first.StatusCode != 200 || second.StatusCode != 503 {
		t.Errorf("statuses %d, %d; want 200, 503", first.StatusCode, second.StatusCode)
	}
}

// TestServer: the Runnable serves on its address and stops with its context, open streams too.
func TestServer(t *testing.T) {
	s := NewServer("127.0.0.1:0", New(published(fixture())), logr.Discard())
	if s.NeedLeaderElection() {
		t.Error("the dashboard must run on every replica")
	}
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()

	resp, err := http.Get("http://" + addr.String() + "/api/v1/queue")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"alice-train"`) {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	stream, err := http.Get("http://" + addr.String() + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	readEvent(t, bufio.NewReader(stream.Body))

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Start: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not return after the context ended, with an event stream open")
	}
}
