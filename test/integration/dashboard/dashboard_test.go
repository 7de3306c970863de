package dashboard_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"
	gtypes "github.com/onsi/gomega/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/dashboard"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
	"github.com/epfl-cvlab/cvlab-queue/internal/utilization"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

const timeout = 20 * time.Second

// rowsJS lists the shown rows of the jobs table: each job's namespace/name, "--cut--" for the
// capacity cut and "--cpu--" for the CPU-only header.
const rowsJS = `Array.from(document.querySelectorAll('#jobs tbody tr'))
	.filter(tr => !tr.hidden && !tr.classList.contains('empty'))
	.map(tr => tr.classList.contains('cut') ? '--cut--' : tr.classList.contains('section') ? '--cpu--' : tr.dataset.job)`

// utilJS maps each job row to its utilisation cell: "–", "unknown", or the percent, the bar's
// width class, and "idle" (with "reclaimable" and for how long once reclaimable) when marked.
const utilJS = `Object.fromEntries(Array.from(document.querySelectorAll('#jobs tr.job')).map(tr => {
	const td = tr.querySelector('td.util'), fill = td.querySelector('.ufill'), mark = td.querySelector('.idle-mark');
	if (!fill) return [tr.dataset.job, td.textContent.trim()];
	let s = td.querySelector('.upct').textContent + ' ' + Array.from(fill.classList).find(c => c.startsWith('w-'));
	if (mark) s += ' idle';
	if (mark && mark.classList.contains('reclaimable')) s += ' reclaimable ' + mark.textContent.trim().split('idle ').pop();
	return [tr.dataset.job, s];
}))`

// fakeGPUs is a fake GPU exporter: each running pod of a job in percent, in the namespace ns.
type fakeGPUs struct {
	ns      func() string
	percent map[string]float64
}

func (f fakeGPUs) Collect(ctx context.Context, _ time.Duration) (map[utilization.PodKey]utilization.Sample, error) {
	var pods corev1.PodList
	if err := fw.Client.List(ctx, &pods, client.InNamespace(f.ns())); err != nil {
		return nil, err
	}
	out := map[utilization.PodKey]utilization.Sample{}
	for _, p := range pods.Items {
		if u, ok := f.percent[p.Labels["cvlab.epfl.ch/job"]]; ok && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			out[utilization.PodKey{Namespace: p.Namespace, Name: p.Name}] = utilization.Sample{Utilization: u, MemoryUsedMiB: 1024, GPUs: 1, At: time.Now()}
		}
	}
	return out, nil
}

func phase(p cvlabv1alpha1.JobPhase) gtypes.GomegaMatcher {
	return PointTo(MatchFields(IgnoreExtras, Fields{"Status": MatchFields(IgnoreExtras, Fields{"Phase": Equal(p)})}))
}

// repoRoot is the repository's top directory.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

