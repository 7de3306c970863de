package dashboard

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/html"

	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

// TestEstimatedStart: the waiting jobs' estimated starts are computed when the dashboard serves,
// at most every few seconds, and shown in the JSON and on the page with their assumptions.
func TestEstimatedStart(t *testing.T) {
	now := t0.Add(5 * time.Second)
	at := now.Add(2*time.Hour + 10*time.Minute)
	calls := 0
	snap := fixture()
	snap.Estimate = func() map[string]queueview.Estimate {
		calls++
		return map[string]queueview.Estimate{
			"lab/alice-eval":  {At: at},
			"lab/carol-sweep": {Unknown: "lab/bob-big has no timeout"},
			"lab/bob-big":     {At: at}, // running: not shown
		}
	}
	store := published(snap)
	h := New(store, WithClock(func() time.Time { return now }), WithLocation(time.UTC))

	w := do(h, http.MethodGet, "/api/v1/queue")
	if w.Code != http.StatusOK {
		t.Fatalf("GET /api/v1/queue: %d %s", w.Code, w.Body)
	}
	var q QueueResponse
	if err := json.Unmarshal(w.Body.Bytes(), &q); err != nil {
		t.Fatal(err)
	}
	got := map[string]*queueview.Estimate{}
	for _, j := range q.Jobs {
		if j.EstimatedStart != nil {
			got[j.Name] = j.EstimatedStart
		}
	}
	want := map[string]*queueview.Estimate{"alice-eval": {At: at}, "carol-sweep": {Unknown: "lab/bob-big has no timeout"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("estimated starts in /api/v1/queue (-want +got):\n%s", diff)
	}
	if snap.Jobs[2].EstimatedStart != nil {
		t.Error("serving changed the published snapshot")
	}

	doc := parse(t, do(h, http.MethodGet, "/").Body.String())
	shown := map[string][2]string{}
	for _, tr := range find(doc, func(n *html.Node) bool { return hasClass(n, "job") }) {
		job, _ := attr(tr, "data-job")
		for _, est := range find(tr, func(n *html.Node) bool { return hasClass(n, "est") }) {
			title, _ := attr(est, "title")
			shown[job] = [2]string{text(est), title}
		}
	}
	wantShown := map[string][2]string{
		"lab/alice-eval":  {"est. start 12:10 (in 2h10m)", queueview.EstimateAssumption},
		"lab/carol-sweep": {"est. start unknown", "lab/bob-big has no timeout"},
	}
	if diff := cmp.Diff(wantShown, shown); diff != "" {
		t.Errorf("estimated starts on the page (-want +got):\n%s", diff)
	}
	if calls != 1 {
		t.Errorf("estimated %d times for two reads within %s, want once", calls, estimateMaxAge)
	}
	next := fixture()
	next.Estimate = snap.Estimate
	store.Publish(next) // a new decision: the estimates stay for a while
	do(h, http.MethodGet, "/fragment")
	if calls != 1 {
		t.Errorf("estimated %d times for two decisions within %s, want once", calls, estimateMaxAge)
	}
	now = now.Add(estimateMaxAge)
	do(h, http.MethodGet, "/fragment")
	if calls != 2 {
		t.Errorf("estimated %d times after %s, want twice", calls, estimateMaxAge)
	}
	store.Publish(fixture()) // no estimates
	doc = parse(t, do(h, http.MethodGet, "/fragment").Body.String())
	if n := len(find(doc, func(n *html.Node) bool { return hasClass(n, "est") })); n != 0 {
		t.Errorf("%d estimates shown for a snapshot without any", n)
	}
}
