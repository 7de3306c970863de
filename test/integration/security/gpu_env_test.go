package security_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
)

// docs/security.md#no-gpu-through-the-environment: NVIDIA_VISIBLE_DEVICES, which the NVIDIA
// container runtime reads, never shows a container GPUs the queue did not give it.
const (
	nvidiaEnv      = controllers.EnvNVIDIAVisibleDevices
	gpuEnvPolicy   = "'cvlab-queue-no-gpu-env'"
	gpuEnvWorkload = "'cvlab-queue-no-gpu-env-workloads'"
	// debugRole lets people add ephemeral containers (kubectl debug) and create CronJobs, as the
	// built-in edit role does (test-only, like workloadsRole).
	debugRole = "test-debug"
)

// visibleDevices is what the runtime reads from c's env: the last NVIDIA_VISIBLE_DEVICES entry
// ("" and false when none), and how many entries carry the name.
func visibleDevices(env []corev1.EnvVar) (value string, set bool, entries int) {
	for _, e := range env {
		if e.Name == nvidiaEnv {
			value, set, entries = e.Value, true, entries+1
		}
	}
	return value, set, entries
}

// blind matches a container env whose NVIDIA_VISIBLE_DEVICES is exactly one entry "void".
func blind() OmegaMatcher {
	return WithTransform(func(env []corev1.EnvVar) []any {
		v, set, n := visibleDevices(env)
		return []any{v, set, n}
	}, Equal([]any{"void", true, 1}))
}

// withEnv is a CPU container (a CUDA image) with env.
func withEnv(name string, env ...corev1.EnvVar) corev1.Container {
	return corev1.Container{Name: name, Image: "nvcr.io/nvidia/pytorch:25.01-py3", Resources: gpuLimits(0), Env: env}
}

func cpuPodWith(ns, name string, containers ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: containers}}
}

func storedPod(ctx context.Context, ns, name string) *corev1.Pod {
	GinkgoHelper()
	var p corev1.Pod
	Expect(admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &p)).To(Succeed())
	return &p
}

// jobPod waits for the operator to create the pod of the job's current admission and returns it.
func jobPod(ctx context.Context, ns, name string) *corev1.Pod {
	GinkgoHelper()
	var p corev1.Pod
	Eventually(func(g Gomega) {
		var j cvlabv1alpha1.CvlabJob
		g.Expect(admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &j)).To(Succeed())
		g.Expect(j.Status.PodName).NotTo(BeEmpty())
		g.Expect(admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: j.Status.PodName}, &p)).To(Succeed())
	}).Should(Succeed())
	return &p
}

