package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/simulate"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

// The plugin is built and run as a process, the way people run it, against a real API server
// with the operator deciding.
func TestCLI(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Skip("KUBEBUILDER_ASSETS is not set: run with `make test`, which builds the control plane into bin/k8s/")
	}
	if testing.Short() {
		t.Skip("integration test")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "kubectl cvlab against envtest")
}

const timeout = 20 * time.Second

// options are the operator's settings in this test: published in the operator's default
// namespace, with a --min-runtime that is not the default, which `kubectl cvlab` must learn from
// the cluster alone.
var options = controllers.Options{GPUCapacity: -1, MaxHeadWait: 30 * time.Minute, Preemption: queue.PreemptFirstGPU,
	MinRuntime: 15 * time.Minute, PublishNamespace: validation.DefaultNamespace}

// What `why` says of a waiting job: its position, rank and reason.
var (
	rePosition = regexp.MustCompile(`is waiting: position (\d+) of \d+ in the queue\.`)
	reRank     = regexp.MustCompile(`(?m)^Rank (\d+) of \d+:`)
	reReason   = regexp.MustCompile(`(?m)^Why it waits: (.*?)(?:: that job is first in line.*|\.)$`)
)

// explained is a waiting job as `why` explains it.
func explained(out string) (rank, position int32, reason string) {
	GinkgoHelper()
	m := rePosition.FindStringSubmatch(out)
	Expect(m).NotTo(BeNil(), "no position in:\n%s", out)
	p, _ := strconv.Atoi(m[1])
	m = reRank.FindStringSubmatch(out)
	Expect(m).NotTo(BeNil(), "no rank in:\n%s", out)
	r, _ := strconv.Atoi(m[1])
	m = reReason.FindStringSubmatch(out)
	Expect(m).NotTo(BeNil(), "no reason in:\n%s", out)
	return int32(r), int32(p), m[1]
}

// expectWhyAgrees: what `why` says of a waiting job is what the operator wrote in its status.
func expectWhyAgrees(j *cvlabv1alpha1.CvlabJob, out string) {
	GinkgoHelper()
	rank, position, reason := explained(out)
	Expect(j.Status.Rank).To(HaveValue(Equal(rank)), j.Name)
	Expect(j.Status.QueuePosition).To(HaveValue(Equal(position)), j.Name)
	Expect(j.Status.Message).To(HavePrefix("waiting: "+reason+";"), j.Name)
}

// result is one run of the plugin.
type result struct {
	out, err string
	code     int
}

