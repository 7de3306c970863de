package chaos_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

// TestStatusBudget runs the manager with a client budget of 5 requests a second (--kube-api-qps=5
// --kube-api-burst=10) against a queue of many waiting jobs, so that every admission changes the
// position of dozens of jobs and the status writes can never keep up. The decision loop must stay
// live: jobs are admitted as soon as GPUs free up (positions may lag), every job succeeds, and
// the positions are exact once the queue is quiet.
func TestStatusBudget(t *testing.T) {
	e := newEnv(t, false)
	s := seed(t)
	for i := range 2 {
		e.createNode(fmt.Sprintf("gpu-%d", i), 4)
	}
	k := e.startKubelet(s)
	c := e.startChecker(checkerOptions{capacity: -1, policy: queue.PreemptFirstGPU, bound: 30 * time.Second, orderBound: time.Hour})
	m := e.startManager("manager", "--kube-api-qps=5", "--kube-api-burst=10")
	jobs := envInt("CHAOS_BUDGET_JOBS", 40)
	l := e.startLoad(c, s+1, jobs, jobs) // all of them at once: a long queue
	t.Cleanup(l.halt)
	start := time.Now()
	<-l.done
	final := e.allFinished(5 * time.Minute)
	drain := time.Since(start)
	for _, j := range final {
		if j.Status.Phase != "Succeeded" {
			t.Errorf("job %s ended %s: %s", j.Name, j.Status.Phase, j.Status.Message)
		}
	}
	// Quiet: a few long jobs wait behind running ones; their positions must converge exactly.
	k.paused.Store(true)
	for i := range 12 {
		e.create(job(fmt.Sprintf("quiet-%02d", i), []string{"hana", "hugo", "lea"}[i%3], 1, time.Second))
	}
	if err := c.quiet(2 * time.Minute); err != nil {
		t.Errorf("the queue did not converge once quiet: %v", err)
	}
	k.resume()
	e.allFinished(2 * time.Minute)
	if m.crashed() {
		t.Errorf("the manager exited: %v\n%s", m.exit, m.logTail(20))
	}
	c.assertNone(t)
	figures := c.stats()
	figures["jobs"] = len(final)
	figures["drain_s"] = seconds(drain)
	report(t, figures)
}

// TestWebhookHang points --notify-webhook at a server that accepts connections and never answers,
// under a load with preemptions: evictions and admissions go on, every job succeeds, and the
// manager still stops promptly on SIGTERM.
func TestWebhookHang(t *testing.T) {
	e := newEnv(t, false)
	s := seed(t)
	for i := range 2 {
		e.createNode(fmt.Sprintf("gpu-%d", i), 4)
	}
	e.startKubelet(s)
	var posts atomic.Int64
	block := make(chan struct{})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		select { // never answers while the test runs
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hook.Close)
	t.Cleanup(func() { close(block) })
	// The notifications' sent record lives in the operator's namespace.
	if err := e.c.Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: validation.DefaultNamespace}}); err != nil {
		t.Fatal(err)
	}
	c := e.startChecker(checkerOptions{capacity: -1, policy: queue.PreemptFirstGPU})
	m := e.startManager("manager", "--notify-webhook="+hook.URL+"/hook", "--notify-group-window=1s")
	l := e.startLoad(c, s+1, envInt("CHAOS_WEBHOOK_JOBS", 40), 16)
	t.Cleanup(l.halt)
	<-l.done
	final := e.allFinished(3 * time.Minute)
	var preemptions int32
	for _, j := range final {
		preemptions += j.Status.Preemptions
		if j.Status.Phase != "Succeeded" {
			t.Errorf("job %s ended %s: %s", j.Name, j.Status.Phase, j.Status.Message)
		}
	}
	if preemptions == 0 {
		t.Errorf("no preemption happened: the webhook was never called")
	} else if posts.Load() == 0 {
		t.Errorf("%d preemptions, but the webhook was never called", preemptions)
	}
	stopped, err := m.term(30 * time.Second)
	if err != nil {
		t.Error(err)
	}
	c.assertNone(t)
	figures := c.stats()
	figures["jobs"] = len(final)
	figures["preemptions"] = preemptions
	figures["webhookPostsHanging"] = posts.Load()
	figures["exitAfterSIGTERM_s"] = seconds(stopped)
	report(t, figures)
}
