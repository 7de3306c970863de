package dashboard_test

import (
	"context"
	"fmt"
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
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/dashboard"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

const timeout = 20 * time.Second

// rowsJS lists the shown rows of the jobs table: each job's namespace/name, "--cut--" for the
// capacity cut and "--cpu--" for the CPU-only header.
const rowsJS = `Array.from(document.querySelectorAll('#jobs tbody tr'))
	.filter(tr => !tr.hidden && !tr.classList.contains('empty'))
	.map(tr => tr.classList.contains('cut') ? '--cut--' : tr.classList.contains('section') ? '--cpu--' : tr.dataset.job)`

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
	podOf := func(name string) *corev1.Pod {
		var p corev1.Pod
		Eventually(func(g Gomega) {
			j, err := job(name)()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(j.Status.PodName).NotTo(BeEmpty())
			g.Expect(fw.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: j.Status.PodName}, &p)).To(Succeed())
		}, timeout).Should(Succeed())
		return &p
	}
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
		stop := fw.StartManager(controllers.Options{GPUCapacity: -1, MaxHeadWait: 30 * time.Minute, View: store})
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
