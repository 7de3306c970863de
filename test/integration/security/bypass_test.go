package security_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
)

func gpuLimits(gpus int64) corev1.ResourceRequirements {
	if gpus == 0 {
		return corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}
	}
	return corev1.ResourceRequirements{Limits: corev1.ResourceList{controllers.ResourceGPU: *resource.NewQuantity(gpus, resource.DecimalSI)}}
}

func podSpec(gpus int64) corev1.PodSpec {
	return corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
		Containers: []corev1.Container{{Name: "train", Image: "lab-base:gpu", Resources: gpuLimits(gpus)}}}
}

// gpuPod is a raw pod with gpus nvidia.com/gpu (0: CPU only).
func gpuPod(ns, name string, gpus int64) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: podSpec(gpus)}
}

func gpuDeployment(ns, name string, gpus int64) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: func() corev1.PodSpec {
			s := podSpec(gpus)
			s.RestartPolicy = corev1.RestartPolicyAlways
			return s
		}()},
	}}
}

var _ = Describe("no GPUs around the queue in enforced namespaces", func() {
	var enforced, open string
	BeforeEach(func(ctx SpecContext) {
		enforced, open = newNamespace(ctx, true), newNamespace(ctx, false)
		// Lab members who may also create pods and workloads: RBAC alone would let them use GPUs.
		grantUser(ctx, enforced, workloadsRole)
		grantUser(ctx, open, workloadsRole)
	})

	It("refuses alice's raw GPU pod, pointing to CvlabJob", func(ctx SpecContext) {
		Expect(as(alice).Create(ctx, gpuPod(enforced, "raw-gpu", 2))).To(forbidden(podsPolicy,
			"pod raw-gpu asks for nvidia.com/gpu (container train) in namespace "+enforced+
				", where GPUs go through the fair-share queue (label cvlab.epfl.ch/queue-enforced=true): "+
				"submit it as a CvlabJob (apiVersion cvlab.epfl.ch/v1alpha1, kind CvlabJob; kubectl explain cvlabjob.spec)"))
	})

	DescribeTable("finds the GPUs wherever a pod asks for them",
		func(ctx SpecContext, mutate func(*corev1.Pod), container string) {
			p := gpuPod(enforced, "", 0)
			p.GenerateName = "sneaky-"
			mutate(p)
			Expect(as(alice).Create(ctx, p)).To(forbidden(podsPolicy, "asks for nvidia.com/gpu (container "+container+")"))
		},
		Entry("requests and limits", func(p *corev1.Pod) {
			one := corev1.ResourceList{controllers.ResourceGPU: resource.MustParse("1")}
			p.Spec.Containers[0].Resources = corev1.ResourceRequirements{Requests: one, Limits: one}
		}, "train"),
		Entry("an init container", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "warmup", Image: "x", Resources: gpuLimits(1)}}
		}, "warmup"),
		Entry("a second container", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Image: "x", Resources: gpuLimits(1)})
		}, "sidecar"),
	)

	It("refuses workloads whose pods would ask for GPUs", func(ctx SpecContext) {
		Expect(as(alice).Create(ctx, gpuDeployment(enforced, "notebook", 1))).To(forbidden(workPolicy,
			"Deployment notebook asks for nvidia.com/gpu in its pod template (container train) in namespace "+enforced,
			"submit the work as CvlabJobs"))
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: enforced, Name: "batch"},
			Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: podSpec(1)}}}
		Expect(as(alice).Create(ctx, j)).To(forbidden(workPolicy, "Job batch asks for nvidia.com/gpu"))
		// Adding GPUs later is refused too.
		d := gpuDeployment(enforced, "web", 0)
		Expect(as(alice).Create(ctx, d)).To(Succeed())
		d.Spec.Template.Spec.Containers[0].Resources = gpuLimits(1)
		Expect(as(alice).Update(ctx, d)).To(forbidden(workPolicy, "Deployment web asks for nvidia.com/gpu"))
	})

	It("lets CPU pods through, and GPU pods in namespaces that are not enforced", func(ctx SpecContext) {
		Expect(as(alice).Create(ctx, gpuPod(enforced, "cpu-only", 0))).To(Succeed())
		Expect(as(alice).Create(ctx, gpuPod(open, "gpu-elsewhere", 1))).To(Succeed())
		Expect(as(alice).Create(ctx, gpuDeployment(open, "gpu-elsewhere", 1))).To(Succeed())
	})

	It("lets a queue admin override with a raw GPU pod", func(ctx SpecContext) {
		Expect(as(carol).Create(ctx, gpuPod(enforced, "admin-debug", 1))).To(Succeed())
	})

	It("narrows the operator to the pods of CvlabJobs, without host access", func(ctx SpecContext) {
		operator := as(person{operatorUser, []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNS}})
		Expect(operator.Create(ctx, gpuPod(open, "stray", 1))).To(forbidden(opPolicy,
			"the operator "+operatorUser+" may only create pods controlled by a CvlabJob, and pod "+open+"/stray is not one"))
		owned := gpuPod(open, "owned", 1)
		owned.OwnerReferences = []metav1.OwnerReference{{APIVersion: cvlabv1alpha1.GroupVersion.String(), Kind: "CvlabJob",
			Name: "some-job", UID: "0b7b2f9e-4c1e-4f1b-9b7e-1a2b3c4d5e6f", Controller: ptr.To(true)}}
		owned.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		Expect(operator.Create(ctx, owned)).To(forbidden(opPolicy, "the operator may not create pods with host access or privileges: volume root"))
		owned.Spec.Volumes = nil
		owned.Spec.HostNetwork = true
		Expect(operator.Create(ctx, owned)).To(forbidden(opPolicy, "host access or privileges: hostNetwork"))

		Expect(as(carol).Create(ctx, gpuPod(open, "carols", 1))).To(Succeed())
		Expect(operator.Delete(ctx, gpuPod(open, "carols", 0))).To(forbidden(opPolicy,
			"may only delete pods controlled by a CvlabJob, and pod "+open+"/carols is not one"))
	})

	It("lets the operator create the pods of CvlabJobs, and write their status", func(ctx SpecContext) {
		Expect(as(alice).Create(ctx, job(enforced, "queued", "", 2))).To(Succeed())
		Eventually(func(g Gomega) {
			var j cvlabv1alpha1.CvlabJob
			g.Expect(admin.Get(ctx, types.NamespacedName{Namespace: enforced, Name: "queued"}, &j)).To(Succeed())
			g.Expect(j.Status.Phase).To(Equal(cvlabv1alpha1.PhaseAdmitted))
			var p corev1.Pod
			g.Expect(admin.Get(ctx, types.NamespacedName{Namespace: enforced, Name: j.Status.PodName}, &p)).To(Succeed())
			g.Expect(p.Spec.Containers[0].Resources.Limits).To(HaveKeyWithValue(controllers.ResourceGPU, resource.MustParse("2")))
			g.Expect(p.Labels).To(HaveKeyWithValue(controllers.LabelUser, "alice"))
		}).Should(Succeed())

		By("and delete them: alice suspends her job")
		var j cvlabv1alpha1.CvlabJob
		Expect(admin.Get(ctx, types.NamespacedName{Namespace: enforced, Name: "queued"}, &j)).To(Succeed())
		Expect(patchSpec(ctx, as(alice), enforced, "queued", `{"suspend":true}`)).To(Succeed())
		Eventually(func() error {
			return admin.Get(ctx, types.NamespacedName{Namespace: enforced, Name: j.Status.PodName}, &corev1.Pod{})
		}).Should(WithTransform(apierrors.IsNotFound, BeTrue()))
		Eventually(func() (cvlabv1alpha1.JobPhase, error) {
			err := admin.Get(ctx, types.NamespacedName{Namespace: enforced, Name: "queued"}, &j)
			return j.Status.Phase, err
		}).Should(Equal(cvlabv1alpha1.PhaseSuspended))
	})
})
