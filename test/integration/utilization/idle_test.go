package utilization_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/notify"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/utilization"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

const timeout = 20 * time.Second

// fakeSource serves the utilisation the test sets per pod (0-100); a pod without a value has no
// series (unknown). It counts its rounds.
type fakeSource struct {
	clk    *clocktesting.FakeClock
	mu     sync.Mutex
	util   map[utilization.PodKey]float64
	rounds int
}

func (s *fakeSource) set(ns, pod string, percent float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.util[utilization.PodKey{Namespace: ns, Name: pod}] = percent
}

func (s *fakeSource) unset(ns, pod string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.util, utilization.PodKey{Namespace: ns, Name: pod})
}

func (s *fakeSource) Collect(_ context.Context, window time.Duration) (map[utilization.PodKey]utilization.Sample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rounds++
	out := map[utilization.PodKey]utilization.Sample{}
	for k, p := range s.util {
		out[k] = utilization.Sample{Utilization: p / 100, MemoryUsedMiB: 1024, GPUs: 1, At: s.clk.Now()}
	}
	return out, nil
}

func (s *fakeSource) roundsDone() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rounds
}

var _ = Describe("GPU utilisation and the idle policy", func() {
	const interval = time.Minute
	var (
		ctx  = context.Background()
		ns   string
		stop func()
		clk  *clocktesting.FakeClock
		src  *fakeSource
	)
	// The lab's webhook (notifications): the JSON bodies it received.
	var (
		hookMu sync.Mutex
		hooked []notify.WebhookBody
	)
	hook := func(job string) []notify.WebhookBody {
		hookMu.Lock()
		defer hookMu.Unlock()
		var out []notify.WebhookBody
		for _, b := range hooked {
			if b.Job.Namespace == ns && b.Job.Name == job {
				out = append(out, b)
			}
		}
		return out
	}
	start := func(action observe.IdleAction) {
		clk = clocktesting.NewFakeClock(time.Now())
		src = &fakeSource{clk: clk, util: map[utilization.PodKey]float64{}}
		srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			var b notify.WebhookBody
			Expect(json.NewDecoder(r.Body).Decode(&b)).To(Succeed())
			hookMu.Lock()
			hooked = append(hooked, b)
			hookMu.Unlock()
		}))
		DeferCleanup(srv.Close)
		opNS := fw.NewNamespace(ctx)
		// Notifications on the real clock (the queue's is fake: the tests step it), to the lab's
		// webhook only; the idle policy's settings say what happens next.
		set := observe.IdleSettings{Threshold: 5, After: 5 * time.Minute, Grace: 3 * time.Minute, Action: action, Interval: interval}
		stop = fw.StartManagerWith(controllers.Options{
			GPUCapacity: -1, MaxHeadWait: 30 * time.Minute, Preemption: queue.PreemptFirstGPU, MinRuntime: time.Hour,
			Idle:        set,
			Utilization: src, Clock: clk,
		}, "0", func(mgr ctrl.Manager, opts *controllers.Options) {
			n, err := controllers.SetupNotifications(mgr, opNS, notify.Config{WebhookURL: srv.URL, GroupWindow: 100 * time.Millisecond, Log: GinkgoLogr},
				notify.DueSettings{Defaults: notify.Kinds, MaxAge: time.Hour, IdleThreshold: set.Threshold, IdleAction: string(set.Action),
					IdleAfter: set.After, IdleGrace: set.Grace})
			Expect(err).NotTo(HaveOccurred())
			opts.Notifications = n
		})
	}
	// tick lets one measuring interval pass, and waits for its round to be measured and decided.
	tick := func(n int) {
		for range n {
			Eventually(clk.HasWaiters, timeout).Should(BeTrue())
			before := src.roundsDone()
			clk.Step(interval)
			Eventually(src.roundsDone, timeout).Should(BeNumerically(">", before))
		}
	}
	create := func(name, user string, gpus int32) {
		Expect(fw.Client.Create(ctx, framework.Job(ns, name, user, gpus))).To(Succeed())
	}
	job := func(name string) func() (*cvlabv1alpha1.CvlabJob, error) { return fw.Get(ctx, ns, name) }
	get := func(name string) *cvlabv1alpha1.CvlabJob {
		j, err := job(name)()
		Expect(err).NotTo(HaveOccurred())
		return j
	}
	run := func(name string) string {
		pod := fw.StartPod(ctx, ns, name, timeout)
		Eventually(func() cvlabv1alpha1.JobPhase { return get(name).Status.Phase }, timeout).Should(Equal(cvlabv1alpha1.PhaseRunning))
		return pod
	}
	condition := func(name string) func() *metav1.Condition {
		return func() *metav1.Condition {
			return meta.FindStatusCondition(get(name).Status.Conditions, cvlabv1alpha1.ConditionGPUIdle)
		}
	}
	events := func(name, reason string) func() int {
		return func() int {
			var evs eventsv1.EventList
			Expect(fw.Client.List(ctx, &evs, client.InNamespace(ns))).To(Succeed())
			n := 0
			for _, e := range evs.Items {
				if e.Regarding.Name == name && e.Reason == reason {
					n++
				}
			}
			return n
		}
	}
	// Two 1-GPU jobs fill a 2-GPU node: bob's (his 1st GPU) idles, alice's works; alice's 2nd-GPU
	// job then waits. It ranks below bob's job, so it may not evict it but for its idle GPUs.
	setup := func(action observe.IdleAction) (bobPod string) {
		start(action)
		fw.CreateGPUNode(ctx, ns+"-n1", 2)
		create("alice-1", "alice", 1)
		alicePod := run("alice-1")
		create("bob-1", "bob", 1)
		bobPod = run("bob-1")
		src.set(ns, alicePod, 90)
		src.set(ns, bobPod, 0)
		return bobPod
	}

	BeforeEach(func() { ns = fw.NewNamespace(ctx) })
	AfterEach(func() {
		if stop != nil {
			stop()
			stop = nil
		}
		fw.Cleanup(ctx, ns)
	})

	It("warns, then lets a waiting 2nd-GPU job evict the idle job, and tells its owner", func() {
		bobPod := setup(observe.IdleReclaim)
		tick(1)
		Eventually(func(g Gomega) {
			st := get("bob-1").Status
			g.Expect(st.IdleSince).NotTo(BeNil())
			g.Expect(st.GPUUtilization).NotTo(BeNil())
			g.Expect(st.GPUUtilization.Percent).To(BeEquivalentTo(0))
			g.Expect(get("alice-1").Status.IdleSince).To(BeNil())
		}, timeout).Should(Succeed())
		Expect(condition("bob-1")()).To(BeNil())
		create("alice-2", "alice", 1)
		Eventually(func() cvlabv1alpha1.JobPhase { return get("alice-2").Status.Phase }, timeout).Should(Equal(cvlabv1alpha1.PhaseQueued))

		tick(5) // idle for --idle-after: the warning
		Eventually(condition("bob-1"), timeout).Should(PointTo(MatchFields(IgnoreExtras, Fields{
			"Status": Equal(metav1.ConditionTrue), "Reason": Equal(cvlabv1alpha1.ReasonIdle)})))
		Eventually(events("bob-1", cvlabv1alpha1.EventGPUIdle), timeout).Should(Equal(1))
		Consistently(func() cvlabv1alpha1.JobPhase { return get("bob-1").Status.Phase }, time.Second).Should(Equal(cvlabv1alpha1.PhaseRunning))
		By("its owner is told: since when, what happens when")
		idleSince := get("bob-1").Status.IdleSince.Time
		Eventually(func() []notify.WebhookBody { return hook("bob-1") }, timeout).Should(HaveLen(1))
		told := hook("bob-1")[0]
		Expect(told.Kind).To(Equal(notify.KindGPUIdle))
		Expect(told.IdleSince.Equal(idleSince)).To(BeTrue())
		Expect(told.NextAction).To(Equal("Reclaim"))
		Expect(told.NextAt.Equal(idleSince.Add(8*time.Minute))).To(BeTrue(), "reclaimable after --idle-after and --idle-grace")

		tick(3) // and for --idle-grace: reclaimable; alice-2 evicts it
		Eventually(func(g Gomega) {
			st := get("bob-1").Status
			g.Expect(st.Phase).To(Equal(cvlabv1alpha1.PhaseQueued))
			c := meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionPreempted)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Message).To(ContainSubstring("idle"))
			g.Expect(st.GPUUtilization).To(BeNil())
			g.Expect(st.IdleSince).To(BeNil())
		}, timeout).Should(Succeed())
		Eventually(events("bob-1", cvlabv1alpha1.EventGPUReclaimed), timeout).Should(Equal(1))
		Expect(events("bob-1", cvlabv1alpha1.EventGPUIdle)()).To(Equal(1), "one warning per idle period")
		By("its owner is told its GPUs were taken back, and by whom")
		Eventually(func() []notify.WebhookBody { return hook("bob-1") }, timeout).Should(HaveLen(2))
		told = hook("bob-1")[1]
		Expect(told.Kind).To(Equal(notify.KindPreempted))
		Expect(told.Reason).To(Equal(string(cvlabv1alpha1.EvictionIdleReclaimed)))
		Expect(told.Preemptor).To(PointTo(MatchFields(IgnoreExtras, Fields{"Namespace": Equal(ns), "Name": Equal("alice-2"), "User": Equal("alice")})))
		// Its pod goes; the GPU goes to alice-2, not back to bob-1, which ranks above it.
		fw.FinishDeletion(ctx, ns, bobPod)
		Eventually(func() cvlabv1alpha1.JobPhase { return get("alice-2").Status.Phase }, timeout).Should(Equal(cvlabv1alpha1.PhaseAdmitted))
		Expect(get("bob-1").Status.Phase).To(Equal(cvlabv1alpha1.PhaseQueued))
	})

	It("resets everything on activity", func() {
		bobPod := setup(observe.IdleReclaim)
		tick(6)
		Eventually(condition("bob-1"), timeout).Should(PointTo(MatchFields(IgnoreExtras, Fields{"Reason": Equal(cvlabv1alpha1.ReasonIdle)})))
		src.set(ns, bobPod, 50)
		tick(1)
		Eventually(func(g Gomega) {
			st := get("bob-1").Status
			g.Expect(st.IdleSince).To(BeNil())
			c := meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionGPUIdle)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(cvlabv1alpha1.ReasonActive))
		}, timeout).Should(Succeed())
		create("alice-2", "alice", 1)
		tick(4) // idle again for less than --idle-after: no eviction
		Consistently(func() cvlabv1alpha1.JobPhase { return get("bob-1").Status.Phase }, time.Second).Should(Equal(cvlabv1alpha1.PhaseRunning))
	})

	It("only warns with --idle-action=Warn", func() {
		setup(observe.IdleWarn)
		create("alice-2", "alice", 1)
		tick(12)
		Eventually(condition("bob-1"), timeout).Should(PointTo(MatchFields(IgnoreExtras, Fields{"Reason": Equal(cvlabv1alpha1.ReasonIdle)})))
		Consistently(func() cvlabv1alpha1.JobPhase { return get("bob-1").Status.Phase }, time.Second).Should(Equal(cvlabv1alpha1.PhaseRunning))
		Expect(get("alice-2").Status.Phase).To(Equal(cvlabv1alpha1.PhaseQueued))
	})

	It("stops and requeues the idle job with --idle-action=Suspend, holding it back, without writing its spec", func() {
		bobPod := setup(observe.IdleSuspend)
		gen := get("bob-1").Generation
		tick(9)
		Eventually(func(g Gomega) {
			st := get("bob-1").Status
			g.Expect(st.Phase).To(Equal(cvlabv1alpha1.PhaseQueued))
			c := meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionPreempted)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Message).To(ContainSubstring("suspended: its GPUs were idle"))
		}, timeout).Should(Succeed())
		Eventually(events("bob-1", cvlabv1alpha1.EventGPUReclaimed), timeout).Should(Equal(1))
		fw.FinishDeletion(ctx, ns, bobPod)
		Eventually(func() cvlabv1alpha1.WaitingReason { return get("bob-1").Status.WaitingReason }, timeout).Should(Equal(cvlabv1alpha1.WaitingBackingOff))
		Expect(get("bob-1").Generation).To(Equal(gen), "the operator never writes spec")
	})

	It("never acts on unknown data, and keeps the writes of a measured job bounded", func() {
		bobPod := setup(observe.IdleReclaim)
		src.unset(ns, bobPod)
		create("alice-2", "alice", 1)
		tick(1)
		wc, err := client.NewWithWatch(fw.Config, client.Options{Scheme: framework.Scheme})
		Expect(err).NotTo(HaveOccurred())
		w, err := wc.Watch(ctx, &cvlabv1alpha1.CvlabJobList{}, client.InNamespace(ns), client.MatchingFields{"metadata.name": "alice-1"},
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: get("alice-1").ResourceVersion}})
		Expect(err).NotTo(HaveOccurred())
		defer w.Stop()
		tick(20)
		Consistently(func() cvlabv1alpha1.JobPhase { return get("bob-1").Status.Phase }, time.Second).Should(Equal(cvlabv1alpha1.PhaseRunning))
		st := get("bob-1").Status
		Expect(st.IdleSince).To(BeNil())
		Expect(meta.FindStatusCondition(st.Conditions, cvlabv1alpha1.ConditionGPUIdle)).To(BeNil())
		// alice-1 works at a steady 90%: over 20 intervals its utilisation is rewritten only to
		// refresh it (every 10 intervals), plus the first write.
		writes := 0
		Consistently(func() int {
			for {
				select {
				case e := <-w.ResultChan():
					if e.Type == watch.Modified {
						writes++
					}
				default:
					return writes
				}
			}
		}, 2*time.Second).Should(BeNumerically("<=", 3))
	})
})
