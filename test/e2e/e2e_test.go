//go:build e2e

package e2e_test

import (
	"context"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

const (
	annotationRuntime  = "cvlab.epfl.ch/simulated-runtime"
	annotationResult   = "cvlab.epfl.ch/simulated-result"
	annotationExitCode = "cvlab.epfl.ch/simulated-exit-code"
	labelJob           = "cvlab.epfl.ch/job"
)

// The specs share one cluster of 4 GPUs and run in order; each one leaves its GPUs free.
var _ = Describe("The local cluster", Ordered, func() {
	It("has Ready fake nodes with nvidia.com/gpu", func(ctx SpecContext) {
		var list corev1.NodeList
		Expect(k8s.List(ctx, &list, client.MatchingLabels{"cvlab.epfl.ch/local-node": "true"})).To(Succeed())
		Expect(list.Items).To(HaveLen(nodes))
		for _, n := range list.Items {
			Expect(n.Status.Allocatable).To(HaveKeyWithValue(corev1.ResourceName("nvidia.com/gpu"), resource.MustParse("2")), n.Name)
			Expect(n.Spec.Taints).To(BeEmpty(), n.Name)
			Expect(n.Status.Conditions).To(ContainElement(And(
				HaveField("Type", corev1.NodeReady), HaveField("Status", corev1.ConditionTrue))), n.Name)
		}
	})

	It("runs the samples on fake nodes, and garbage-collects their pods when they are deleted", func(ctx SpecContext) {
		_, err := kubectl("apply", "-k", "config/samples")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _, _ = kubectl("delete", "-k", "config/samples", "--ignore-not-found", "--wait=false") })

		out, err := kubectl("get", "cvlabjobs")
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.Fields(strings.SplitN(out, "\n", 2)[0])).To(ContainElements("NAME", "USER", "GPUS", "PHASE", "POSITION"))

		// 1 + 2 GPUs of 4 and a CPU job: all run at once. The GPU jobs mount the samples' PVCs,
		// which the local cluster pre-binds, so the scheduler can place them.
		for _, name := range []string{"alice-preprocess", "alice-train", "bob-jupyter"} {
			pod := runningPod(ctx, "default", name)
			Expect(pod.Spec.NodeName).To(HavePrefix("gpu-node-"))
			Expect(pod.Status.PodIP).NotTo(BeEmpty())
		}

		// Foreground deletion: the API server keeps each job until the garbage collector has
		// deleted its pods (blockOwnerDeletion), and the pods go once kwok "stopped" them.
		_, err = kubectl("delete", "-k", "config/samples", "--cascade=foreground", "--timeout=60s")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			var pods corev1.PodList
			g.Expect(k8s.List(ctx, &pods, client.InNamespace("default"), client.HasLabels{labelJob})).To(Succeed())
			g.Expect(pods.Items).To(BeEmpty())
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
	})

	It("queues a job while the GPUs are full and starts it when one finishes", func(ctx SpecContext) {
		ns := newNamespace(ctx, "e2e-queue")
		// fill-a and fill-b take all 4 GPUs; fill-a finishes after 6 s, fill-b runs until deleted.
		create(ctx, job(ns, "fill-a", "xavier", 2, "6s"))
		create(ctx, job(ns, "fill-b", "yasmin", 2, ""))
		podA := runningPod(ctx, ns, "fill-a")
		runningPod(ctx, ns, "fill-b")

		create(ctx, job(ns, "waiter", "zoe", 2, "3s"))
		Eventually(get(ctx, ns, "waiter")).WithTimeout(10 * time.Second).Should(And(
			HaveField("Status.Phase", cvlabv1alpha1.PhaseQueued),
			HaveField("Status.QueuePosition", HaveValue(BeEquivalentTo(1))),
		))
		out, err := kubectl("get", "cvlabjobs", "-n", ns)
		Expect(err).NotTo(HaveOccurred())
		Expect(row(out, "waiter")).To(And(ContainElement("Queued"), ContainElement("1")), out)

		// fill-a Succeeds after its simulated runtime, which frees 2 GPUs for the waiter.
		a := waitFinished(ctx, ns, "fill-a")
		Expect(a.Status.Phase).To(Equal(cvlabv1alpha1.PhaseSucceeded))
		Expect(a.Status.CompletionTime.Sub(podA.Status.StartTime.Time)).To(BeNumerically("~", 6*time.Second, 1500*time.Millisecond))

		Eventually(func(g Gomega) {
			var pod corev1.Pod
			g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "waiter-1"}, &pod)).To(Succeed())
			g.Expect(pod.Spec.NodeName).To(HavePrefix("gpu-node-"))
		}).WithContext(ctx).WithTimeout(15 * time.Second).Should(Succeed())
		_, err = kubectl("wait", "--for=condition=Finished", "cvlabjob/waiter", "-n", ns, "--timeout=60s")
		Expect(err).NotTo(HaveOccurred())
		w := getJob(ctx, ns, "waiter")
		Expect(w.Status.Phase).To(Equal(cvlabv1alpha1.PhaseSucceeded))
		Expect(w.Status.AdmittedAt.Time).NotTo(BeTemporally("<", a.Status.CompletionTime.Time))

		// Deleting the running job removes its pod (garbage collection, with the default
		// background propagation of kubectl delete).
		_, err = kubectl("delete", "cvlabjob", "fill-b", "-n", ns)
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error {
			return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "fill-b-1"}, &corev1.Pod{})
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Satisfy(apierrors.IsNotFound))
	})

	It("reports simulated failures and timeouts", func(ctx SpecContext) {
		ns := newNamespace(ctx, "e2e-fail")
		crash := job(ns, "crash", "xavier", 1, "1s")
		crash.Spec.PodAnnotations[annotationResult] = "Failed"
		crash.Spec.PodAnnotations[annotationExitCode] = "3"
		create(ctx, crash)
		slow := job(ns, "slow", "yasmin", 1, "1h")
		slow.Spec.Timeout = &metav1.Duration{Duration: 2 * time.Second}
		create(ctx, slow)

		j := waitFinished(ctx, ns, "crash")
		Expect(j.Status.Phase).To(Equal(cvlabv1alpha1.PhaseFailed))
		Expect(apimeta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionFinished).Reason).To(Equal("Failed"))
		var pod corev1.Pod
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "crash-1"}, &pod)).To(Succeed())
		Expect(pod.Status.ContainerStatuses).To(ConsistOf(HaveField("State.Terminated.ExitCode", BeEquivalentTo(3))))

		j = waitFinished(ctx, ns, "slow")
		Expect(j.Status.Phase).To(Equal(cvlabv1alpha1.PhaseFailed))
		Expect(apimeta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionFinished).Reason).To(Equal("DeadlineExceeded"))
	})

	It("lets a 1st-GPU job preempt the lowest-ranked running job, which goes back to the queue", func(ctx SpecContext) {
		ns := newNamespace(ctx, "e2e-preempt")
		// alice fills the 4 GPUs with her 1st..4th GPU jobs.
		for _, name := range []string{"alice-1", "alice-2", "alice-3", "alice-4"} {
			create(ctx, job(ns, name, "alice", 1, ""))
			runningPod(ctx, ns, name)
		}
		victimPod := getJob(ctx, ns, "alice-4").Status.PodName
		create(ctx, job(ns, "bob-1", "bob", 1, ""))

		// bob's 1st GPU outranks alice's 4th: her pod is stopped (kwok honours the grace period,
		// capped at 1 s) and bob's job runs in its place.
		runningPod(ctx, ns, "bob-1")
		Eventually(get(ctx, ns, "alice-4")).WithTimeout(15 * time.Second).Should(And(
			HaveField("Status.Phase", cvlabv1alpha1.PhaseQueued),
			HaveField("Status.Preemptions", BeEquivalentTo(1)),
			HaveField("Status.QueuePosition", HaveValue(BeEquivalentTo(1))),
		))
		j := getJob(ctx, ns, "alice-4")
		cond := apimeta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionPreempted)
		Expect(cond).NotTo(BeNil())
		Expect(cond.Message).To(Equal("evicted for " + ns + "/bob-1, bob's 1st GPU outranks your 4th GPU; back in the queue"))
		Eventually(func() error {
			return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: victimPod}, &corev1.Pod{})
		}).WithContext(ctx).WithTimeout(15 * time.Second).Should(Satisfy(apierrors.IsNotFound))
		out, err := kubectl("get", "events", "-n", ns, "--field-selector", "reason=Preempted", "-o", "name")
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.TrimSpace(out)).NotTo(BeEmpty(), "a Preempted event on the evicted job")

		for _, name := range []string{"alice-1", "alice-2", "alice-3", "alice-4", "bob-1"} {
			_, err := kubectl("delete", "cvlabjob", name, "-n", ns, "--wait=false")
			Expect(err).NotTo(HaveOccurred())
		}
		waitNoPods(ctx, ns)
	})

	It("shrinks the capacity when a node goes NotReady, and grows it back", func(ctx SpecContext) {
		ns := newNamespace(ctx, "e2e-notready")
		const node = "gpu-node-2"
		// kwok stops keeping the node alive, and it reports NotReady, as a crashed kubelet would.
		_, err := kubectl("annotate", "node", node, "kwok.x-k8s.io/node-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _, _ = kubectl("annotate", "node", node, "kwok.x-k8s.io/node=fake", "--overwrite") })
		_, err = kubectl("patch", "node", node, "--subresource=status", "--type=strategic", "-p",
			`{"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletDown","message":"e2e: kubelet stopped"}]}}`)
		Expect(err).NotTo(HaveOccurred())

		create(ctx, job(ns, "first", "xavier", 2, ""))
		runningPod(ctx, ns, "first")
		create(ctx, job(ns, "second", "yasmin", 2, ""))
		Eventually(get(ctx, ns, "second")).WithTimeout(15 * time.Second).Should(And(
			HaveField("Status.Phase", cvlabv1alpha1.PhaseQueued),
			HaveField("Status.Message", Equal("waiting: 0 GPUs free, needs 2; next in line")),
		))

		// kwok takes the node back: it is Ready again and the second job starts there.
		_, err = kubectl("annotate", "node", node, "kwok.x-k8s.io/node=fake", "--overwrite")
		Expect(err).NotTo(HaveOccurred())
		pod := runningPod(ctx, ns, "second")
		Expect(pod.Spec.NodeName).To(Equal(node))

		for _, name := range []string{"first", "second"} {
			_, err := kubectl("delete", "cvlabjob", name, "-n", ns, "--wait=false")
			Expect(err).NotTo(HaveOccurred())
		}
		waitNoPods(ctx, ns)
	})
})

