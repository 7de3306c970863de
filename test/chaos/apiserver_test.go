package chaos_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

// TestAPIServerRestart stops kube-apiserver under load (etcd keeps the state) and starts it again,
// then does the same with etcd behind a running kube-apiserver. The manager is not restarted: it
// must resume admitting by itself, the invariants hold, and every job succeeds.
func TestAPIServerRestart(t *testing.T) {
	e := newEnv(t, true)
	s := seed(t)
	for i := range 2 {
		e.createNode(fmt.Sprintf("gpu-%d", i), 4)
	}
	e.startKubelet(s)
	c := e.startChecker(checkerOptions{capacity: -1, policy: queue.PreemptFirstGPU})
	l := e.startLoad(c, s+1, envInt("CHAOS_API_JOBS", 60), 16)
	t.Cleanup(l.halt)
	m := e.startManager("manager", "--zap-log-level=debug")
	outage := time.Duration(envInt("CHAOS_OUTAGE_SECONDS", 5)) * time.Second

	figures := map[string]any{"outage_s": seconds(outage)}
	for _, part := range []struct {
		name        string
		stop, start func() error
	}{
		{"kube-apiserver", e.fw.StopAPIServer, e.fw.StartAPIServer},
		{"etcd", e.fw.StopEtcd, e.fw.StartEtcd},
	} {
		waitAdmissions(t, c, 8)
		c.hold()
		down := time.Now()
		t.Logf("%s: stopping %s", down.Format("15:04:05.000"), part.name)
		if err := part.stop(); framework.IsKilledOnStop(err) {
			t.Logf("%s did not stop within 2 s of SIGTERM: killed", part.name)
			figures[part.name+"KilledOnStop"] = true
		} else if err != nil {
			t.Fatalf("stopping %s: %v", part.name, err)
		}
		time.Sleep(outage) // the outage (load generation, not synchronisation)
		if err := part.start(); err != nil {
			t.Fatalf("starting %s: %v", part.name, err)
		}
		up := time.Now()
		t.Logf("%s: %s is up", up.Format("15:04:05.000"), part.name)
		// Pods that ran out their time during the outage end now, freeing GPUs for waiting jobs.
		resumed := firstAdmissionAfter(t, c, up)
		c.release()
		// How long the manager took once the API state called for an admission (the simulated
		// kubelet, a client too, needs to reconnect before it ends the pods that ran out their time).
		admissible, ok := c.firstAdmissibleAfter(up)
		if !ok || admissible.After(resumed) {
			admissible = resumed
		}
		t.Logf("%s down for %s; up again after %s; first admission %s after that, %s after the state called for one",
			part.name, outage, up.Sub(down).Round(time.Millisecond), resumed.Sub(up).Round(time.Millisecond), resumed.Sub(admissible).Round(time.Millisecond))
		figures[part.name+"Recovery_s"] = seconds(resumed.Sub(up))
		figures[part.name+"AdmissionLag_s"] = seconds(resumed.Sub(admissible))
		if !m.running() {
			t.Fatalf("the manager exited during the %s outage: %v\n%s", part.name, m.exit, m.logTail(30))
		}
	}

	final := e.allFinished(3 * time.Minute)
	for _, j := range final {
		if j.Status.Phase != "Succeeded" {
			t.Errorf("job %s ended %s: %s", j.Name, j.Status.Phase, j.Status.Message)
		}
	}
	if !m.running() {
		t.Errorf("the manager exited: %v", m.exit)
	}
	c.assertNone(t)
	for k, v := range c.stats() {
		figures[k] = v
	}
	figures["jobs"] = len(final)
	report(t, figures)
}