var _ = Describe("The queue dashboard in a browser", Ordered, func() {
	var (
		ctx     = context.Background()
		ns      string
		base    string // the dashboard's URL, ending in /
		browser context.Context
		victim  string // the job carol-sweep evicted
	)
	job := func(name string) func() (*cvlabv1alpha1.CvlabJob, error) { return fw.Get(ctx, ns, name) }
	create := func(name, user string, gpus int32) {
		Expect(fw.Client.Create(ctx, framework.Job(ns, name, user, gpus))).To(Succeed())
	}
	podOf := func(name string) *corev1.Pod { return fw.CurrentPod(ctx, ns, name, timeout) }
	// run plays the scheduler and the kubelet for a job's pod.
	run := func(name string) *corev1.Pod {
		p := podOf(name)
		fw.BindPod(ctx, ns, p.Name, p.Annotations[controllers.AnnotationNode])
		fw.SetPodPhase(ctx, ns, p.Name, corev1.PodRunning, "")
		Eventually(job(name), timeout).Should(phase(cvlabv1alpha1.PhaseRunning))
		return p
	}
	// expectedRows is the jobs table as the API server's objects say it must be: GPU jobs by
	// status.rank, the capacity cut after the last whose GPUs, with all ranked before it, fit in
	// the GPUs the queue may hand out (available), then the CPU-only jobs. With a user, the rows
	// of that user's jobs, the cut if one of them is a GPU job, the CPU header if one is not.
	expectedRows := func(available int32, user string) []string {
		var list cvlabv1alpha1.CvlabJobList
		Expect(fw.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		var gpu, cpu []cvlabv1alpha1.CvlabJob
		for _, j := range list.Items {
			switch {
			case j.Spec.GPUs > 0 && j.Status.Rank != nil:
				gpu = append(gpu, j)
			case j.Spec.GPUs == 0:
				cpu = append(cpu, j)
			}
		}
		slices.SortFunc(gpu, func(a, b cvlabv1alpha1.CvlabJob) int { return int(*a.Status.Rank - *b.Status.Rank) })
		mine := func(j cvlabv1alpha1.CvlabJob) bool { return user == "" || j.Spec.User == user }
		var rows []string
		var sum int32
		cut, gpuShown := false, false
		for _, j := range gpu {
			if sum += j.Spec.GPUs; sum > available && !cut {
				rows, cut = append(rows, "--cut--"), true
			}
			if mine(j) {
				rows, gpuShown = append(rows, ns+"/"+j.Name), true
			}
		}
		if !gpuShown {
			rows = slices.DeleteFunc(rows, func(r string) bool { return r == "--cut--" })
		}
		header := false
		for _, j := range cpu {
			if mine(j) {
				if !header {
					rows, header = append(rows, "--cpu--"), true
				}
				rows = append(rows, ns+"/"+j.Name)
			}
		}
		return rows
	}
	// expectedStats are capacity, used, free and foreign GPUs: 8 GPUs on two nodes, 1 held by
	// a foreign pod, the queue's jobs holding what their phases say.
	expectedStats := func() []string {
		var list cvlabv1alpha1.CvlabJobList
		Expect(fw.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		var used int32
		for _, j := range list.Items {
			if j.Status.Phase == cvlabv1alpha1.PhaseAdmitted || j.Status.Phase == cvlabv1alpha1.PhaseRunning {
				used += j.Spec.GPUs
			}
		}
		return []string{"8", fmt.Sprint(used), fmt.Sprint(max(8-1-used, 0)), "1"}
	}
	shownRows := func(tab context.Context) func() ([]string, error) {
		return func() ([]string, error) { return chromedp.Run(tab, chromedp.Evaluate[[]string](rowsJS)) }
	}
	newTab := func() context.Context {
		tab, cancel := chromedp.NewContext(browser)
		DeferCleanup(cancel)
		return tab
	}
	screenshot := func(tab context.Context, name string, docs bool) {
		png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
		Expect(err).NotTo(HaveOccurred())
		dir := filepath.Join(repoRoot(), "bench", "out", "screenshots")
		Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dir, name), png, 0o644)).To(Succeed())
		AddReportEntry("screenshot", filepath.Join(dir, name))
		// docs/dashboard.png is committed: refresh it only when asked, so that test runs leave
		// the work tree clean.
		if docsPNG := filepath.Join(repoRoot(), "docs", name); docs && (os.Getenv("UPDATE_DOCS_SCREENSHOT") != "" || !exists(docsPNG)) {
			Expect(os.WriteFile(docsPNG, png, 0o644)).To(Succeed())
		}
	}

	BeforeAll(func() {
		// Plain names, for a readable screenshot: the suite has its own control plane, and this
		// is its only container.
		ns = "cvlab"
		Expect(fw.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		DeferCleanup(func() { fw.Cleanup(ctx, ns) })
		fw.CreateGPUNode(ctx, "gpu-a", 4)
		fw.CreateGPUNode(ctx, "gpu-b", 4)
		fw.ForeignGPUPod(ctx, ns, "raw-notebook", "gpu-b", 1)

		By("running the operator with a view store, and the dashboard on a loopback port")
		store := &queueview.Store{}
		// The GPUs' utilisation comes from a fake exporter: alice-train busy, alice-eval and
		// bob-big idle (below 5%), the other jobs unmeasured. Warn only: nothing is reclaimed.
		stop := fw.StartManager(controllers.Options{GPUCapacity: -1, MaxHeadWait: 30 * time.Minute, View: store,
			Idle:        observe.IdleSettings{Threshold: 5, After: time.Hour, Grace: 30 * time.Minute, Action: observe.IdleWarn, Interval: 300 * time.Millisecond},
			Utilization: fakeGPUs{ns: func() string { return ns }, percent: map[string]float64{"alice-train": 0.87, "alice-eval": 0.01, "bob-big": 0.02}}})
		DeferCleanup(stop)
		srv := dashboard.NewServer("127.0.0.1:0", dashboard.New(store), GinkgoLogr)
		addr, err := srv.Listen()
		Expect(err).NotTo(HaveOccurred())
		srvCtx, stopSrv := context.WithCancel(ctx)
		served := make(chan error, 1)
		go func() { served <- srv.Start(srvCtx) }()
		DeferCleanup(func() { stopSrv(); Eventually(served, 10*time.Second).Should(Receive(BeNil())) })
		base = "http://" + addr.String() + "/"

		By("starting headless Chromium")
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(chromium),
			chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.UserDataDir(GinkgoT().TempDir()),
			chromedp.WindowSize(1280, 900),
		)...)
		DeferCleanup(cancelAlloc)
		var cancelBrowser context.CancelFunc
		browser, cancelBrowser = chromedp.NewContext(allocCtx, chromedp.WithLogf(GinkgoWriter.Printf), chromedp.WithErrorf(GinkgoWriter.Printf))
		DeferCleanup(cancelBrowser)
		Expect(chromedp.Do(browser)).To(Succeed()) // starts the browser, with no timeout

		By("filling the queue: running, starting, waiting and CPU-only jobs, and one preemption")
		create("alice-train", "alice", 2)
		run("alice-train")
		create("bob-big", "bob", 4)
		run("bob-big")
		create("alice-eval", "alice", 1)
		run("alice-eval")
		// carol's 1st GPU outranks the last GPU of a running job: the queue evicts it.
		create("carol-sweep", "carol", 1)
		var evicted corev1.Pod
		Eventually(func() bool {
			var pods corev1.PodList
			Expect(fw.Client.List(ctx, &pods, client.InNamespace(ns))).To(Succeed())
			for _, p := range pods.Items {
				if p.DeletionTimestamp != nil {
					evicted = p
					return true
				}
			}
			return false
		}, timeout).Should(BeTrue(), "no pod evicted for carol-sweep")
		victim = evicted.Labels["cvlab.epfl.ch/job"]
		fw.FinishDeletion(ctx, ns, evicted.Name)
		Eventually(job("carol-sweep"), timeout).Should(phase(cvlabv1alpha1.PhaseAdmitted))
		Eventually(job(victim), timeout).Should(phase(cvlabv1alpha1.PhaseQueued))
		create("bob-extra", "bob", 2)
		create("dave-cpu", "dave", 0)
		for _, name := range []string{"bob-extra", "dave-cpu"} {
			Eventually(job(name), timeout).Should(PointTo(MatchFields(IgnoreExtras, Fields{"Status": MatchFields(IgnoreExtras, Fields{"Phase": Not(BeEmpty())})})))
		}
	})

	AfterEach(func() {
		if !CurrentSpecReport().Failed() {
			return
		}
		var list cvlabv1alpha1.CvlabJobList
		Expect(fw.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
		for _, j := range list.Items {
			GinkgoWriter.Printf("job %s: %s rank=%v position=%v %q\n", j.Name, j.Status.Phase, deref(j.Status.Rank), deref(j.Status.QueuePosition), j.Status.Message)
		}
	})

	It("shows every job in fair-share order, the capacity cut, users, nodes and the preemption", func() {
		tab := newTab()
		Expect(chromedp.Do(tab, chromedp.Navigate(base))).To(Succeed())
		// 8 GPUs on two nodes, 1 held by a foreign pod: 7 for the queue.
		Eventually(func() []string {
			rows, _ := shownRows(tab)()
			return rows
		}, timeout, 200*time.Millisecond).Should(Equal(expectedRows(7, "")))
		rows, err := shownRows(tab)()
		Expect(err).NotTo(HaveOccurred())
		Expect(rows).To(ContainElement("--cut--"))

		Eventually(func() ([]string, error) {
			return chromedp.Run(tab, chromedp.Evaluate[[]string](
				`['capacity','used','free','foreign'].map(k => document.getElementById('stat-' + k).textContent)`))
		}, timeout, 200*time.Millisecond).Should(Equal(expectedStats()))
		users, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#users li')).map(li => li.dataset.user)`))
		Expect(err).NotTo(HaveOccurred())
		Expect(users).To(ConsistOf("alice", "bob", "carol")) // users of GPU jobs
		nodes, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll('#nodes tbody tr').length`))
		Expect(err).NotTo(HaveOccurred())
		Expect(nodes).To(Equal(2))
		preemption, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("#preemptions tbody tr")))
		Expect(err).NotTo(HaveOccurred())
		Expect(preemption).To(And(ContainSubstring(ns+"/carol-sweep"), ContainSubstring(ns+"/"+victim), ContainSubstring("outranks")))
		carol, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS(fmt.Sprintf(`tr[data-job="%s/carol-sweep"] td.phase`, ns))))
		Expect(err).NotTo(HaveOccurred())
		Expect(carol).To(Equal("Admitted"))
	})

	It("shows the waiting jobs' estimated starts, computed when served", func() {
		tab := newTab()
		Expect(chromedp.Do(tab, chromedp.Navigate(base))).To(Succeed())
		// No running job has a timeout: the waiting jobs (the job evicted for carol-sweep), which
		// need their GPUs, have no estimate, and say why.
		estimates := `Object.fromEntries(Array.from(document.querySelectorAll('#jobs tr.job.phase-queued'))
			.map(tr => { const e = tr.querySelector('td.msg .est'); return [tr.dataset.job, e ? e.textContent + ' | ' + e.title : ''] }))`
		Eventually(func() (map[string]string, error) {
			return chromedp.Run(tab, chromedp.Evaluate[map[string]string](estimates))
		}, timeout, 200*time.Millisecond).Should(And(
			HaveKey(ns+"/"+victim),
			HaveEach(MatchRegexp(`^est\. start unknown \| .+ (has|have) no timeout$`)),
		))
	})

	It("shows a job submitted through the API within 2 s, without a reload", func() {
		tab := newTab()
		Expect(chromedp.Do(tab, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#live.on")))).To(Succeed())
		Expect(chromedp.Do(tab, chromedp.Evaluate[chromedp.Void](`window.sameDocument = 42`))).To(Succeed())

		submitted := time.Now()
		create("alice-live", "alice", 1)
		within, cancel := context.WithTimeout(tab, 2*time.Second)
		defer cancel()
		Expect(chromedp.Do(within, chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-job="%s/alice-live"]`, ns))))).To(Succeed(),
			"the new job did not appear within 2 s")
		AddReportEntry("live update latency", time.Since(submitted).String())
		same, err := chromedp.Run(tab, chromedp.Evaluate[int](`window.sameDocument || 0`))
		Expect(err).NotTo(HaveOccurred())
		Expect(same).To(Equal(42), "the page was reloaded")
		Eventually(shownRows(tab), timeout, 200*time.Millisecond).Should(Equal(expectedRows(7, "")))
	})

	It("filters by user as you type, and server-side with ?user=", func() {
		tab := newTab()
		Expect(chromedp.Do(tab, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#live.on")))).To(Succeed())
		Expect(chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("user-filter"), "bob"))).To(Succeed())
		Eventually(shownRows(tab), 2*time.Second, 50*time.Millisecond).Should(Equal(expectedRows(7, "bob")))
		shownUsers := `Array.from(document.querySelectorAll('#users li')).filter(li => !li.hidden).map(li => li.dataset.user)`
		Expect(chromedp.Run(tab, chromedp.Evaluate[[]string](shownUsers))).To(Equal([]string{"bob"}))
		Eventually(func() (string, error) { return chromedp.Run(tab, chromedp.Location()) }, 2*time.Second).Should(HaveSuffix("/?user=bob"))
		Consistently(shownRows(tab), time.Second, 100*time.Millisecond).Should(Equal(expectedRows(7, "bob")),
			"the fragment fetched for the filter keeps it")

		By("opening ?user=alice directly")
		Expect(chromedp.Do(tab, chromedp.Navigate(base+"?user=alice"))).To(Succeed())
		Eventually(shownRows(tab), timeout, 100*time.Millisecond).Should(Equal(expectedRows(7, "alice")))
		Expect(chromedp.Run(tab, chromedp.Value(chromedp.ID("user-filter")))).To(Equal("alice"))
	})

	It("renders the queue with JavaScript off", func() {
		tab := newTab()
		_, err := chromedp.Call(tab, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		Expect(err).NotTo(HaveOccurred())
		for user, url := range map[string]string{"": base, "carol": base + "?user=carol"} {
			Expect(chromedp.Do(tab, chromedp.Navigate(url))).To(Succeed())
			nodes, err := chromedp.Run(tab, chromedp.Nodes(chromedp.CSSAll("#jobs tr.job")))
			Expect(err).NotTo(HaveOccurred())
			var names []string
			for _, n := range nodes {
				names = append(names, n.AttributeValue("data-job"))
			}
			var want []string
			for _, r := range expectedRows(7, user) {
				if r != "--cut--" && r != "--cpu--" {
					want = append(want, r)
				}
			}
			Expect(names).To(Equal(want), "rows of %s", url)
			// The script never ran: it would have shown the live indicator.
			live, err := chromedp.Run(tab, chromedp.Attributes(chromedp.ID("live")))
			Expect(err).NotTo(HaveOccurred())
			Expect(live).To(HaveKey("hidden"))
		}
	})

	It("shows the GPUs' utilisation: bars, idle marks, per user and per node", func() {
		tab := newTab()
		Expect(chromedp.Do(tab, chromedp.Navigate(base))).To(Succeed())
		// Each running GPU job measured by the fake exporter shows its percent and a bar; the idle
		// ones are marked; the others show a dash (not running) or "unknown", never 0.
		want := func() map[string]string {
			var list cvlabv1alpha1.CvlabJobList
			Expect(fw.Client.List(ctx, &list, client.InNamespace(ns))).To(Succeed())
			out := map[string]string{}
			for _, j := range list.Items {
				p, measured := map[string]string{"alice-train": "87% w-87", "alice-eval": "1% w-1 idle", "bob-big": "2% w-2 idle"}[j.Name]
				switch {
				case j.Spec.GPUs == 0 || j.Status.Phase != cvlabv1alpha1.PhaseRunning:
					out[ns+"/"+j.Name] = "–"
				case measured:
					out[ns+"/"+j.Name] = p
				default:
					out[ns+"/"+j.Name] = "unknown"
				}
			}
			return out
		}
		Eventually(func() (map[string]string, error) {
			return chromedp.Run(tab, chromedp.Evaluate[map[string]string](utilJS))
		}, timeout, 200*time.Millisecond).Should(Equal(want()))
		users, err := chromedp.Run(tab, chromedp.Evaluate[map[string]string](
			`Object.fromEntries(Array.from(document.querySelectorAll('#users li')).map(li => [li.dataset.user, (li.querySelector('.user-util') || {textContent: ''}).textContent.replace(/\s+/g, ' ').trim()]))`))
		Expect(err).NotTo(HaveOccurred())
		Expect(users).To(HaveKeyWithValue("alice", MatchRegexp(`^GPU util \d+% .*idle GPU`)))
		nodeUtil, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#nodes tbody td.util')).map(td => td.textContent.trim())`))
		Expect(err).NotTo(HaveOccurred())
		Expect(nodeUtil).To(HaveLen(2))
		Expect(nodeUtil).To(ContainElement(MatchRegexp(`^\d+%$`)))
		// The bars are sized by the stylesheet (the CSP allows no inline style).
		width, err := chromedp.Run(tab, chromedp.Evaluate[float64](
			`(() => { const f = document.querySelector('tr[data-job="`+ns+`/alice-train"] .ufill'); return f.getBoundingClientRect().width / f.parentElement.getBoundingClientRect().width })()`))
		Expect(err).NotTo(HaveOccurred())
		Expect(width).To(BeNumerically("~", 0.87, 0.02))
	})

	It("marks reclaimable jobs and unknown utilisation (a snapshot served as is)", func() {
		now := time.Now()
		idle := now.Add(-100 * time.Minute)
		snap := &queueview.Snapshot{Time: now, Capacity: 4, Used: 4, NodeAware: true,
			Jobs: []queueview.Job{
				{Namespace: "lab", Name: "nb", User: "bob", GPUs: 2, Phase: "Running", Rank: 1, Node: "n1", Since: now.Add(-5 * time.Hour), InCapacity: true,
					Utilization: &queueview.Utilization{Percent: 0, Window: "5m", MeasuredAt: now}, IdleSince: &idle, Idle: cvlabv1alpha1.ReasonReclaimable},
				{Namespace: "lab", Name: "x", User: "erin", GPUs: 2, Phase: "Running", Rank: 2, Node: "n1", Since: now.Add(-time.Hour), InCapacity: true},
			},
			Users: []queueview.User{{User: "bob", GPUsInUse: 2, RunningJobs: 1}, {User: "erin", GPUsInUse: 2, RunningJobs: 1}},
			Nodes: []queueview.Node{{Name: "n1", GPUs: 4, Used: 4}}}
		snap.SummarizeUtilization()
		store := &queueview.Store{}
		store.Publish(snap)
		srv := httptest.NewServer(dashboard.New(store))
		DeferCleanup(srv.Close)
		tab := newTab()
		Expect(chromedp.Do(tab, chromedp.Navigate(srv.URL+"/"))).To(Succeed())
		Eventually(func() (map[string]string, error) {
			return chromedp.Run(tab, chromedp.Evaluate[map[string]string](utilJS))
		}, timeout, 200*time.Millisecond).Should(Equal(map[string]string{"lab/nb": "0% w-0 idle reclaimable 1h40m", "lab/x": "unknown"}))
		users, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#users .user-util')).map(d => d.textContent.replace(/\s+/g, ' ').trim())`))
		Expect(err).NotTo(HaveOccurred())
		Expect(users).To(Equal([]string{"GPU util 0% 2 idle GPUs", "GPU util unknown"}))
	})

	It("fits a phone screen, and saves screenshots", func() {
		tab := newTab()
		Expect(chromedp.Do(tab, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS("#live.on")))).To(Succeed())
		Eventually(shownRows(tab), timeout, 200*time.Millisecond).Should(Equal(expectedRows(7, "")))
		screenshot(tab, "dashboard.png", true)

		Expect(chromedp.Do(tab, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateScale(2)), chromedp.Reload(),
			chromedp.WaitVisible(chromedp.CSS("#live.on")))).To(Succeed())
		overflow, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.documentElement.scrollWidth - document.documentElement.clientWidth`))
		Expect(err).NotTo(HaveOccurred())
		Expect(overflow).To(BeNumerically("<=", 0), "the page scrolls sideways on a phone")
		screenshot(tab, "dashboard-phone.png", false)
	})
})

func deref(p *int32) any {
	if p == nil {
		return nil
	}
	return *p
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