// waitNoPods waits until a namespace has no job pods left, so that the next spec finds all GPUs free.
func waitNoPods(ctx context.Context, ns string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		var pods corev1.PodList
		g.Expect(k8s.List(ctx, &pods, client.InNamespace(ns), client.HasLabels{labelJob})).To(Succeed())
		g.Expect(pods.Items).To(BeEmpty())
	}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
}

// job returns a CvlabJob whose pod runs for the given simulated runtime ("" runs until deleted).
func job(ns, name, user string, gpus int32, runtime string) *cvlabv1alpha1.CvlabJob {
	j := &cvlabv1alpha1.CvlabJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cvlabv1alpha1.CvlabJobSpec{
			User: user, GPUs: gpus, Image: "ic-registry.epfl.ch/cvlab/lis/lab-base:gpu",
			Command:        []string{"python", "train.py"},
			PodAnnotations: map[string]string{},
		},
	}
	if runtime != "" {
		j.Spec.PodAnnotations[annotationRuntime] = runtime
	}
	return j
}

func create(ctx context.Context, j *cvlabv1alpha1.CvlabJob) {
	GinkgoHelper()
	Expect(k8s.Create(ctx, j)).To(Succeed())
}

func getJob(ctx context.Context, ns, name string) *cvlabv1alpha1.CvlabJob {
	GinkgoHelper()
	var j cvlabv1alpha1.CvlabJob
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &j)).To(Succeed())
	return &j
}

