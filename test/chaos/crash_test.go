package chaos_test

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// TestCrashRecovery kills the manager with SIGKILL at random moments under a steady load with
// preemptions, restarting it each time: at a random time, right after it created a pod (mid-
// admission: the job's status not written yet), right after it wrote a victim's status back to
// Queued (mid-preemption: its pod not deleted yet), right after it deleted a victim's pod. The
// invariants hold throughout, every job succeeds in the end, no pod is created twice for one
// admission, and each job's status counts exactly the evictions it went through.
func TestCrashRecovery(t *testing.T) {
	e := newEnv(t, false)
	kills, jobs := envInt("CHAOS_KILLS", 20), envInt("CHAOS_JOBS", 100)
	s := seed(t)
	rng := rand.New(rand.NewSource(s))
	for i := range 3 {
		e.createNode(fmt.Sprintf("gpu-%d", i), 4)
	}
	k := e.startKubelet(s + 1)
	c := e.startChecker(checkerOptions{capacity: -1, policy: queue.PreemptFirstGPU})
	l := e.startLoad(c, s+2, jobs, 24)
	t.Cleanup(l.halt)

	var runs [][2]time.Time
	modes := map[string]int{}
	var midAdmission, midEviction int
	begin := time.Now()
	for i := 0; i < kills; i++ {
		m := e.startManager("manager")
		var trigger <-chan struct{}
		mode := []string{"random", "after-pod-create", "after-victim-status", "after-victim-delete"}[rng.Intn(4)]
		switch mode {
		case "random":
			trigger = chanAfter(time.Duration(300+rng.Intn(2700)) * time.Millisecond)
		case "after-pod-create":
			trigger = c.next("admission")
		case "after-victim-status":
			trigger = c.next("preempted")
		case "after-victim-delete":
			trigger = c.next("eviction")
		}
		select {
		case <-trigger:
		case <-time.After(3 * time.Second): // no such event now: a random moment after all
			mode = "timeout (" + mode + ")"
		case <-m.done:
			t.Fatalf("the manager exited by itself: %v\n%s", m.exit, m.logTail(30))
		}
		at := m.kill()
		modes[mode]++
		runs = append(runs, [2]time.Time{m.started, at})
		// What the kill interrupted, read from the state it left.
		if st, err := e.snapshot(e.ctx); err == nil {
			a, ev := interrupted(st)
			midAdmission += a
			midEviction += ev
		}
		time.Sleep(time.Duration(rng.Intn(300)) * time.Millisecond) // the manager is down
	}
	killPhase := time.Since(begin)
	m := e.startManager("manager")
	runs = append(runs, [2]time.Time{m.started, time.Now().Add(time.Hour)})
	t.Logf("%d kills in %s: %v; %d left an admission half-done, %d a preemption half-done", kills, killPhase.Round(time.Second), modes, midAdmission, midEviction)

	// Quiet: nothing finishes, so the queue must converge to the engine's exact answer.
	l.halt()
	k.paused.Store(true)
	if err := c.quiet(60 * time.Second); err != nil {
		t.Errorf("the queue did not converge once quiet: %v", err)
	}
	k.resume()
	final := e.allFinished(3 * time.Minute)
	if m.crashed() {
		t.Fatalf("the last manager exited: %v\n%s", m.exit, m.logTail(30))
	}

	created, stopped := c.history()
	var preemptions int32
	for _, j := range final {
		preemptions += j.Status.Preemptions
		if j.Status.Phase != v1alpha1.PhaseSucceeded {
			t.Errorf("job %s ended %s: %s", j.Name, j.Status.Phase, j.Status.Message)
		}
		if n := created[j.UID]; int32(n) != j.Status.Admissions {
			t.Errorf("job %s: %d pods were created, its status counts %d admissions", j.Name, n, j.Status.Admissions)
		}
		if n := stopped[j.UID]; int32(n) != j.Status.Preemptions {
			t.Errorf("job %s: %d of its pods were stopped, its status counts %d preemptions\n%s", j.Name, n, j.Status.Preemptions, e.describe(j.Name)+c.podTimeline(j.UID))
		}
	}
	c.assertNone(t)

	resume, censored := c.resumeTimes(runs)
	longest := time.Duration(0)
	if len(resume) > 0 {
		longest = slices.Max(resume)
	}
	figures := c.stats()
	figures["kills"] = kills
	figures["killModes"] = modes
	figures["killsMidAdmission"] = midAdmission
	figures["killsMidPreemption"] = midEviction
	figures["jobs"] = len(final)
	figures["preemptions"] = preemptions
	figures["restartsMeasured"] = len(resume)
	figures["restartsKilledBeforeAdmitting"] = censored
	figures["longestResume_s"] = seconds(longest)
	figures["killPhase_s"] = seconds(killPhase)
	report(t, figures)
}

func chanAfter(d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	time.AfterFunc(d, func() { close(ch) })
	return ch
}

// interrupted counts, in a state left by a killed manager, the admissions whose pod exists but
// whose status was not written, and the evictions whose status was written but whose pod was not
// deleted.
func interrupted(s *state) (admissions, evictions int) {
	jobs, _ := s.index()
	for _, js := range jobs {
		for _, p := range js.live {
			switch n := cluster.PodAdmission(p); {
			case n > js.job.Status.Admissions:
				admissions++
			case n == js.job.Status.Admissions && js.job.Status.Phase == v1alpha1.PhaseQueued:
				evictions++
			}
		}
	}
	return admissions, evictions
}
