package chaos_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// TestLeaderFailover runs two replicas with --leader-elect (default lease settings, or
// CHAOS_LEASE=duration,renew-deadline,retry-period such as 8s,6s,1s) under load, kills the leader
// with SIGKILL (the other takes over once the lease expires), starts a new replica as a Deployment
// would, then stops the new leader with SIGTERM (it hands the lease over at once:
// LeaderElectionReleaseOnCancel). The invariants hold throughout and every job succeeds.
func TestLeaderFailover(t *testing.T) {
	lease, renew, retry := 15*time.Second, 10*time.Second, 2*time.Second
	if v := os.Getenv("CHAOS_LEASE"); v != "" {
		var err error
		parts := strings.Split(v, ",")
		if len(parts) != 3 {
			t.Fatalf("CHAOS_LEASE=%q: want duration,renew-deadline,retry-period", v)
		}
		for i, d := range []*time.Duration{&lease, &renew, &retry} {
			if *d, err = time.ParseDuration(parts[i]); err != nil {
				t.Fatalf("CHAOS_LEASE: %v", err)
			}
		}
	}
	t.Logf("lease duration %s, renew deadline %s, retry period %s", lease, renew, retry)
	e := newEnv(t, false)
	s := seed(t)
	for i := range 2 {
		e.createNode(fmt.Sprintf("gpu-%d", i), 4)
	}
	e.startKubelet(s)
	// No decision is taken while no replica leads: up to a lease duration plus a retry.
	c := e.startChecker(checkerOptions{capacity: -1, policy: queue.PreemptFirstGPU, bound: lease + 25*time.Second})
	l := e.startLoad(c, s+1, envInt("CHAOS_HA_JOBS", 40), 16)
	t.Cleanup(l.halt)

	replica := func(name string) (*manager, string) {
		port := freePort(t)
		m := e.startManager(name, "--leader-elect", "--leader-election-namespace=default",
			"--dashboard-bind-address=127.0.0.1:"+port, "--leader-elect-lease-duration="+lease.String(),
			"--leader-elect-renew-deadline="+renew.String(), "--leader-elect-retry-period="+retry.String())
		return m, port
	}
	a, _ := replica("replica-a")
	select {
	case <-a.leader:
	case <-time.After(60 * time.Second):
		t.Fatalf("replica-a did not become leader:\n%s", a.logTail(20))
	}
	b, bPort := replica("replica-b")
	// The follower is up (its dashboard answers) and the leader keeps admitting.
	var followerDashboard int
	e.eventually(30*time.Second, func() error {
		resp, err := http.Get("http://127.0.0.1:" + bPort + "/api/v1/queue")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		followerDashboard = resp.StatusCode
		return nil
	}, "the follower's dashboard")
	t.Logf("the follower's dashboard answers %d", followerDashboard)
	waitAdmissions(t, c, 5)

	// 1. The leader is killed: the follower waits for the lease to expire.
	killedAt := a.kill()
	select {
	case <-b.leader:
	case <-time.After(60 * time.Second):
		t.Fatalf("replica-b did not take over:\n%s", b.logTail(20))
	}
	killTakeover := b.leaderAt.Sub(killedAt)
	killResume := firstAdmissionAfter(t, c, b.leaderAt).Sub(killedAt)
	t.Logf("SIGKILL of the leader: replica-b leads after %s, admits after %s", killTakeover.Round(time.Millisecond), killResume.Round(time.Millisecond))

	// 2. A new replica joins; the leader is stopped gracefully and hands the lease over.
	r, _ := replica("replica-c")
	waitAdmissions(t, c, 3)
	termAt := time.Now()
	exitTook, err := b.term(40 * time.Second)
	if err != nil {
		t.Error(err)
	}
	select {
	case <-r.leader:
	case <-time.After(60 * time.Second):
		t.Fatalf("replica-c did not take over:\n%s", r.logTail(20))
	}
	termTakeover := r.leaderAt.Sub(termAt)
	termResume := firstAdmissionAfter(t, c, r.leaderAt).Sub(termAt)
	t.Logf("SIGTERM of the leader: it exited in %s, replica-c leads after %s, admits after %s", exitTook.Round(time.Millisecond),
		termTakeover.Round(time.Millisecond), termResume.Round(time.Millisecond))

	final := e.allFinished(3 * time.Minute)
	for _, j := range final {
		if j.Status.Phase != "Succeeded" {
			t.Errorf("job %s ended %s: %s", j.Name, j.Status.Phase, j.Status.Message)
		}
	}
	if r.crashed() {
		t.Errorf("replica-c exited: %v\n%s", r.exit, r.logTail(20))
	}
	c.assertNone(t)
	figures := c.stats()
	figures["jobs"] = len(final)
	figures["failoverAfterSIGKILL_s"] = seconds(killTakeover)
	figures["admittingAfterSIGKILL_s"] = seconds(killResume)
	figures["failoverAfterSIGTERM_s"] = seconds(termTakeover)
	figures["admittingAfterSIGTERM_s"] = seconds(termResume)
	figures["leaderExitAfterSIGTERM_s"] = seconds(exitTook)
	figures["followerDashboardStatus"] = followerDashboard
	figures["lease"] = fmt.Sprintf("%s/%s/%s", lease, renew, retry)
	report(t, figures)
	// The other replica sees the lease expire a lease duration after it last saw it renewed, and
	// tries every retry period (with up to 120% jitter).
	if limit := lease + 2*retry*22/10 + time.Second; killTakeover > limit {
		t.Errorf("failover after SIGKILL took %s, more than the lease duration plus two retries (%s)", killTakeover, limit)
	}
	if termTakeover > 5*time.Second {
		t.Errorf("failover after SIGTERM took %s: the lease was not handed over", termTakeover)
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// waitAdmissions waits for n more pods of the queue to be created.
func waitAdmissions(t *testing.T, c *checker, n int) {
	t.Helper()
	for range n {
		select {
		case <-c.next("admission"):
		case <-time.After(60 * time.Second):
			t.Fatalf("no admission for 60 s")
		}
	}
}

// firstAdmissionAfter returns when the first pod created after t0 was seen, waiting for it.
func firstAdmissionAfter(t *testing.T, c *checker, t0 time.Time) time.Time {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for _, a := range c.admissions {
			if a.After(t0) {
				c.mu.Unlock()
				return a
			}
		}
		c.mu.Unlock()
		select {
		case <-c.next("admission"):
		case <-time.After(time.Second):
		}
	}
	t.Fatalf("no admission after %s", t0.Format("15:04:05.000"))
	return time.Time{}
}