// get reads a job, for Eventually.
func get(ctx context.Context, ns, name string) func() (*cvlabv1alpha1.CvlabJob, error) {
	return func() (*cvlabv1alpha1.CvlabJob, error) {
		var j cvlabv1alpha1.CvlabJob
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &j)
		return &j, err
	}
}

// runningPod waits until the job runs and its pod is Running on a node, and returns the pod.
func runningPod(ctx context.Context, ns, name string) *corev1.Pod {
	GinkgoHelper()
	var pod corev1.Pod
	Eventually(func(g Gomega) {
		var j cvlabv1alpha1.CvlabJob
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &j)).To(Succeed())
		g.Expect(j.Status.Phase).To(Equal(cvlabv1alpha1.PhaseRunning))
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: j.Status.PodName}, &pod)).To(Succeed())
		g.Expect(pod.Status.Phase).To(Equal(corev1.PodRunning))
		g.Expect(pod.Spec.NodeName).NotTo(BeEmpty())
	}).WithContext(ctx).WithTimeout(30*time.Second).Should(Succeed(), "job %s/%s running", ns, name)
	return &pod
}

// waitFinished waits until the job's Finished condition is True and returns the job.
func waitFinished(ctx context.Context, ns, name string) *cvlabv1alpha1.CvlabJob {
	GinkgoHelper()
	var j *cvlabv1alpha1.CvlabJob
	Eventually(func(g Gomega) {
		var err error
		j, err = get(ctx, ns, name)()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(apimeta.IsStatusConditionTrue(j.Status.Conditions, cvlabv1alpha1.ConditionFinished)).To(BeTrue())
	}).WithContext(ctx).WithTimeout(30*time.Second).Should(Succeed(), "job %s/%s finished", ns, name)
	return j
}

// row returns the fields of the line of `kubectl get` output that starts with name.
func row(out, name string) []string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return f
		}
	}
	return nil
}
