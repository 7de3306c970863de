package simulate

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// TestResultFigures: the summaries of a small run, worked out by hand. Node n1 has 2 GPUs and no
// one is evicted: alice's a1 and a2 run 2h, a3 (her 3rd GPU at +10m) and bob's b1 (his 1st at
// +30m) wait until they end.
func TestResultFigures(t *testing.T) {
	set := observe.DefaultSettings()
	set.Preemption = queue.PreemptNever
	trace := []TraceJob{tj("a1", 0, "alice", 1, 2*time.Hour), tj("a2", time.Second, "alice", 1, 2*time.Hour),
		tj("b1", 30*time.Minute, "bob", 1, time.Hour), tj("a3", 10*time.Minute, "alice", 1, time.Hour)}
	r, err := Run(Config{Settings: set, Nodes: nodes(t, "n1 2")}, State{}, trace)
	if err != nil {
		t.Fatal(err)
	}
	a3 := 110*time.Minute + time.Second
	got := struct {
		FirstGPU, All WaitStats
		Ordinals      []OrdinalStats
		Users         []UserStats
		Used          float64
		Fairness      float64
		Points        int
		At1h          TimelinePoint
	}{r.FirstGPUWait, r.AllWait, r.Ordinals, r.Users, r.UsedGPUHours, r.Fairness, len(r.Timeline), r.Timeline[6]}
	want := got
	want.FirstGPU = WaitStats{Count: 2, P50: 0, P95: 90 * time.Minute, Max: 90 * time.Minute} // a1, b1
	want.All = WaitStats{Count: 4, P50: 0, P95: a3, Max: a3}
	want.Ordinals = []OrdinalStats{{1, WaitStats{2, 0, 90 * time.Minute, 90 * time.Minute}}, {2, WaitStats{1, 0, 0, 0}}, {3, WaitStats{1, a3, a3, a3}}}
	want.Users = []UserStats{{User: "alice", Jobs: 3, GPUHours: 5, Wait: WaitStats{3, 0, a3, a3}}, {User: "bob", Jobs: 1, GPUHours: 1, Wait: WaitStats{1, 90 * time.Minute, 90 * time.Minute, 90 * time.Minute}}}
	want.Used = 6
	// From +30m to +1h50m (9 samples) alice holds 2 GPUs and bob none, both waiting: J = 4/(2*4).
	want.Fairness = 0.5
	want.Points = 19 // every 10m from t0 to +3h; the run ends at +3h0m1s
	want.At1h = TimelinePoint{At: t0.Add(time.Hour), ByUser: map[string]int32{"alice": 2}, Busy: 2, Capacity: 2, Waiting: 2}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("figures (-want +got):\n%s", diff)
	}
	if u := r.Utilization; u < 0.999 || u > 1 {
		t.Errorf("utilisation %.4f, want 6 GPU-hours of 2 GPUs over 3h0m1s", u)
	}
}

func TestWaitsAndJain(t *testing.T) {
	s := func(n ...int) []time.Duration {
		var out []time.Duration
		for _, x := range n {
			out = append(out, time.Duration(x)*time.Minute)
		}
		return out
	}
	for _, tc := range []struct {
		waits []time.Duration
		want  WaitStats
	}{
		{nil, WaitStats{}},
		{s(5), WaitStats{1, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute}},
		{s(20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19), WaitStats{20, 10 * time.Minute, 19 * time.Minute, 20 * time.Minute}},
	} {
		if got := Waits(tc.waits); got != tc.want {
			t.Errorf("Waits(%v) = %+v, want %+v", tc.waits, got, tc.want)
		}
	}
	for _, tc := range []struct {
		x    []float64
		want float64
	}{{[]float64{3, 3, 3}, 1}, {[]float64{4, 0, 0, 0}, 0.25}, {[]float64{0, 0}, 1}, {[]float64{2, 1}, 0.9}} {
		if got := jain(tc.x); got < tc.want-1e-9 || got > tc.want+1e-9 {
			t.Errorf("jain(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
}
