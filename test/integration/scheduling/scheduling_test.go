package scheduling_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"
	gtypes "github.com/onsi/gomega/types"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

const timeout = 20 * time.Second

func phase(p cvlabv1alpha1.JobPhase) gtypes.GomegaMatcher {
	return PointTo(MatchFields(IgnoreExtras, Fields{"Status": MatchFields(IgnoreExtras, Fields{"Phase": Equal(p)})}))
}

func waiting(pos int32) gtypes.GomegaMatcher {
	return PointTo(MatchFields(IgnoreExtras, Fields{"Status": MatchFields(IgnoreExtras, Fields{
		"Phase": Equal(cvlabv1alpha1.PhaseQueued), "QueuePosition": PointTo(Equal(pos))})}))
}

func message(m gtypes.GomegaMatcher) gtypes.GomegaMatcher {
	return PointTo(MatchFields(IgnoreExtras, Fields{"Status": MatchFields(IgnoreExtras, Fields{"Message": m})}))
}

var _ = Describe("Capacity from nodes, placement and preemption", func() {
	var (
		ctx  = context.Background()
		ns   string
		stop func()
	)
	start := func(o controllers.Options) {
		if o.MaxHeadWait == 0 {
			o.MaxHeadWait = 30 * time.Minute
		}
		if o.GPUCapacity == 0 {
			o.GPUCapacity = -1
		}
		stop = fw.StartManager(o)
	}
	create := func(name, user string, gpus int32, mutate ...func(*cvlabv1alpha1.CvlabJob)) {
		j := framework.Job(ns, name, user, gpus)
		for _, m := range mutate {
			m(j)
		}
		Expect(fw.Client.Create(ctx, j)).To(Succeed())
	}
	job := func(name string) func() (*cvlabv1alpha1.CvlabJob, error) { return fw.Get(ctx, ns, name) }
	// podOf waits for the job's current pod and returns it.
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
	// run plays the scheduler and the kubelet: it binds the job's pod to the node the queue chose
	// and starts it.
	run := func(name string) *corev1.Pod {
		p := podOf(name)
		node := p.Annotations[controllers.AnnotationNode]
		Expect(node).NotTo(BeEmpty())
		fw.BindPod(ctx, ns, p.Name, node)
		fw.SetPodPhase(ctx, ns, p.Name, corev1.PodRunning, "")
		Eventually(job(name), timeout).Should(phase(cvlabv1alpha1.PhaseRunning))
		return p
	}
	nodeName := func(base string) string { return ns + "-" + base }

	BeforeEach(func() { ns = fw.NewNamespace(ctx) })
	AfterEach(func() {
		if stop != nil {
			stop()
			stop = nil
		}
		fw.Cleanup(ctx, ns)
	})

	It("places a job on one node, best fit, and pins it there with a node affinity", func() {
		fw.CreateGPUNode(ctx, nodeName("big"), 8)
		fw.CreateGPUNode(ctx, nodeName("small"), 4)
		start(controllers.Options{})
		create("alice-3gpu", "alice", 3)
		p := podOf("alice-3gpu")
		Expect(p.Annotations).To(HaveKeyWithValue(controllers.AnnotationNode, nodeName("small")))
		terms := p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
		Expect(terms).To(HaveLen(1))
		Expect(terms[0].MatchExpressions).To(ConsistOf(corev1.NodeSelectorRequirement{
			Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{nodeName("small")}}))
		Expect(p.Spec.TerminationGracePeriodSeconds).To(PointTo(Equal(int64(60))))
	})

	It("does not admit a job whose GPUs are scattered over nodes, counting foreign pods, and lets small jobs start", func() {
		fw.CreateGPUNode(ctx, nodeName("a"), 4)
		fw.CreateGPUNode(ctx, nodeName("b"), 4)
		fw.ForeignGPUPod(ctx, ns, "raw-a", nodeName("a"), 2)
		fw.ForeignGPUPod(ctx, ns, "raw-b", nodeName("b"), 2)
		start(controllers.Options{})
		create("alice-4gpu", "alice", 4)
		Eventually(job("alice-4gpu"), timeout).Should(And(waiting(1), message(Equal(
			"waiting: 4 GPUs free but at most 2 on one node, needs 4; next in line; 4 GPUs are used by pods outside the queue (foreign)"))))
		create("bob-1gpu", "bob", 1)
		Eventually(job("bob-1gpu"), timeout).Should(phase(cvlabv1alpha1.PhaseAdmitted))
		Consistently(job("alice-4gpu"), 2*time.Second).Should(waiting(1))

		By("admitting it once a person's raw pod ends and a whole node is free")
		fw.SetPodPhase(ctx, ns, "raw-b", corev1.PodSucceeded, "")
		Eventually(job("alice-4gpu"), timeout).Should(phase(cvlabv1alpha1.PhaseAdmitted))
		Expect(podOf("alice-4gpu").Annotations).To(HaveKeyWithValue(controllers.AnnotationNode, nodeName("b")))
	})

	It("says plainly that a job larger than every node will never start", func() {
		fw.CreateGPUNode(ctx, nodeName("n"), 8)
		start(controllers.Options{})
		create("alice-12gpu", "alice", 12)
		Eventually(job("alice-12gpu"), timeout).Should(message(Equal("waiting: needs 12 GPUs but the largest GPU node has 8; next in line")))
	})

	It("shrinks capacity when a node goes NotReady and grows it back", func() {
		fw.CreateGPUNode(ctx, nodeName("a"), 2)
		fw.CreateGPUNode(ctx, nodeName("b"), 2)
		fw.SetNodeReady(ctx, nodeName("b"), false)
		start(controllers.Options{})
		create("alice", "alice", 2)
		create("bob", "bob", 2)
		Eventually(job("alice"), timeout).Should(phase(cvlabv1alpha1.PhaseAdmitted))
		Eventually(job("bob"), timeout).Should(waiting(1))
		fw.SetNodeReady(ctx, nodeName("b"), true)
		Eventually(job("bob"), timeout).Should(phase(cvlabv1alpha1.PhaseAdmitted))
		Expect(podOf("bob").Annotations).To(HaveKeyWithValue(controllers.AnnotationNode, nodeName("b")))
	})

	It("keeps --gpu-capacity as an upper bound over the nodes", func() {
		fw.CreateGPUNode(ctx, nodeName("n"), 8)
		start(controllers.Options{GPUCapacity: 2})
		create("alice", "alice", 1)
		create("bob", "bob", 2)
		Eventually(job("alice"), timeout).Should(phase(cvlabv1alpha1.PhaseAdmitted))
		Eventually(job("bob"), timeout).Should(And(waiting(1), message(Equal("waiting: 1 GPU free, needs 2; next in line"))))
	})

	It("requeues with backoff a job whose pod stays unschedulable", func() {
		fw.CreateGPUNode(ctx, nodeName("n"), 2)
		start(controllers.Options{UnschedulableTimeout: time.Second, BackoffBase: time.Second})
		create("alice", "alice", 1)
		p := podOf("alice")
		Eventually(func() error {
			var cur corev1.Pod
			if err := fw.Client.Get(ctx, client.ObjectKeyFromObject(p), &cur); err != nil {
				return err
			}
			cur.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available: 1 Insufficient memory.", LastTransitionTime: metav1.Now()}}
			return fw.Client.Status().Update(ctx, &cur)
		}, timeout).Should(Succeed())
		// The requeue message lasts until the next decision (after a 1 s backoff); the Warning
		// event stays.
		Eventually(func() []string {
			var evs eventsv1.EventList
			Expect(fw.Client.List(ctx, &evs, client.InNamespace(ns))).To(Succeed())
			var notes []string
			for _, e := range evs.Items {
				if e.Regarding.Name == "alice" && e.Type == corev1.EventTypeWarning && e.Reason == "Unschedulable" {
					notes = append(notes, e.Note)
				}
			}
			return notes
		}, timeout).Should(ContainElement(ContainSubstring("could not be scheduled for 1s (0/1 nodes are available: 1 Insufficient memory.); requeued")))
		Eventually(func() error { return fw.Client.Get(ctx, client.ObjectKeyFromObject(p), &corev1.Pod{}) }, timeout).Should(Satisfy(apierrors.IsNotFound))
		By("trying again after the backoff, with a new pod")
		Eventually(job("alice"), timeout).Should(And(phase(cvlabv1alpha1.PhaseAdmitted),
			PointTo(MatchFields(IgnoreExtras, Fields{"Status": MatchFields(IgnoreExtras, Fields{"PodName": Equal("alice-2")})}))))
	})

	It("leaves a job refused by a ResourceQuota waiting with the quota's message, and retries", func() {
		fw.CreateGPUNode(ctx, nodeName("n"), 2)
		q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gpus"},
			Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{"requests.nvidia.com/gpu": resource.MustParse("0")}}}
		Expect(fw.Client.Create(ctx, q)).To(Succeed())
		// Play the quota controller, which envtest does not run.
		q.Status = corev1.ResourceQuotaStatus{Hard: q.Spec.Hard, Used: corev1.ResourceList{"requests.nvidia.com/gpu": resource.MustParse("0")}}
		Expect(fw.Client.Status().Update(ctx, q)).To(Succeed())
		start(controllers.Options{BackoffBase: time.Second})
		create("alice", "alice", 1)
		Eventually(job("alice"), timeout).Should(And(phase(cvlabv1alpha1.PhaseQueued), message(ContainSubstring("exceeded quota"))))
		Expect(fw.Client.Delete(ctx, q)).To(Succeed())
		Eventually(job("alice"), timeout).Should(phase(cvlabv1alpha1.PhaseAdmitted))
	})

	Describe("preemption", func() {
		// Four running jobs fill a 4-GPU node: alice's 1st GPU and bob's 1st, 2nd and 3rd.
		fill := func() {
			fw.CreateGPUNode(ctx, nodeName("n"), 4)
			create("alice-a", "alice", 1)
			run("alice-a")
			for i := 1; i <= 3; i++ {
				create(fmt.Sprintf("bob-%d", i), "bob", 1)
				run(fmt.Sprintf("bob-%d", i))
			}
		}

		DescribeTable("evicts only what the policy allows",
			func(policy queue.Policy, preemptor, user string, wantEviction bool) {
				start(controllers.Options{Preemption: policy})
				fill()
				create(preemptor, user, 1)
				if !wantEviction {
					Consistently(job("bob-3"), 2*time.Second).Should(phase(cvlabv1alpha1.PhaseRunning))
					Expect(job(preemptor)()).To(waiting(1))
					return
				}
				Eventually(job("bob-3"), timeout).Should(phase(cvlabv1alpha1.PhaseQueued))
				Expect(job("bob-2")()).To(phase(cvlabv1alpha1.PhaseRunning))
			},
			Entry("FirstGPU: carol's 1st GPU evicts bob's 3rd", queue.PreemptFirstGPU, "carol-1", "carol", true),
			Entry("FirstGPU: alice's 2nd GPU does not evict", queue.PreemptFirstGPU, "alice-b", "alice", false),
			Entry("Rank: alice's 2nd GPU evicts bob's 3rd", queue.PreemptRank, "alice-b", "alice", true),
			Entry("Never: carol's 1st GPU waits", queue.PreemptNever, "carol-1", "carol", false),
		)

		It("tells the owner, requeues the victim with its rank, and gives the freed GPUs to the preemptor", func() {
			start(controllers.Options{})
			fill()
			victim := podOf("bob-3")
			Expect(job("bob-3")()).To(PointTo(MatchFields(IgnoreExtras, Fields{"Status": MatchFields(IgnoreExtras, Fields{"Rank": PointTo(Equal(int32(4)))})})))
			create("carol-1", "carol", 1)

			want := fmt.Sprintf("evicted for %s/carol-1, carol's 1st GPU outranks your 3rd GPU; back in the queue", ns)
			// The eviction's sentence is the Preempted condition's (status.message moves on to the
			// waiting message at the next decision).
			Eventually(func(g Gomega) {
				j, err := job("bob-3")()
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(j.Status.Phase).To(Equal(cvlabv1alpha1.PhaseQueued))
				g.Expect(meta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionPreempted)).To(PointTo(MatchFields(IgnoreExtras, Fields{
					"Message": Equal(want)})))
			}, timeout).Should(Succeed())
			j, _ := job("bob-3")()
			Expect(j.Status.Preemptions).To(Equal(int32(1)))
			Expect(meta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionPreempted)).To(PointTo(MatchFields(IgnoreExtras, Fields{
				"Status": Equal(metav1.ConditionTrue), "Reason": Equal("Preempted"), "Message": Equal(want)})))

			By("a Warning event on the evicted job")
			Eventually(func() []string {
				var evs eventsv1.EventList
				Expect(fw.Client.List(ctx, &evs, client.InNamespace(ns))).To(Succeed())
				var notes []string
				for _, e := range evs.Items {
					if e.Regarding.Name == "bob-3" && e.Type == corev1.EventTypeWarning && e.Reason == "Preempted" {
						notes = append(notes, e.Note)
					}
				}
				return notes
			}, timeout).Should(ContainElement(want))

			By("the eviction in typed status: why, for whom, where (the owner's notification is rendered from it)")
			Expect(j.Status.LastEviction).To(PointTo(MatchFields(IgnoreExtras, Fields{
				"Reason": Equal(cvlabv1alpha1.EvictionPreempted), "Preemptor": Equal(ns + "/carol-1"), "PreemptorUser": Equal("carol"),
				"Node": Equal(nodeName("n")), "Admission": Equal(int32(1))})))

			By("the pod stops with its grace period; its GPU is reserved for the preemptor meanwhile")
			var stopping corev1.Pod
			Expect(fw.Client.Get(ctx, client.ObjectKeyFromObject(victim), &stopping)).To(Succeed())
			Expect(stopping.DeletionTimestamp).NotTo(BeNil())
			Eventually(job("carol-1"), timeout).Should(message(ContainSubstring("waiting for the jobs it preempted to stop")))

			By("a second 1st-GPU job does not take carol's GPU: it evicts the next lowest-ranked job")
			create("dave-1", "dave", 1)
			Eventually(job("bob-2"), timeout).Should(phase(cvlabv1alpha1.PhaseQueued))
			Expect(job("bob-1")()).To(phase(cvlabv1alpha1.PhaseRunning))
			fw.FinishDeletion(ctx, ns, victim.Name)
			Eventually(job("carol-1"), timeout).Should(phase(cvlabv1alpha1.PhaseAdmitted))
			Expect(job("dave-1")()).To(And(phase(cvlabv1alpha1.PhaseQueued), message(ContainSubstring("waiting for the jobs it preempted to stop"))))
			fw.FinishDeletion(ctx, ns, "bob-2-1")
			Eventually(job("dave-1"), timeout).Should(phase(cvlabv1alpha1.PhaseAdmitted))

			By("the victim waits with its rank kept (its creation time is unchanged)")
			Eventually(job("bob-3"), timeout).Should(PointTo(MatchFields(IgnoreExtras, Fields{"Status": MatchFields(IgnoreExtras, Fields{
				"Phase": Equal(cvlabv1alpha1.PhaseQueued), "UserGPUs": Equal("3"), "Rank": PointTo(Equal(int32(6))), "Preemptions": Equal(int32(1))})})))
		})

		It("never evicts a job younger than --min-runtime, and does once it is old enough", func() {
			start(controllers.Options{MinRuntime: 4 * time.Second})
			fill()
			create("carol-1", "carol", 1)
			// Which of bob's 2nd and 3rd GPU jobs goes depends on which reaches the minimum run time
			// first (startTime has one-second resolution); bob's 1st and alice's never go.
			evicted := func() []string {
				var names []string
				for _, n := range []string{"alice-a", "bob-1", "bob-2", "bob-3"} {
					if j, err := job(n)(); err == nil && j.Status.Phase != cvlabv1alpha1.PhaseRunning {
						names = append(names, n)
					}
				}
				return names
			}
			Consistently(evicted, 2*time.Second).Should(BeEmpty())
			Eventually(evicted, timeout).Should(Or(Equal([]string{"bob-2"}), Equal([]string{"bob-3"})))
		})
	})
})
