package dashboard

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/html"

	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

func ptr[T any](v T) *T { return &v }

// utilFixture is the fixture with utilisation: alice's job busy (87%), bob's idle for 1h40m and
// reclaimable (2%), and erin's running job not measured (unknown, never 0).
func utilFixture() *queueview.Snapshot {
	s := fixture()
	s.Jobs[0].Utilization = &queueview.Utilization{Percent: 87, MemoryUsedMiB: 30000, Window: "5m", MeasuredAt: t0.Add(-30 * time.Second)}
	s.Jobs[1].Utilization = &queueview.Utilization{Percent: 2, Window: "5m", MeasuredAt: t0.Add(-30 * time.Second)}
	s.Jobs[1].IdleSince, s.Jobs[1].Idle = ptr(t0.Add(-100*time.Minute)), "Reclaimable"
	erin := queueview.Job{Namespace: "lab", Name: "erin-notebook", User: "erin", GPUs: 1, UserGPUs: "1", Phase: "Running", Rank: 3,
		Node: "gpu-1", Since: t0.Add(-time.Hour), InCapacity: true}
	s.Jobs = append(s.Jobs[:2], append([]queueview.Job{erin}, s.Jobs[2:]...)...)
	s.Users = append(s.Users, queueview.User{User: "erin", GPUsInUse: 1, RunningJobs: 1})
	s.SummarizeUtilization()
	return s
}

func TestUtilizationPage(t *testing.T) {
	doc := parse(t, do(newHandler(published(utilFixture())), "GET", "/").Body.String())
	cell := func(job string) map[string]any {
		tr := find(doc, func(e *html.Node) bool { v, _ := attr(e, "data-job"); return v == job })[0]
		td := find(tr, func(e *html.Node) bool { v, _ := attr(e, "data-label"); return v == "GPU util" })[0]
		var fills []string
		for _, f := range find(td, func(e *html.Node) bool { return hasClass(e, "ufill") }) {
			v, _ := attr(f, "class")
			fills = append(fills, v)
		}
		return map[string]any{"text": text(td), "fills": fills, "idle row": hasClass(tr, "idle"), "reclaimable row": hasClass(tr, "reclaimable"),
			"unknown": len(find(td, func(e *html.Node) bool { return hasClass(e, "unknown") }))}
	}
	users := map[string]string{}
	for _, li := range find(byID(doc, "users"), func(e *html.Node) bool { return e.Data == "li" }) {
		u, _ := attr(li, "data-user")
		if d := find(li, func(e *html.Node) bool { return hasClass(e, "user-util") }); len(d) == 1 {
			users[u] = text(d[0])
		}
	}
	nodes := map[string][]string{}
	for _, tr := range find(byID(doc, "nodes"), func(e *html.Node) bool { return e.Data == "tr" })[1:] {
		var cells []string
		for _, td := range find(tr, func(e *html.Node) bool { return e.Data == "td" }) {
			cells = append(cells, text(td))
		}
		nodes[cells[0]] = cells[5:7]
	}
	got := map[string]any{
		"alice": cell("lab/alice-train"), "bob": cell("lab/bob-big"), "erin": cell("lab/erin-notebook"), "carol": cell("lab/carol-sweep"),
		"users": users, "nodes": nodes,
	}
	want := map[string]any{
		"alice": map[string]any{"text": "87%", "fills": []string{"ufill w-87"}, "idle row": false, "reclaimable row": false, "unknown": 0},
		"bob": map[string]any{"text": "2% reclaimable · idle 1h40m", "fills": []string{"ufill w-2 low"}, "idle row": true,
			"reclaimable row": true, "unknown": 0},
		"erin":  map[string]any{"text": "unknown", "fills": []string(nil), "idle row": false, "reclaimable row": false, "unknown": 1},
		"carol": map[string]any{"text": "–", "fills": []string(nil), "idle row": false, "reclaimable row": false, "unknown": 0},
		"users": map[string]string{"alice": "GPU util 87%", "bob": "GPU util 2% 4 idle GPUs", "erin": "GPU util unknown"},
		// gpu-1: alice's 2 GPUs at 87% (erin's unmeasured GPU is not averaged); gpu-2: bob's 4 idle.
		"nodes": map[string][]string{"gpu-1": {"87%", "0"}, "gpu-2": {"2%", "4"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestUtilizationJSON(t *testing.T) {
	h := newHandler(published(utilFixture()))
	var q struct {
		Jobs []map[string]any `json:"jobs"`
	}
	var u struct {
		Users []map[string]any `json:"users"`
	}
	var n struct {
		Nodes []map[string]any `json:"nodes"`
	}
	for target, into := range map[string]any{"/api/v1/queue": &q, "/api/v1/users": &u, "/api/v1/nodes": &n} {
		if err := json.Unmarshal(do(h, "GET", target).Body.Bytes(), into); err != nil {
			t.Fatal(err)
		}
	}
	pick := func(m map[string]any, keys ...string) map[string]any {
		out := map[string]any{}
		for _, k := range keys {
			if v, ok := m[k]; ok {
				out[k] = v
			}
		}
		return out
	}
	got := map[string]any{
		"alice-train":   pick(q.Jobs[0], "utilization", "idleSince", "idle"),
		"bob-big":       pick(q.Jobs[1], "utilization", "idleSince", "idle"),
		"erin-notebook": pick(q.Jobs[2], "utilization", "idleSince", "idle"),
		"user bob":      pick(u.Users[0], "utilization", "measuredGPUs", "idleGPUs"),
		"user erin":     pick(u.Users[4], "utilization", "measuredGPUs", "idleGPUs"),
		"node gpu-1":    pick(n.Nodes[0], "utilization", "measuredGPUs", "idleGPUs"),
	}
	want := map[string]any{
		"alice-train": map[string]any{"utilization": map[string]any{"percent": 87.0, "memoryUsedMiB": 30000.0, "window": "5m",
			"measuredAt": "2026-03-02T09:59:30Z"}},
		"bob-big": map[string]any{"utilization": map[string]any{"percent": 2.0, "window": "5m", "measuredAt": "2026-03-02T09:59:30Z"},
			"idleSince": "2026-03-02T08:20:00Z", "idle": "Reclaimable"},
		"erin-notebook": map[string]any{}, // unknown: no utilization at all, never 0
		"user bob":      map[string]any{"utilization": 2.0, "measuredGPUs": 4.0, "idleGPUs": 4.0},
		"user erin":     map[string]any{"idleGPUs": 0.0},
		"node gpu-1":    map[string]any{"utilization": 87.0, "measuredGPUs": 2.0, "idleGPUs": 0.0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