var _ = Describe("no GPU through the environment", func() {
	var enforced, open string
	BeforeEach(func(ctx SpecContext) {
		enforced, open = newNamespace(ctx, true), newNamespace(ctx, false)
		err := admin.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: debugRole}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods/ephemeralcontainers"}, Verbs: []string{"update", "patch"}},
			{APIGroups: []string{"batch"}, Resources: []string{"cronjobs"}, Verbs: []string{"create"}},
		}})
		if !apierrors.IsAlreadyExists(err) {
			Expect(err).NotTo(HaveOccurred())
		}
		for _, ns := range []string{enforced, open} {
			grantUser(ctx, ns, workloadsRole)
			grantUser(ctx, ns, debugRole)
		}
		By("the three policies acting (a moment after their creation)")
		Eventually(func(g Gomega) {
			p := cpuPodWith(enforced, "probe", withEnv("c"))
			g.Expect(as(alice).Create(ctx, p, client.DryRunAll)).To(Succeed())
			g.Expect(p.Spec.Containers[0].Env).To(blind())
		}).Should(Succeed())
		Eventually(func() error {
			return as(alice).Create(ctx, cpuPodWith(enforced, "probe", withEnv("c", corev1.EnvVar{Name: nvidiaEnv, Value: "all"})), client.DryRunAll)
		}).Should(forbidden(gpuEnvPolicy))
		Eventually(func() error {
			d := gpuDeployment(enforced, "probe", 0)
			d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: nvidiaEnv, Value: "all"}}
			return as(alice).Create(ctx, d, client.DryRunAll)
		}).Should(forbidden(gpuEnvWorkload))
	})

	Context("CvlabJobs", func() {
		It("gives a CPU job's pod NVIDIA_VISIBLE_DEVICES=void, as the operator creates it, enforced namespace or not", func(ctx SpecContext) {
			for _, ns := range []string{enforced, open} {
				j := job(ns, "cpu-on-cuda", "", 0)
				j.Spec.Image = "nvcr.io/nvidia/pytorch:25.01-py3" // its image says NVIDIA_VISIBLE_DEVICES=all
				j.Spec.Env = []corev1.EnvVar{{Name: "PYTHONUNBUFFERED", Value: "1"}}
				Expect(as(alice).Create(ctx, j)).To(Succeed())
				p := jobPod(ctx, ns, "cpu-on-cuda")
				Expect(p.Spec.Containers[0].Env).To(blind(), "namespace %s", ns)
				Expect(p.Spec.Containers[0].Env).To(ContainElement(corev1.EnvVar{Name: "PYTHONUNBUFFERED", Value: "1"}))
			}
		})

		It("leaves a GPU job's pod to the device plugin: the operator's GPU pod is untouched by the mutation", func(ctx SpecContext) {
			Expect(as(alice).Create(ctx, job(enforced, "gpu", "", 1))).To(Succeed())
			DeferCleanup(func(ctx context.Context) { Expect(deleteJob(ctx, as(alice), enforced, "gpu")).To(Succeed()) }, context.Background())
			p := jobPod(ctx, enforced, "gpu")
			Expect(p.Spec.Containers[0].Resources.Limits).To(HaveKey(controllers.ResourceGPU))
			_, set, _ := visibleDevices(p.Spec.Containers[0].Env)
			Expect(set).To(BeFalse(), "the operator's GPU pod got NVIDIA_VISIBLE_DEVICES: %v", p.Spec.Containers[0].Env)
		})

		It("refuses spec.env setting NVIDIA_VISIBLE_DEVICES at create, saying why and what to do", func(ctx SpecContext) {
			for _, gpus := range []int32{0, 2} {
				j := job(open, "widen", "", gpus)
				j.Spec.Env = []corev1.EnvVar{{Name: nvidiaEnv, Value: "all"}}
				err := as(alice).Create(ctx, j)
				Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
				Expect(err).To(MatchError(ContainSubstring("spec.env")))
				Expect(err).To(MatchError(ContainSubstring("env may not set NVIDIA_VISIBLE_DEVICES: the NVIDIA container runtime would give the " +
					"container the GPUs it names, around the queue; ask for GPUs with spec.gpus")))
			}
			By("admins too: the rule is the CRD's")
			j := job(open, "widen", "bob", 1)
			j.Spec.Env = []corev1.EnvVar{{Name: nvidiaEnv, ValueFrom: &corev1.EnvVarSource{
				ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gpus"}, Key: "all"}}}}
			Expect(apierrors.IsInvalid(as(carol).Create(ctx, j))).To(BeTrue())

			By("other names are other variables to the runtime (case-sensitive) and pass")
			j = job(open, "other-names", "", 1)
			j.Spec.Env = []corev1.EnvVar{{Name: "nvidia_visible_devices", Value: "all"}, {Name: "CUDA_VISIBLE_DEVICES", Value: "0"},
				{Name: "NVIDIA_DRIVER_CAPABILITIES", Value: "compute,utility"}}
			Expect(as(alice).Create(ctx, j, client.DryRunAll)).To(Succeed())
		})
	})

	Context("pods not created by the operator, in an enforced namespace", func() {
		It("makes every container without a GPU blind, and stores it so", func(ctx SpecContext) {
			p := cpuPodWith(enforced, "notebook",
				withEnv("main"), // no env at all
				withEnv("with-env", corev1.EnvVar{Name: "A", Value: "1"}),
				withEnv("none", corev1.EnvVar{Name: nvidiaEnv, Value: "none"}))
			// From a ConfigMap: the explicit entry the policy adds wins over envFrom.
			p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "sets-all"}}}}
			p.Spec.InitContainers = []corev1.Container{withEnv("fetch")}
			Expect(as(alice).Create(ctx, p)).To(Succeed())

			s := storedPod(ctx, enforced, "notebook")
			Expect(s.Spec.Containers[0].Env).To(blind())
			Expect(s.Spec.Containers[0].EnvFrom).To(HaveLen(1))
			Expect(s.Spec.Containers[1].Env).To(Equal([]corev1.EnvVar{{Name: "A", Value: "1"}, {Name: nvidiaEnv, Value: "void"}}))
			Expect(s.Spec.Containers[2].Env).To(Equal([]corev1.EnvVar{{Name: nvidiaEnv, Value: "none"}}), "an explicit none is kept")
			Expect(s.Spec.InitContainers[0].Env).To(blind())

			By("and leaves pods alone where the queue is not enforced")
			Expect(as(alice).Create(ctx, cpuPodWith(open, "free", withEnv("main")))).To(Succeed())
			Expect(storedPod(ctx, open, "free").Spec.Containers[0].Env).To(BeEmpty())
		})

		It("makes an admin's CPU containers blind too, next to a GPU container it leaves to the device plugin", func(ctx SpecContext) {
			p := cpuPodWith(enforced, "admin-mixed", withEnv("sidecar"))
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "train", Image: "x", Resources: gpuLimits(1)})
			Expect(as(carol).Create(ctx, p)).To(Succeed())
			s := storedPod(ctx, enforced, "admin-mixed")
			Expect(s.Spec.Containers[0].Env).To(blind())
			Expect(s.Spec.Containers[1].Env).To(BeEmpty())
		})

		DescribeTable("refuses a container without a GPU that sets NVIDIA_VISIBLE_DEVICES to anything but void or none",
			func(ctx SpecContext, env []corev1.EnvVar, shown string) {
				err := as(alice).Create(ctx, cpuPodWith(enforced, "sees-gpus", withEnv("ok"), withEnv("train", env...)))
				Expect(err).To(forbidden(gpuEnvPolicy,
					"pod sees-gpus: container train asks for no nvidia.com/gpu but has "+shown+" in namespace "+enforced+
						", where GPUs go through the fair-share queue (label cvlab.epfl.ch/queue-enforced=true): "+
						"the NVIDIA container runtime would show it GPUs that the queue gave to others. "+
						"Leave NVIDIA_VISIBLE_DEVICES out (it is set to void for you) or set it to void or none; "+
						"for GPUs, submit a CvlabJob with spec.gpus"))
			},
			Entry("all", []corev1.EnvVar{{Name: nvidiaEnv, Value: "all"}}, `NVIDIA_VISIBLE_DEVICES="all"`),
			Entry("an index", []corev1.EnvVar{{Name: nvidiaEnv, Value: "0"}}, `NVIDIA_VISIBLE_DEVICES="0"`),
			Entry("empty", []corev1.EnvVar{{Name: nvidiaEnv}}, `NVIDIA_VISIBLE_DEVICES=""`),
			Entry("a valueFrom", []corev1.EnvVar{{Name: nvidiaEnv, ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}}},
				`NVIDIA_VISIBLE_DEVICES=(valueFrom)`),
			Entry("void, then all (the last wins)", []corev1.EnvVar{{Name: nvidiaEnv, Value: "void"}, {Name: nvidiaEnv, Value: "all"}},
				`NVIDIA_VISIBLE_DEVICES="void" then "all"`),
		)

		It("refuses a GPU container that sets NVIDIA_VISIBLE_DEVICES itself, even the operator's", func(ctx SpecContext) {
			operator := as(person{operatorUser, []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNS}})
			p := gpuPod(enforced, "widened", 1)
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: cvlabv1alpha1.GroupVersion.String(), Kind: "CvlabJob",
				Name: "some-job", UID: "0b7b2f9e-4c1e-4f1b-9b7e-1a2b3c4d5e6f", Controller: ptr.To(true)}}
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: nvidiaEnv, Value: "all"}}
			Expect(operator.Create(ctx, p)).To(forbidden(gpuEnvPolicy,
				"pod widened: container train asks for nvidia.com/gpu and sets NVIDIA_VISIBLE_DEVICES in namespace "+enforced,
				"the device plugin sets it to the GPUs allocated, and the pod's own value would widen them. Remove NVIDIA_VISIBLE_DEVICES from the container"))
			By("nor a CPU pod of the operator's that would see GPUs")
			c := cpuPodWith(enforced, "cpu-sees", withEnv("job", corev1.EnvVar{Name: nvidiaEnv, Value: "all"}))
			c.OwnerReferences = p.OwnerReferences
			Expect(operator.Create(ctx, c)).To(forbidden(gpuEnvPolicy, "container job asks for no nvidia.com/gpu"))
		})

		It("lets a queue admin set it (debugging a node), as it lets them run raw GPU pods", func(ctx SpecContext) {
			p := cpuPodWith(enforced, "admin-all", withEnv("debug", corev1.EnvVar{Name: nvidiaEnv, Value: "all"}))
			Expect(as(carol).Create(ctx, p)).To(Succeed())
			v, _, _ := visibleDevices(storedPod(ctx, enforced, "admin-all").Spec.Containers[0].Env)
			Expect(v).To(Equal("all"))
		})

		It("covers containers added later with kubectl debug (ephemeral containers)", func(ctx SpecContext) {
			// Bob's GPU pod (an admin ran it; the same holds for a job's pod).
			Expect(as(carol).Create(ctx, gpuPod(enforced, "bobs-training", 2))).To(Succeed())
			debug := func(name string, env ...corev1.EnvVar) error {
				p := storedPod(ctx, enforced, "bobs-training")
				p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{
					EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: name, Image: "nvcr.io/nvidia/cuda:12.8.0-base-ubuntu24.04",
						Command: []string{"nvidia-smi"}, Env: env, TerminationMessagePolicy: corev1.TerminationMessageReadFile},
					TargetContainerName: "train",
				})
				return as(alice).SubResource("ephemeralcontainers").Update(ctx, p)
			}
			Expect(debug("peek", corev1.EnvVar{Name: nvidiaEnv, Value: "all"})).To(forbidden(gpuEnvPolicy,
				"pod bobs-training: container peek asks for no nvidia.com/gpu but has NVIDIA_VISIBLE_DEVICES=\"all\""))
			Expect(debug("shell")).To(Succeed())
			Expect(debug("shell-2", corev1.EnvVar{Name: "TERM", Value: "xterm"})).To(Succeed())
			s := storedPod(ctx, enforced, "bobs-training")
			Expect(s.Spec.EphemeralContainers).To(HaveLen(2))
			Expect(s.Spec.EphemeralContainers[0].Env).To(blind())
			Expect(s.Spec.EphemeralContainers[1].Env).To(Equal([]corev1.EnvVar{{Name: "TERM", Value: "xterm"}, {Name: nvidiaEnv, Value: "void"}}))
			Expect(s.Spec.Containers[0].Env).To(BeEmpty(), "the GPU container stays the device plugin's")
		})
	})

	Context("workloads in an enforced namespace", func() {
		It("refuses pod templates whose containers would see GPUs, and lets void through", func(ctx SpecContext) {
			d := gpuDeployment(enforced, "notebook", 0)
			d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: nvidiaEnv, Value: "all"}}
			Expect(as(alice).Create(ctx, d)).To(forbidden(gpuEnvWorkload,
				"Deployment notebook sets NVIDIA_VISIBLE_DEVICES in its pod template (container train, which asks for no nvidia.com/gpu) in namespace "+
					enforced+", where GPUs go through the fair-share queue (label cvlab.epfl.ch/queue-enforced=true)",
				"Leave NVIDIA_VISIBLE_DEVICES out (its pods get void) or set it to void or none; for GPUs, submit CvlabJobs"))

			cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: enforced, Name: "nightly"}, Spec: batchv1.CronJobSpec{
				Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
					Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, InitContainers: []corev1.Container{
						withEnv("prepare", corev1.EnvVar{Name: nvidiaEnv, Value: "0,1"})}, Containers: []corev1.Container{withEnv("main")}}}}}}}
			Expect(as(alice).Create(ctx, cj)).To(forbidden(gpuEnvWorkload, "CronJob nightly sets NVIDIA_VISIBLE_DEVICES in its pod template (container prepare"))

			By("admins too: their workloads' pods are created by controllers, which are not exempt")
			Expect(as(carol).Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: enforced, Name: "batch"},
				Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: cj.Spec.JobTemplate.Spec.Template.Spec}}})).To(
				forbidden(gpuEnvWorkload, "Job batch sets NVIDIA_VISIBLE_DEVICES"))

			d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: nvidiaEnv, Value: "void"}}
			Expect(as(alice).Create(ctx, d)).To(Succeed())
			d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: nvidiaEnv, Value: "all"}}
			Expect(as(alice).Update(ctx, d)).To(forbidden(gpuEnvWorkload, "Deployment notebook sets NVIDIA_VISIBLE_DEVICES"))
		})

		It("lets an update that keeps an older template through (controllers scale and annotate old ReplicaSets)", func(ctx SpecContext) {
			d := gpuDeployment(open, "legacy", 0)
			d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: nvidiaEnv, Value: "all"}}
			Expect(as(alice).Create(ctx, d)).To(Succeed())
			By("the namespace becoming enforced")
			var ns corev1.Namespace
			Expect(admin.Get(ctx, client.ObjectKey{Name: open}, &ns)).To(Succeed())
			ns.Labels[enforcedKey] = "true"
			Expect(admin.Update(ctx, &ns)).To(Succeed())
			Eventually(func() error {
				return as(alice).Create(ctx, cpuPodWith(open, "probe", withEnv("c", corev1.EnvVar{Name: nvidiaEnv, Value: "all"})), client.DryRunAll)
			}).Should(forbidden(gpuEnvPolicy))

			Expect(admin.Get(ctx, client.ObjectKeyFromObject(d), d)).To(Succeed())
			d.Spec.Replicas = ptr.To(int32(3))
			Expect(as(alice).Update(ctx, d)).To(Succeed())
			d.Spec.Template.Labels["rev"] = "2"
			Expect(as(alice).Update(ctx, d)).To(forbidden(gpuEnvWorkload, "Deployment legacy sets NVIDIA_VISIBLE_DEVICES"))
		})
	})

	It("type-check against every kind they match without a warning", func(ctx SpecContext) {
		dc, err := discovery.NewDiscoveryClientForConfig(adminCfg)
		Expect(err).NotTo(HaveOccurred())
		checker := &validating.TypeChecker{SchemaResolver: &resolver.ClientDiscoveryResolver{Discovery: dc}, RestMapper: admin.RESTMapper()}
		for _, name := range []string{"cvlab-queue-no-gpu-env", "cvlab-queue-no-gpu-env-workloads"} {
			var p admissionregistrationv1.ValidatingAdmissionPolicy
			Expect(admin.Get(ctx, client.ObjectKey{Name: name}, &p)).To(Succeed())
			Expect(checker.Check(&p)).To(BeEmpty(), name)
		}
	})
})