var _ = Describe("kubectl cvlab", Ordered, func() {
	var (
		ctx     = context.Background()
		env     *envtest.Environment
		fw      *framework.Framework
		stopMgr func()
		dir     string
		bin     string
		home    string
		admin   string // kubeconfig of a cluster admin
		ns      string
		empty   string // an empty config file
	)

	// cvlab runs the plugin with a kubeconfig, a HOME and a config file of its own.
	cvlabAs := func(kubeconfig string, args ...string) result {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			Fail("running kubectl-cvlab: " + err.Error())
		}
		return result{out: out.String(), err: errOut.String(), code: cmd.ProcessState.ExitCode()}
	}
	cvlab := func(args ...string) result { return cvlabAs(admin, args...) }
	ok := func(args ...string) string {
		GinkgoHelper()
		r := cvlab(args...)
		Expect(r.code).To(Equal(0), "kubectl cvlab %v: %s", args, r.err)
		return r.out
	}
	node := func(base string) string { return ns + "-" + base }
	job := func(name string) func() (*cvlabv1alpha1.CvlabJob, error) { return fw.Get(ctx, ns, name) }
	// run plays the scheduler and the kubelet for a job the queue admitted.
	run := func(name string) {
		GinkgoHelper()
		fw.StartPod(ctx, ns, name, timeout)
		Eventually(func() (cvlabv1alpha1.JobPhase, error) {
			j, err := job(name)()
			return j.Status.Phase, err
		}, timeout).Should(Equal(cvlabv1alpha1.PhaseRunning))
	}
	// table reads the queue table: each row's JOB and POS, "--cut--" for the capacity cut, and
	// the lines after the table.
	table := func(out string) (rows []string, after []string) {
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		Expect(lines[0]).To(HavePrefix("RANK   POS   USER"))
		columns := len(strings.Fields(lines[0]))
		i := 1
		for ; i < len(lines) && lines[i] != ""; i++ {
			if strings.HasPrefix(lines[i], "--------") {
				rows = append(rows, "--cut--")
				continue
			}
			f := strings.Fields(lines[i])
			pos := f[1]
			if len(f) == columns-1 { // no POS
				pos = "-"
				f = append(f[:1], append([]string{"-"}, f[1:]...)...)
			}
			rows = append(rows, f[3]+" pos="+pos)
		}
		return rows, lines[i+1:]
	}

	BeforeAll(func() {
		ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.Level(zapcore.ErrorLevel)))
		dir = GinkgoT().TempDir()
		bin = filepath.Join(dir, "kubectl-cvlab")
		build := exec.Command("go", "build", "-o", bin, ".")
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "go build: %s", out)

		env = &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
		cfg, err := env.Start()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(env.Stop()).To(Succeed()) })
		cfg.QPS, cfg.Burst = 1000, 2000
		c, err := client.New(cfg, client.Options{Scheme: framework.Scheme})
		Expect(err).NotTo(HaveOccurred())
		fw = &framework.Framework{Config: cfg, Client: c}

		writeKubeconfig := func(name string, groups ...string) string {
			u, err := env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
			Expect(err).NotTo(HaveOccurred())
			data, err := u.KubeConfig()
			Expect(err).NotTo(HaveOccurred())
			path := filepath.Join(dir, name+".kubeconfig")
			Expect(os.WriteFile(path, data, 0o600)).To(Succeed())
			return path
		}
		admin = writeKubeconfig("admin", "system:masters")

		ns = fw.NewNamespace(ctx)
		home = filepath.Join(dir, "home")
		Expect(os.MkdirAll(filepath.Join(home, ".config", "cvlab"), 0o755)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(home, ".config", "cvlab", "config.yaml"), []byte(`# alice's defaults
user: alice
namespace: `+ns+`
image: ic-registry.epfl.ch/cvlab/lis/lab-base:gpu
data:
- {claimName: pv-cvlabdata2, mountPath: /cvlabdata2}
clusterUser: {name: alice, uid: 123456, groupName: cvlab, gid: 11166}
`), 0o644)).To(Succeed())

		empty = filepath.Join(dir, "empty.yaml")
		Expect(os.WriteFile(empty, nil, 0o644)).To(Succeed())

		fw.CreateGPUNode(ctx, node("n1"), 4)
		fw.CreateGPUNode(ctx, node("n2"), 3)
		fw.ForeignGPUPod(ctx, ns, "raw-1", node("n2"), 1)
		// The operator's namespace, where it publishes its settings.
		Expect(fw.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: validation.DefaultNamespace}})).To(Succeed())
		stopMgr = fw.StartManager(options)
		DeferCleanup(func() {
			if stopMgr != nil {
				stopMgr()
			}
		})
	})

	It("prints a clean manifest with --dry-run=client -o yaml, which the cluster accepts as is", func() {
		out := ok("submit", "train", "--gpus", "2", "--priority", "3", "--data", "pv-cvlabdata1:/cvlabdata1:ro", "--port", "8888",
			"--env", "PYTHONUNBUFFERED=1", "--timeout", "4h", "--dry-run=client", "-o", "yaml", "--", "python", "train.py", "--lr", "3e-4")
		var top map[string]any
		Expect(yaml.Unmarshal([]byte(out), &top)).To(Succeed())
		Expect(top).To(HaveLen(4))
		Expect(top).To(HaveKey("apiVersion"))
		Expect(top).To(HaveKey("kind"))
		Expect(top).To(HaveKey("metadata"))
		Expect(top).To(HaveKey("spec"))
		Expect(top["metadata"]).To(Equal(map[string]any{"name": "train", "namespace": ns}))
		Expect(top["spec"]).To(HaveKeyWithValue("timeout", "4h"))

		var j cvlabv1alpha1.CvlabJob
		Expect(yaml.UnmarshalStrict([]byte(out), &j)).To(Succeed())
		Expect(j.Spec).To(Equal(cvlabv1alpha1.CvlabJobSpec{
			User: "alice", Priority: 3, Image: "ic-registry.epfl.ch/cvlab/lis/lab-base:gpu", GPUs: 2,
			Command: []string{"python", "train.py", "--lr", "3e-4"},
			Env:     []corev1.EnvVar{{Name: "PYTHONUNBUFFERED", Value: "1"}},
			Cvlabdata: []cvlabv1alpha1.CvlabdataMount{{ClaimName: "pv-cvlabdata2", MountPath: "/cvlabdata2"},
				{ClaimName: "pv-cvlabdata1", MountPath: "/cvlabdata1", ReadOnly: true}},
			ClusterUser: &cvlabv1alpha1.ClusterUser{Name: "alice", UID: 123456, GroupName: "cvlab", GID: 11166},
			Ports:       []corev1.ContainerPort{{ContainerPort: 8888}},
			Timeout:     j.Spec.Timeout,
		}))
		Expect(j.Spec.Timeout.Duration).To(Equal(4 * time.Hour))

		_, err := job("train")()
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "a client dry run creates nothing")
		Expect(fw.Client.Create(ctx, &j, client.DryRunAll)).To(Succeed(), "the API server accepts the manifest")
	})

	It("submits jobs that the operator queues, and shows the queue in the operator's order with the capacity cut", func() {
		Expect(ok("submit", "alice-a", "--gpus", "4", "--timeout", "2h", "--", "python", "train.py")).To(Equal(
			"cvlabjob \"alice-a\" submitted to namespace \"" + ns + "\": alice, 4 GPUs.\nSee its place: kubectl cvlab why alice-a\n"))
		run("alice-a")
		ok("submit", "bob-b", "--user", "bob", "--gpus", "2", "--cluster-user", "bob:123457:cvlab:11166", "--", "sleep", "infinity")
		run("bob-b")
		ok("submit", "carol-c", "--user", "carol", "--gpus", "1", "--", "python", "eval.py")
		ok("submit", "alice-d", "--gpus", "2", "--", "python", "train.py", "--big")
		ok("submit", "bob-e", "--user", "bob", "--gpus", "1", "--", "python", "eval.py")

		// The operator's own answer, in status.
		Eventually(func(g Gomega) {
			for name, pos := range map[string]int32{"carol-c": 1, "bob-e": 2, "alice-d": 3} {
				j, err := job(name)()
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(j.Status.QueuePosition).To(HaveValue(Equal(pos)), name)
			}
		}, timeout).Should(Succeed())

		// The CLI's, computed by the engine from jobs, pods and nodes: the same order, the cut
		// after the 6 GPUs left by the foreign pod, and no note of a disagreement.
		Eventually(func(g Gomega) {
			rows, after := table(ok("queue"))
			g.Expect(rows).To(Equal([]string{"carol-c pos=1", "bob-b pos=-", "bob-e pos=2", "--cut--", "alice-a pos=-", "alice-d pos=3"}))
			g.Expect(after).To(Equal([]string{"capacity 7 GPUs, 7 used (1 by other pods), 3 jobs waiting for 4 GPUs"}))
		}, timeout).Should(Succeed())

		// Rank for rank and position for position, the operator's status.
		var report struct {
			Jobs []struct {
				Name     string `json:"name"`
				Rank     int32  `json:"rank"`
				Position int32  `json:"position"`
			} `json:"jobs"`
		}
		Expect(json.Unmarshal([]byte(ok("queue", "-o", "json")), &report)).To(Succeed())
		Expect(report.Jobs).To(HaveLen(5))
		for _, r := range report.Jobs {
			j, err := job(r.Name)()
			Expect(err).NotTo(HaveOccurred())
			Expect(j.Status.Rank).To(HaveValue(Equal(r.Rank)), r.Name)
			if r.Position > 0 {
				Expect(j.Status.QueuePosition).To(HaveValue(Equal(r.Position)), r.Name)
			} else {
				Expect(j.Status.QueuePosition).To(BeNil(), r.Name)
			}
		}

		rows, _ := table(ok("queue", "--user", "bob"))
		Expect(rows).To(Equal([]string{"bob-b pos=-", "bob-e pos=2", "--cut--"}))
		Expect(ok("queue", "-A")).To(ContainSubstring(ns + "/carol-c"))
	})

	It("explains why a job waits: its rank and the rule, GPUs free against needed, preemption", func() {
		out := ok("why", "carol-c")
		for _, l := range []string{
			ns + "/carol-c (carol, 1 GPU, priority 0) is waiting: position 1 of 3 in the queue.",
			"Rank 1 of 5: it is on carol's 1st GPU.",
			"Why it waits: 0 GPUs free, needs 1.",
			"  Nodes: " + node("n1") + " 0 of 4 free, " + node("n2") + " 0 of 3 free (1 used by other pods).",
			"  - 1 more GPU free on one node (" + node("n1") + " or " + node("n2") + ").",
			"Preemption (--preemption=FirstGPU): it may evict " + ns + "/alice-a (rank 4, alice's 1st-4th GPUs) on node " + node("n1"),
			"once that job has run --min-runtime (15m).", // the operator's, as it publishes it
			"Operator's status: waiting: 0 GPUs free, needs 1; next in line; 1 GPU",
		} {
			Expect(out).To(ContainSubstring(l))
		}
		out = ok("why", "alice-d")
		for _, l := range []string{
			"Rank 5 of 5: it is on your 5th-6th GPUs (a 2-GPU job ranks by its last GPU, the 6th).",
			"  4 jobs rank above it: 3 on others' 1st/2nd/3rd GPUs, 1 of your own jobs (higher priority or submitted earlier: " + ns + "/alice-a).",
			"Why it waits: 0 GPUs free, needs 2.",
			"it cannot evict anyone: only a job on its user's 1st GPU may, and this one is on your 5th-6th GPUs.",
			"Estimated start: ",
		} {
			Expect(out).To(ContainSubstring(l))
		}
		out = ok("why", "alice-a")
		Expect(out).To(ContainSubstring(ns + "/alice-a is running on node " + node("n1")))
		Expect(out).To(ContainSubstring("Timeout 2h: it is stopped at "))
		Expect(out).To(ContainSubstring("It ranks beyond the capacity cut: with the jobs ranked above it, 8 GPUs are wanted and the queue can hold 6."))
		Expect(out).NotTo(ContainSubstring("Note:"))
		out = ok("why", "alice-d", "--preemption=Never")
		// alice-a (2h timeout, the only job with one) makes room when it ends.
		Expect(out).To(ContainSubstring("Estimated start: in about 2h ("))
		Expect(out).To(ContainSubstring("Note: the config's cluster section or flags override the operator's published settings: using " +
			"--preemption=Never --min-runtime=15m --max-head-wait=30m (the operator runs --preemption=FirstGPU --min-runtime=15m --max-head-wait=30m)"))
	})

	It("simulates from the cluster's queue, under the operator's published settings", func() {
		r := cvlab("simulate", "--from-cluster", "-o", "json")
		Expect(r.code).To(Equal(0), r.err)
		var results []simulate.Result
		Expect(json.Unmarshal([]byte(r.out), &results)).To(Succeed(), r.out)
		Expect(results).To(HaveLen(1))
		Expect(results[0].Settings).To(HaveKeyWithValue("min-runtime", "15m0s")) // the operator's, as it publishes it
		starts := map[string]*time.Time{}
		for _, o := range results[0].Jobs {
			if o.Namespace == ns {
				starts[o.Name] = o.Start
			}
		}
		Expect(starts).To(HaveLen(5))
		// carol-c (1st GPU) evicts alice-a once it has run --min-runtime, and starts once its
		// pod is gone (its grace period), as why estimates it.
		alice, err := job("alice-a")()
		Expect(err).NotTo(HaveOccurred())
		Expect(starts["carol-c"]).To(HaveValue(BeTemporally("~", alice.Status.StartTime.Add(15*time.Minute+60*time.Second), time.Second)))
	})

	It("decides with the operator's published settings: with an empty config, why says what the operator wrote in status", func() {
		for _, name := range []string{"carol-c", "bob-e", "alice-d"} {
			out := ok("why", name, "--config", empty, "-n", ns)
			j, err := job(name)()
			Expect(err).NotTo(HaveOccurred())
			expectWhyAgrees(j, out)
			Expect(out).NotTo(ContainSubstring("Note:"), name)
		}
		Expect(ok("why", "carol-c", "--config", empty, "-n", ns)).To(ContainSubstring("once that job has run --min-runtime (15m)."))

		// Without the operator's ConfigMap: its defaults, and a note saying why.
		out := ok("why", "carol-c", "--config", empty, "-n", ns, "--operator-namespace", "nowhere")
		Expect(out).To(ContainSubstring("once that job has run --min-runtime (10m)."))
		Expect(out).To(ContainSubstring("Note: the operator's settings could not be read (ConfigMap nowhere/cvlab-queue-settings not found: " +
			"the operator predates published settings, or runs in another namespace (see --operator-namespace)): using the operator's defaults, " +
			"--preemption=FirstGPU --min-runtime=10m --max-head-wait=30m"))
	})

	It("shows who uses how many GPUs", func() {
		// Nothing measures the GPUs here (no --dcgm-exporter-*, --prometheus-url): running jobs'
		// utilisation is unknown (?), never 0.
		Expect(ok("top")).To(Equal(`USER           GPUS IN USE   JOBS RUNNING   GPUS WAITING   JOBS WAITING   UTIL   IDLE GPUS
alice          4             1              2              1              ?      0
bob            2             1              1              1              ?      0
carol          0             0              1              1              -      0
(other pods)   1             -              -              -              -      -
TOTAL          7             2              4              3              ?      0

7 GPUs in use of 7 (0 free)
`))
	})

	It("completes job names and works as a kubectl plugin", func() {
		out := ok("__complete", "why", "")
		Expect(strings.Split(out, "\n")[:5]).To(Equal([]string{"alice-a", "alice-d", "bob-b", "bob-e", "carol-c"}))
		Expect(ok("__complete", "cancel", "bob-b", "bob")).To(HavePrefix("bob-e\n:4\n"))
		Expect(ok("completion", "bash")).To(ContainSubstring("__start_kubectl-cvlab"))

		kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
		if _, err := os.Stat(kubectl); err != nil {
			Skip("no kubectl next to the control plane")
		}
		cmd := exec.Command(kubectl, "cvlab", "queue")
		cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+admin, "HOME="+home,
			"XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
		out2, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "%s", out2)
		Expect(string(out2)).To(ContainSubstring("capacity 7 GPUs"))
	})

	It("refuses with clear errors", func() {
		r := cvlab("why", "nope")
		Expect(r.code).To(Equal(1))
		Expect(r.err).To(Equal("error: cvlabjob \"nope\" not found in namespace \"" + ns + "\"\n"))
		r = cvlab("cancel", "nope")
		Expect(r.code).To(Equal(1))
		Expect(r.err).To(Equal("error: cvlabjob \"nope\" not found in namespace \"" + ns + "\"\n"))
		r = cvlab("logs", "carol-c")
		Expect(r.code).To(Equal(1))
		Expect(r.err).To(Equal("error: cvlabjob \"carol-c\" has no pod yet (Queued, position 1): see kubectl cvlab why carol-c\n"))
		r = cvlab("submit", "carol-c", "--user", "carol", "--gpus", "1")
		Expect(r.code).To(Equal(1))
		Expect(r.err).To(ContainSubstring("cvlabjob \"carol-c\" already exists in namespace \"" + ns + "\""))
		r = cvlab("submit", "x", "--gpus", "65", "--data", "pv:rel")
		Expect(r.code).To(Equal(1))
		Expect(r.err).To(ContainSubstring("--gpus must be between 0 and 64, not 65"))
		Expect(r.err).To(ContainSubstring(`the mount path "rel" must be absolute`))

		u, err := env.AddUser(envtest.User{Name: "mallory"}, nil)
		Expect(err).NotTo(HaveOccurred())
		data, err := u.KubeConfig()
		Expect(err).NotTo(HaveOccurred())
		nobody := filepath.Join(dir, "mallory.kubeconfig")
		Expect(os.WriteFile(nobody, data, 0o600)).To(Succeed())
		r = cvlabAs(nobody, "queue")
		Expect(r.code).To(Equal(1))
		Expect(r.err).To(HavePrefix(`error: not allowed: User "mallory" cannot list resource "cvlabjobs" in API group "cvlab.epfl.ch" at the cluster scope`))
		r = cvlabAs(nobody, "cancel", "carol-c")
		Expect(r.code).To(Equal(1))
		Expect(r.err).To(HavePrefix(`error: not allowed: User "mallory" cannot get resource "cvlabjobs"`))
	})

	It("cancels a job: it leaves the queue", func() {
		Expect(ok("cancel", "alice-d")).To(Equal("cvlabjob \"alice-d\" cancelled (queued, it held no GPU)\n"))
		_, err := job("alice-d")()
		Expect(apierrors.IsNotFound(err)).To(BeTrue())
		Eventually(func(g Gomega) {
			rows, after := table(ok("queue"))
			g.Expect(rows).To(Equal([]string{"carol-c pos=1", "bob-b pos=-", "bob-e pos=2", "--cut--", "alice-a pos=-"}))
			g.Expect(after).To(Equal([]string{"capacity 7 GPUs, 7 used (1 by other pods), 2 jobs waiting for 2 GPUs"}))
		}, timeout).Should(Succeed())
	})

	It("knows the operator's head of the line and --max-head-wait from what it publishes, with an empty config", func() {
		// The operator again, with a --max-head-wait of 2s: carol-c is first in line, and once it has
		// waited 2s no job ranked below it starts before it.
		stopMgr()
		opts := options
		opts.MaxHeadWait = 2 * time.Second
		stopMgr = fw.StartManager(opts)
		Eventually(func(g Gomega) {
			j, err := job("bob-e")()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(j.Status.WaitingReason).To(Equal(cvlabv1alpha1.WaitingHeadOfLine))
		}, timeout).Should(Succeed())
		Eventually(func(g Gomega) {
			out := ok("why", "bob-e", "--config", empty, "-n", ns)
			g.Expect(out).To(ContainSubstring("Why it waits: held behind " + ns + "/carol-c, which waits for 1 GPU: that job is first in line " +
				"and has waited longer than --max-head-wait (2s), so no job ranked below it starts before it."))
			g.Expect(out).NotTo(ContainSubstring("Note:"))
		}, timeout).Should(Succeed())
		for _, name := range []string{"carol-c", "bob-e"} {
			out := ok("why", name, "--config", empty, "-n", ns)
			j, err := job(name)()
			Expect(err).NotTo(HaveOccurred())
			expectWhyAgrees(j, out)
		}
		Expect(ok("why", "carol-c", "--config", empty, "-n", ns)).To(
			ContainSubstring("  It is first in line and has waited --max-head-wait (2s): no job ranked below it starts before it."))
	})

	// Last: it removes the CRD.
	It("says so on a cluster without the CvlabJob API", func() {
		stopMgr()
		stopMgr = nil
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		crd.SetName("cvlabjobs.cvlab.epfl.ch")
		Expect(fw.Client.Delete(ctx, crd)).To(Succeed())
		const notInstalled = "error: the CvlabJob API is not installed on this cluster: is the operator installed?\n"
		Eventually(func(g Gomega) {
			for _, args := range [][]string{{"queue"}, {"why", "carol-c"}, {"submit", "x", "--gpus", "1"}} {
				r := cvlab(args...)
				g.Expect(r.code).To(Equal(1), "%v", args)
				g.Expect(r.err).To(Equal(notInstalled), "%v", args)
			}
		}, 60*time.Second).Should(Succeed())
	})
})
