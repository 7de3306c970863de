package queue_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"
	gtypes "github.com/onsi/gomega/types"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

const timeout = 20 * time.Second

// phase, position and GPU ordinals of a job, as `kubectl get cvlabjobs` shows them.
func queued(pos int32, gpus string) gtypes.GomegaMatcher {
	return PointTo(MatchFields(IgnoreExtras, Fields{"Status": MatchFields(IgnoreExtras, Fields{
		"Phase":         Equal(cvlabv1alpha1.PhaseQueued),
		"QueuePosition": PointTo(Equal(pos)),
		"UserGPUs":      Equal(gpus),
	})}))
}

func inPhase(p cvlabv1alpha1.JobPhase) gtypes.GomegaMatcher {
	return PointTo(MatchFields(IgnoreExtras, Fields{"Status": MatchFields(IgnoreExtras, Fields{
		"Phase": Equal(p), "QueuePosition": BeNil(),
	})}))
}

var _ = Describe("The fair-share queue", func() {
	var (
		ctx  = context.Background()
		ns   string
		stop func()
	)
	// start runs the operator with a GPU capacity for this test.
	start := func(capacity int32) {
		stop = fw.StartManager(controllers.Options{GPUCapacity: capacity, MaxHeadWait: 30 * time.Minute, Preemption: queue.PreemptNever})
	}
	create := func(name, user string, gpus int32, mutate ...func(*cvlabv1alpha1.CvlabJob)) *cvlabv1alpha1.CvlabJob {
		j := framework.Job(ns, name, user, gpus)
		for _, m := range mutate {
			m(j)
		}
		Expect(fw.Client.Create(ctx, j)).To(Succeed())
		return j
	}
	job := func(name string) func() (*cvlabv1alpha1.CvlabJob, error) { return fw.Get(ctx, ns, name) }
	podOf := func(name string) *corev1.Pod {
		var j *cvlabv1alpha1.CvlabJob
		Eventually(func(g Gomega) {
			var err error
			j, err = job(name)()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(j.Status.PodName).NotTo(BeEmpty())
		}, timeout).Should(Succeed())
		var p corev1.Pod
		Expect(fw.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: j.Status.PodName}, &p)).To(Succeed())
		return &p
	}

	BeforeEach(func() { ns = fw.NewNamespace(ctx) })
	AfterEach(func() {
		if stop != nil {
			stop()
			stop = nil
		}
		fw.Cleanup(ctx, ns)
	})

	It("turns an applied job into one pod with the job's container, data, identity and labels", func() {
		start(4)
		create("alice-train", "alice", 2, func(j *cvlabv1alpha1.CvlabJob) {
			j.Spec.Priority = -2
			j.Spec.Cvlabdata = []cvlabv1alpha1.CvlabdataMount{{ClaimName: "pv-cvlabdata1", MountPath: "/cvlabdata1"}, {ClaimName: "pv-cvlabdata2", MountPath: "/cvlabdata2", ReadOnly: true}}
			j.Spec.ClusterUser = &cvlabv1alpha1.ClusterUser{Name: "alice", UID: 1001, GroupName: "cvlab", GID: 2001}
			j.Spec.Ports = []corev1.ContainerPort{{Name: "jupyter", ContainerPort: 8888}}
			j.Spec.Env = []corev1.EnvVar{{Name: "JUPYTER_CONFIG_DIR", Value: "/cvlabdata2/home/alice/.jupyter"}}
			j.Spec.Timeout = &metav1.Duration{Duration: 90 * time.Minute}
			j.Spec.PodLabels = map[string]string{"team": "lis"}
		})
		Eventually(job("alice-train"), timeout).Should(inPhase(cvlabv1alpha1.PhaseAdmitted))
		p := podOf("alice-train")
		Expect(p.Name).To(Equal("alice-train-1"))
		Expect(p.Labels).To(Equal(map[string]string{"user": "alice", "priority": "neg-2", "cvlab.epfl.ch/job": "alice-train", "cvlab.epfl.ch/admission": "1", "team": "lis"}))
		Expect(p.Annotations).To(HaveKeyWithValue("cvlab.epfl.ch/priority", "-2"))
		Expect(metav1.GetControllerOf(p)).To(PointTo(MatchFields(IgnoreExtras, Fields{"Kind": Equal("CvlabJob"), "Name": Equal("alice-train")})))
		Expect(p.Spec.RestartPolicy).To(Equal(corev1.RestartPolicyNever))
		Expect(p.Spec.ActiveDeadlineSeconds).To(PointTo(Equal(int64(5400))))
		c := p.Spec.Containers[0]
		Expect(c.Image).To(Equal("ic-registry.epfl.ch/cvlab/lis/lab-base:cpu"))
		Expect(c.Resources.Limits.Name("nvidia.com/gpu", "").Value()).To(Equal(int64(2)))
		Expect(c.Ports).To(ConsistOf(MatchFields(IgnoreExtras, Fields{"ContainerPort": Equal(int32(8888))})))
		Expect(c.Env).To(ContainElements(
			corev1.EnvVar{Name: "JUPYTER_CONFIG_DIR", Value: "/cvlabdata2/home/alice/.jupyter"},
			corev1.EnvVar{Name: "CLUSTER_USER", Value: "alice"}, corev1.EnvVar{Name: "CLUSTER_USER_ID", Value: "1001"},
			corev1.EnvVar{Name: "CLUSTER_GROUP_NAME", Value: "cvlab"}, corev1.EnvVar{Name: "CLUSTER_GROUP_ID", Value: "2001"}))
		Expect(c.VolumeMounts).To(HaveLen(2))
		Expect(p.Spec.Volumes).To(ConsistOf(
			MatchFields(IgnoreExtras, Fields{"VolumeSource": MatchFields(IgnoreExtras, Fields{"PersistentVolumeClaim": PointTo(Equal(corev1.PersistentVolumeClaimVolumeSource{ClaimName: "pv-cvlabdata1"}))})}),
			MatchFields(IgnoreExtras, Fields{"VolumeSource": MatchFields(IgnoreExtras, Fields{"PersistentVolumeClaim": PointTo(Equal(corev1.PersistentVolumeClaimVolumeSource{ClaimName: "pv-cvlabdata2", ReadOnly: true}))})})))

		By("mirroring the pod's phase: running, then succeeded")
		fw.SetPodPhase(ctx, ns, p.Name, corev1.PodRunning, "")
		Eventually(job("alice-train"), timeout).Should(inPhase(cvlabv1alpha1.PhaseRunning))
		fw.SetPodPhase(ctx, ns, p.Name, corev1.PodSucceeded, "")
		Eventually(job("alice-train"), timeout).Should(inPhase(cvlabv1alpha1.PhaseSucceeded))
		j, _ := job("alice-train")()
		Expect(j.Status.StartTime).NotTo(BeNil())
		Expect(j.Status.CompletionTime).NotTo(BeNil())
		Expect(j.Status.ObservedGeneration).To(Equal(j.Generation))
		fin := meta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionFinished)
		Expect(fin).To(PointTo(MatchFields(IgnoreExtras, Fields{"Status": Equal(metav1.ConditionTrue), "Reason": Equal("Succeeded")})))

		By("emitting events on the way")
		Eventually(func() []string {
			var evs eventsv1.EventList
			Expect(fw.Client.List(ctx, &evs, client.InNamespace(ns))).To(Succeed())
			var reasons []string
			for _, e := range evs.Items {
				if e.Regarding.Name == "alice-train" {
					reasons = append(reasons, e.Reason)
				}
			}
			return reasons
		}, timeout).Should(ContainElements("Admitted", "Started", "Finished"))
	})

	It("admits CPU-only jobs at once, even when every GPU is taken", func() {
		start(1)
		create("gpu-a", "alice", 1)
		Eventually(job("gpu-a"), timeout).Should(inPhase(cvlabv1alpha1.PhaseAdmitted))
		create("gpu-b", "alice", 1)
		create("cpu", "alice", 0)
		Eventually(job("cpu"), timeout).Should(inPhase(cvlabv1alpha1.PhaseAdmitted))
		Eventually(job("gpu-b"), timeout).Should(queued(1, "2"))
		j, _ := job("gpu-b")()
		Expect(j.Status.Message).To(Equal("waiting: 0 GPUs free, needs 1; next in line"))
	})

	It("queues jobs past capacity in fair-share order and admits the next one when a pod ends", func() {
		start(2)
		create("alice-1", "alice", 1)
		create("alice-2", "alice", 1)
		Eventually(job("alice-1"), timeout).Should(inPhase(cvlabv1alpha1.PhaseAdmitted))
		Eventually(job("alice-2"), timeout).Should(inPhase(cvlabv1alpha1.PhaseAdmitted))
		create("alice-3", "alice", 1)
		create("bob-1", "bob", 1)
		create("carol-1", "carol", 1)
		// bob's and carol's 1st GPUs go before alice's 3rd; they tie on ordinal, then on the second
		// of creation (bob's is never later), then namespace/name decides. (Created carol first,
		// bob's job landed in the next second now and then on a loaded machine, and ranked second.)
		Eventually(job("bob-1"), timeout).Should(queued(1, "1"))
		Eventually(job("carol-1"), timeout).Should(queued(2, "1"))
		Eventually(job("alice-3"), timeout).Should(queued(3, "3"))
		j, _ := job("alice-3")()
		Expect(j.Status.Message).To(Equal("waiting: 0 GPUs free, needs 1; 2 jobs ahead"))
		Expect(j.Status.Rank).To(PointTo(Equal(int32(5))))

		fw.SetPodPhase(ctx, ns, podOf("alice-1").Name, corev1.PodSucceeded, "")
		Eventually(job("bob-1"), timeout).Should(inPhase(cvlabv1alpha1.PhaseAdmitted))
		Eventually(job("carol-1"), timeout).Should(queued(1, "1"))
		// alice-1 finished, so alice-3 now covers alice's 2nd GPU.
		Eventually(job("alice-3"), timeout).Should(queued(2, "2"))
	})

	It("re-ranks a user's jobs when a priority changes", func() {
		start(0)
		create("alice-a", "alice", 1)
		Eventually(job("alice-a"), timeout).Should(queued(1, "1"))
		create("alice-b", "alice", 1)
		Eventually(job("alice-b"), timeout).Should(queued(2, "2"))

		Expect(fw.Client.Patch(ctx, &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice-b"}},
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"priority":5}}`)))).To(Succeed())
		Eventually(job("alice-b"), timeout).Should(queued(1, "1"))
		Eventually(job("alice-a"), timeout).Should(queued(2, "2"))
	})

	It("suspends a running job back into the queue, lets the next job in, and resumes it later", func() {
		start(1)
		create("alice-1", "alice", 1)
		Eventually(job("alice-1"), timeout).Should(inPhase(cvlabv1alpha1.PhaseAdmitted))
		first := podOf("alice-1")
		fw.SetPodPhase(ctx, ns, first.Name, corev1.PodRunning, "")
		Eventually(job("alice-1"), timeout).Should(inPhase(cvlabv1alpha1.PhaseRunning))
		create("bob-1", "bob", 1)
		Eventually(job("bob-1"), timeout).Should(queued(1, "1"))

		suspend := func(on bool) {
			p := []byte(`{"spec":{"suspend":false}}`)
			if on {
				p = []byte(`{"spec":{"suspend":true}}`)
			}
			Expect(fw.Client.Patch(ctx, &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice-1"}},
				client.RawPatch(types.MergePatchType, p))).To(Succeed())
		}
		suspend(true)
		Eventually(job("alice-1"), timeout).Should(inPhase(cvlabv1alpha1.PhaseSuspended))
		Eventually(func() error {
			return fw.Client.Get(ctx, client.ObjectKeyFromObject(first), &corev1.Pod{})
		}, timeout).Should(Satisfy(apierrors.IsNotFound))
		Eventually(job("bob-1"), timeout).Should(inPhase(cvlabv1alpha1.PhaseAdmitted))

		suspend(false)
		Eventually(job("alice-1"), timeout).Should(queued(1, "1"))
		fw.SetPodPhase(ctx, ns, podOf("bob-1").Name, corev1.PodSucceeded, "")
		Eventually(job("alice-1"), timeout).Should(inPhase(cvlabv1alpha1.PhaseAdmitted))
		Expect(podOf("alice-1").Name).To(Equal("alice-1-2"))
	})

	It("fails a job whose pod vanishes, and one that hits its timeout, with the reason", func() {
		start(2)
		create("vanish", "alice", 1)
		create("slow", "bob", 1, func(j *cvlabv1alpha1.CvlabJob) { j.Spec.Timeout = &metav1.Duration{Duration: time.Hour} })
		p := podOf("vanish")
		Expect(fw.Client.Delete(ctx, p)).To(Succeed())
		Eventually(job("vanish"), timeout).Should(inPhase(cvlabv1alpha1.PhaseFailed))
		j, _ := job("vanish")()
		Expect(meta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionFinished).Reason).To(Equal("PodDeleted"))
		Expect(j.Status.Message).To(Equal("pod vanish-1 was deleted before the job finished"))

		fw.SetPodPhase(ctx, ns, podOf("slow").Name, corev1.PodFailed, "DeadlineExceeded")
		Eventually(job("slow"), timeout).Should(inPhase(cvlabv1alpha1.PhaseFailed))
		j, _ = job("slow")()
		Expect(meta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionFinished).Reason).To(Equal("DeadlineExceeded"))
	})

	It("deletes a job's pod when the job is deleted", func() {
		start(1)
		j := create("short", "alice", 1)
		p := podOf("short")
		Expect(fw.Client.Delete(ctx, j)).To(Succeed())
		Eventually(func() error {
			return fw.Client.Get(ctx, client.ObjectKeyFromObject(p), &corev1.Pod{})
		}, timeout).Should(Satisfy(apierrors.IsNotFound))
	})

	It("stays in sync with GitOps: applying the same manifest again changes nothing, the operator owns only status", func() {
		start(1)
		// What Argo CD or Flux does: server-side apply of the manifest from git.
		manifest := func() *unstructured.Unstructured {
			u := &unstructured.Unstructured{}
			Expect(yaml.Unmarshal([]byte(`
apiVersion: cvlab.epfl.ch/v1alpha1
kind: CvlabJob
metadata: {name: gitops, labels: {team: lis}}
spec:
  user: alice
  gpus: 1
  image: ic-registry.epfl.ch/cvlab/lis/lab-base:gpu
  command: ["python", "train.py"]
`), &u.Object)).To(Succeed())
			u.SetNamespace(ns)
			return u
		}
		apply := func() {
			Expect(fw.Client.Patch(ctx, manifest(), client.Apply, client.FieldOwner("argocd"), client.ForceOwnership)).To(Succeed())
		}
		apply()
		Eventually(job("gitops"), timeout).Should(inPhase(cvlabv1alpha1.PhaseAdmitted))
		before, _ := job("gitops")()
		apply()
		after, _ := job("gitops")()
		Expect(after.ResourceVersion).To(Equal(before.ResourceVersion), "a second apply of an unchanged manifest must be a no-op")
		Expect(after.Generation).To(Equal(int64(1)))
		Expect(after.Labels).To(Equal(map[string]string{"team": "lis"}))
		Expect(after.Annotations).To(BeEmpty())
		Expect(after.Finalizers).To(BeEmpty())
		managers := map[string]string{}
		for _, mf := range after.ManagedFields {
			managers[mf.Manager] = mf.Subresource
		}
		Expect(managers).To(Equal(map[string]string{"argocd": "", "cvlab-queue": "status"}))

		By("reporting health the kstatus way: observedGeneration and a Ready condition")
		Expect(after.Status.ObservedGeneration).To(Equal(after.Generation))
		Expect(meta.FindStatusCondition(after.Status.Conditions, cvlabv1alpha1.ConditionReady)).To(PointTo(MatchFields(IgnoreExtras, Fields{
			"Status": Equal(metav1.ConditionFalse), "Reason": Equal("Admitted"), "ObservedGeneration": Equal(int64(1))})))
		fw.SetPodPhase(ctx, ns, after.Status.PodName, corev1.PodRunning, "")
		Eventually(func() *metav1.Condition {
			j, _ := job("gitops")()
			return meta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionReady)
		}, timeout).Should(PointTo(MatchFields(IgnoreExtras, Fields{"Status": Equal(metav1.ConditionTrue), "Reason": Equal("Running")})))
	})
})
