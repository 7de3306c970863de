package simulate

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestGenerate: the default lab is about 20,000 jobs over 30 days, the same for a seed, with the
// documented mix; arrivals follow the day (fewer at night and at weekends).
func TestGenerate(t *testing.T) {
	p := DefaultLabParams()
	jobs, err := Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Generate(p)
	if diff := cmp.Diff(jobs, again); diff != "" {
		t.Fatalf("two traces of one seed differ:\n%s", diff)
	}
	p.Seed++
	other, _ := Generate(p)
	if cmp.Equal(jobs, other) {
		t.Error("two seeds gave the same trace")
	}
	if n := len(jobs); n < 19000 || n > 21000 {
		t.Errorf("%d jobs, want about 20,000", n)
	}
	var interactive, night, day, weekend, weekday, forgotten int
	gpus := map[int32]int{}
	users := map[string]int{}
	for i, j := range jobs {
		if i > 0 && j.Submit.Before(jobs[i-1].Submit) {
			t.Fatal("not in submission order")
		}
		if j.Submit.Before(p.Start) || !j.Submit.Before(p.Start.Add(30*24*time.Hour)) {
			t.Fatalf("%s submitted at %s, outside the 30 days", j.Name, j.Submit)
		}
		users[j.User]++
		if j.Interactive {
			interactive++
			if j.GPUs != 1 || j.Utilization == "" || j.Timeout != p.InteractiveTimeout {
				t.Fatalf("session %+v: want 1 GPU, a profile, the sessions' timeout", j)
			}
			if j.Cancel > 0 {
				forgotten++
			}
		} else {
			gpus[j.GPUs]++
			if j.Runtime <= 0 || j.Runtime > p.BatchMax || j.Checkpoint != p.Checkpoint {
				t.Fatalf("batch job %+v", j)
			}
		}
		switch h := j.Submit.Hour(); {
		case h < 6:
			night++
		case h >= 9 && h < 15:
			day++
		}
		if wd := j.Submit.Weekday(); wd == time.Saturday || wd == time.Sunday {
			weekend++
		} else {
			weekday++
		}
	}
	share := func(n, of int) float64 { return float64(n) / float64(of) }
	batch := len(jobs) - interactive
	checks := map[string]struct{ got, lo, hi float64 }{
		"interactive share":        {share(interactive, len(jobs)), 0.17, 0.23},
		"forgotten sessions":       {share(forgotten, interactive), 0.07, 0.13},
		"1-GPU batch jobs":         {share(gpus[1], batch), 0.69, 0.75},
		"8-GPU batch jobs":         {share(gpus[8], batch), 0.01, 0.03},
		"day hours over night":     {share(day, night), 4, 20},
		"weekend day over weekday": {share(weekend, 8) / share(weekday, 22), 0.3, 0.5},
	}
	for name, c := range checks {
		if c.got < c.lo || c.got > c.hi {
			t.Errorf("%s: %.3f, want %.2f-%.2f", name, c.got, c.lo, c.hi)
		}
	}
	if len(users) != p.Users || users["ada"] < 10*users["yan"] { // the 1st person submits 25 times as much as the 25th
		t.Errorf("users: %v, want %d of skewed activity", users, p.Users)
	}
}
