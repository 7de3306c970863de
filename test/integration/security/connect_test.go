package security_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/cli"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

const (
	connectPolicy = "'cvlab-queue-job-pod-connect'"
	// connectRole is what some lab members have besides cvlab-user (the built-in edit role has
	// it): attach, the API server's proxy to a pod's ports, debug containers (test-only).
	connectRole = "test-pod-connect"
)

// connect sends one CONNECT request (exec, attach, portforward, proxy) as p to pod, the way
// kubectl's streams start: admission runs before the API server contacts the kubelet, so a refusal
// is 403 Forbidden, and an allowed request fails afterwards on envtest, which has no kubelet.
func connect(ctx context.Context, p person, method, ns, pod, sub string) error {
	cfg := rest.CopyConfig(adminCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: p.username, Groups: p.groups}
	cs, err := kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())
	req := cs.CoreV1().RESTClient().Verb(method).Resource("pods").Namespace(ns).Name(pod).SubResource(sub)
	switch sub {
	case "exec":
		req.VersionedParams(&corev1.PodExecOptions{Container: controllers.ContainerName, Command: []string{"true"}, Stdout: true}, clientgoscheme.ParameterCodec)
	case "attach":
		req.VersionedParams(&corev1.PodAttachOptions{Container: controllers.ContainerName, Stdout: true}, clientgoscheme.ParameterCodec)
	case "portforward":
		req.VersionedParams(&corev1.PodPortForwardOptions{Ports: []int32{8888}}, clientgoscheme.ParameterCodec)
	case "proxy": // the API server's proxy to port 8888 (Jupyter), named pod:port
		req = cs.CoreV1().RESTClient().Verb(method).Resource("pods").Namespace(ns).Name(pod + ":8888").SubResource("proxy").Suffix("lab")
	}
	if method == "GET" {
		// A WebSocket upgrade, as kubectl's first try: the API server authorizes it as create.
		req.SetHeader("Connection", "Upgrade").SetHeader("Upgrade", "websocket").SetHeader("Sec-WebSocket-Version", "13").
			SetHeader("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==").SetHeader("Sec-WebSocket-Protocol", "v5.channel.k8s.io")
	}
	return req.Do(ctx).Error()
}

// debugContainer adds a debug container to pod as p (kubectl debug), server dry run.
func debugContainer(ctx context.Context, p person, ns, pod string) error {
	var live corev1.Pod
	Expect(admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: pod}, &live)).To(Succeed())
	live.Spec.EphemeralContainers = append(live.Spec.EphemeralContainers, corev1.EphemeralContainer{
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox", Stdin: true, TTY: true},
		TargetContainerName:      controllers.ContainerName,
	})
	return as(p).SubResource("ephemeralcontainers").Update(ctx, &live, client.DryRunAll)
}

// reachedThePod matches an allowed CONNECT on envtest: not refused (neither by RBAC nor by a
// policy), failing only because the pod has no node and so no kubelet.
func reachedThePod() OmegaMatcher {
	return SatisfyAll(HaveOccurred(), WithTransform(apierrors.IsForbidden, BeFalse()),
		MatchError(ContainSubstring("does not have a host assigned")))
}

// podOf waits for the pod the operator created for job, and returns its name.
func podOf(ctx context.Context, ns, name string) string {
	GinkgoHelper()
	var pod string
	Eventually(func(g Gomega) {
		var j cvlabv1alpha1.CvlabJob
		g.Expect(admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &j)).To(Succeed())
		g.Expect(j.Status.PodName).NotTo(BeEmpty())
		g.Expect(admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: j.Status.PodName}, &corev1.Pod{})).To(Succeed())
		pod = j.Status.PodName
	}).Should(Succeed())
	return pod
}

func paramsData(ctx context.Context) map[string]string {
	var cm corev1.ConfigMap
	Expect(admin.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: validation.ParamsName}, &cm)).To(Succeed())
	return cm.Data
}

// startRunning plays the kubelet: the job's pod runs (without a node: envtest has none), and the
// operator says so in the job's status.
func startRunning(ctx context.Context, ns, job, pod string) {
	GinkgoHelper()
	Eventually(func() error {
		var p corev1.Pod
		if err := admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: pod}, &p); err != nil {
			return err
		}
		now := metav1.Now()
		p.Status.Phase, p.Status.StartTime = corev1.PodRunning, &now
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: controllers.ContainerName, Image: p.Spec.Containers[0].Image,
			Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}
		return admin.Status().Update(ctx, &p)
	}).Should(Succeed())
	Eventually(func(g Gomega) {
		var j cvlabv1alpha1.CvlabJob
		g.Expect(admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: job}, &j)).To(Succeed())
		g.Expect(j.Status.Phase).To(Equal(cvlabv1alpha1.PhaseRunning))
	}).Should(Succeed())
}

// kubectlCvlab runs `kubectl cvlab args...` as p (in process, with a kubeconfig of its own),
// with an empty standard input that is no terminal; it returns the error it would print.
func kubectlCvlab(ctx context.Context, p person, args ...string) (string, error) {
	dir := GinkgoT().TempDir()
	kubeconfig, config := filepath.Join(dir, "kubeconfig"), filepath.Join(dir, "config.yaml")
	Expect(clientcmd.WriteToFile(clientcmdapi.Config{
		Clusters: map[string]*clientcmdapi.Cluster{"envtest": {Server: adminCfg.Host, CertificateAuthorityData: adminCfg.CAData}},
		AuthInfos: map[string]*clientcmdapi.AuthInfo{"me": {ClientCertificateData: adminCfg.CertData, ClientKeyData: adminCfg.KeyData,
			Impersonate: p.username, ImpersonateGroups: p.groups}},
		Contexts:       map[string]*clientcmdapi.Context{"me": {Cluster: "envtest", AuthInfo: "me"}},
		CurrentContext: "me",
	}, kubeconfig)).To(Succeed())
	Expect(os.WriteFile(config, nil, 0o600)).To(Succeed())
	var out, errOut bytes.Buffer
	cmd := cli.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(append([]string{"--kubeconfig=" + kubeconfig, "--config=" + config}, args...))
	err := cmd.ExecuteContext(ctx)
	return out.String() + errOut.String(), err
}

var _ = Describe("only a job's owner gets into its pod: a pod whose owner cannot be published", Serial, func() {
	It("is not created until it can be, and its job says why", func(ctx SpecContext) {
		ns := newNamespace(ctx, false)
		By("the manager losing its right to write the params (its RoleBinding deleted)")
		binding := installedObject("RoleBinding", "cvlab-queue-admission-params")
		Expect(admin.Delete(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: binding.GetName()}})).To(Succeed())
		restored := false
		DeferCleanup(func(ctx context.Context) {
			if !restored {
				applyObject(ctx, binding, "kubectl")
			}
		})
		Expect(as(bob).Create(ctx, job(ns, "bob-notebook", "", 0))).To(Succeed())
		Eventually(func(g Gomega) {
			var j cvlabv1alpha1.CvlabJob
			g.Expect(admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: "bob-notebook"}, &j)).To(Succeed())
			g.Expect(j.Status.Phase).To(Equal(cvlabv1alpha1.PhaseQueued))
			g.Expect(j.Status.WaitingReason).To(Equal(cvlabv1alpha1.WaitingBackingOff))
			g.Expect(j.Status.Message).To(ContainSubstring("the pod could not be created, will retry after"))
			g.Expect(j.Status.Message).To(ContainSubstring("its owner could not be published for the exec/attach/port-forward policy"))
		}).Should(Succeed())
		var pods corev1.PodList
		Expect(admin.List(ctx, &pods, client.InNamespace(ns))).To(Succeed())
		Expect(pods.Items).To(BeEmpty(), "no pod without its owner published")

		By("the right back: the job starts after its backoff, its owner published first")
		applyObject(ctx, binding, "kubectl")
		restored = true
		pod := podOf(ctx, ns, "bob-notebook")
		Expect(paramsData(ctx)).To(HaveKeyWithValue("pod."+ns+"."+pod, "bob"))
	})
})

var _ = Describe("only a job's owner gets into its pod (exec, attach, port-forward)", Ordered, func() {
	// A shared namespace (not enforced): alice and bob are both cvlab-users there.
	var ns, alicePod, bobPod string
	david := person{"oidc:david", []string{usersGroup}}

	BeforeAll(func(ctx SpecContext) {
		ns = newNamespace(ctx, false)
		create(ctx, admin, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: connectRole}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods/attach", "pods/proxy"}, Verbs: []string{"get", "create"}},
			{APIGroups: []string{""}, Resources: []string{"pods/ephemeralcontainers"}, Verbs: []string{"update", "patch"}},
		}})
		DeferCleanup(func(ctx context.Context) {
			Expect(admin.Delete(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: connectRole}})).To(Succeed())
		})
		grantUser(ctx, ns, connectRole)
		Expect(as(alice).Create(ctx, job(ns, "alice-train", "", 0))).To(Succeed())
		Expect(as(bob).Create(ctx, job(ns, "bob-jupyter", "", 0))).To(Succeed())
		alicePod, bobPod = podOf(ctx, ns, "alice-train"), podOf(ctx, ns, "bob-jupyter")

		By("the policy acting (it takes a moment after its creation)")
		Eventually(func() error { return connect(ctx, alice, "POST", ns, bobPod, "exec") }).Should(forbidden(connectPolicy))
	})

	It("publishes each pod's owner before the pod exists, as the operator's own field manager", func(ctx SpecContext) {
		// Seen as soon as the pod is: the operator wrote it before creating the pod.
		Expect(as(david).Create(ctx, job(ns, "david-eval", "", 0))).To(Succeed())
		var davidPod string
		Eventually(func(g Gomega) {
			var pods corev1.PodList
			g.Expect(admin.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{controllers.LabelJob: "david-eval"})).To(Succeed())
			g.Expect(pods.Items).NotTo(BeEmpty())
			davidPod = pods.Items[0].Name
		}).Should(Succeed())
		Expect(paramsData(ctx)).To(HaveKeyWithValue("pod."+ns+"."+davidPod, "david"), "the pod exists, its owner must be published already")

		data := paramsData(ctx)
		Expect(data).To(HaveKeyWithValue("pod."+ns+"."+alicePod, "alice"))
		Expect(data).To(HaveKeyWithValue("pod."+ns+"."+bobPod, "bob"))

		var cm corev1.ConfigMap
		Expect(admin.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: validation.ParamsName}, &cm)).To(Succeed())
		var owned string
		for _, f := range cm.ManagedFields {
			if f.Manager == controllers.PodOwnersFieldManager {
				owned = string(f.FieldsV1.Raw)
			} else {
				Expect(string(f.FieldsV1.Raw)).NotTo(ContainSubstring(`"f:pod.`), "%s owns pod owner keys", f.Manager)
			}
		}
		Expect(owned).To(ContainSubstring(`"f:pod.` + ns + `.` + bobPod + `"`))
		Expect(strings.Count(owned, `"f:`)-1).To(Equal(strings.Count(owned, `"f:pod.`)), "the operator owns pod owner keys only: %s", owned)

		By("re-applying config/policies (kubectl, GitOps) keeps them")
		applyObject(ctx, installedObject("ConfigMap", validation.ParamsName), "kubectl")
		Expect(paramsData(ctx)).To(HaveKeyWithValue("pod."+ns+"."+bobPod, "bob"))

		By("the entry goes with the pod")
		Expect(deleteJob(ctx, as(david), ns, "david-eval")).To(Succeed())
		Eventually(func() map[string]string { return paramsData(ctx) }).ShouldNot(HaveKey("pod." + ns + "." + davidPod))
	})

	DescribeTable("refuses alice in bob's pod, naming the rule and the way out",
		func(ctx SpecContext, method, sub, what string) {
			Expect(connect(ctx, alice, method, ns, bobPod, sub)).To(forbidden(connectPolicy,
				`pod `+ns+`/`+bobPod+` runs a CvlabJob of "bob" and you are "alice" (username "oidc:alice"): only the job's owner bob`+
					` and queue admins (groups cvlab-admins) may exec/attach/port-forward into its pod, so you cannot `+what+` it;`+
					` read its logs with kubectl logs -n `+ns+` `+bobPod+` and its events with kubectl get events -n `+ns))
		},
		Entry("exec over SPDY (POST)", "POST", "exec", "exec into"),
		Entry("exec over WebSocket (GET)", "GET", "exec", "exec into"),
		Entry("attach", "POST", "attach", "attach to"),
		Entry("port-forward", "POST", "portforward", "port-forward to"),
		Entry("port-forward over WebSocket", "GET", "portforward", "port-forward to"),
		Entry("the API server's proxy to its ports", "GET", "proxy", "proxy to"),
	)

	It("refuses alice a debug container in bob's pod (kubectl debug)", func(ctx SpecContext) {
		Expect(debugContainer(ctx, alice, ns, bobPod)).To(forbidden(connectPolicy, "so you cannot add debug containers to it"))
		Expect(debugContainer(ctx, bob, ns, bobPod)).To(Succeed())
		Expect(debugContainer(ctx, carol, ns, bobPod)).To(Succeed())
	})

	DescribeTable("lets the owner and queue admins in (on envtest they fail later: no kubelet)",
		func(ctx SpecContext, sub string) {
			Expect(connect(ctx, bob, "POST", ns, bobPod, sub)).To(reachedThePod(), "bob into his own pod")
			Expect(connect(ctx, alice, "POST", ns, alicePod, sub)).To(reachedThePod(), "alice into her own pod")
			Expect(connect(ctx, carol, "POST", ns, bobPod, sub)).To(reachedThePod(), "a queue admin")
		},
		Entry(nil, "exec"), Entry(nil, "attach"), Entry(nil, "portforward"),
	)

	It("leaves the pods that are not the queue's to RBAC", func(ctx SpecContext) {
		create(ctx, admin, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shared-tools"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: controllers.ContainerName, Image: "tools"}}}})
		Expect(connect(ctx, alice, "POST", ns, "shared-tools", "exec")).To(reachedThePod())
	})

	It("still lets the lab read bob's logs and events", func(ctx SpecContext) {
		Expect(can(ctx, as(alice), "get", "pods/log", ns, bobPod)).To(BeTrue())
		cfg := rest.CopyConfig(adminCfg)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: alice.username, Groups: alice.groups}
		cs, err := kubernetes.NewForConfig(cfg)
		Expect(err).NotTo(HaveOccurred())
		_, err = cs.CoreV1().Pods(ns).GetLogs(bobPod, &corev1.PodLogOptions{Container: controllers.ContainerName}).DoRaw(ctx)
		Expect(apierrors.IsForbidden(err)).To(BeFalse(), "reading logs is not refused: %v", err)
		Expect(as(alice).List(ctx, &corev1.EventList{}, client.InNamespace(ns))).To(Succeed())
		Expect(as(alice).Get(ctx, types.NamespacedName{Namespace: ns, Name: bobPod}, &corev1.Pod{})).To(Succeed())
	})

	It("kubectl cvlab shell and port-forward: the cluster's refusal for alice, bob's own pod reached", func(ctx SpecContext) {
		_, err := kubectlCvlab(ctx, bob, "-n", ns, "shell", "bob-jupyter")
		Expect(err).To(MatchError(`cvlabjob "bob-jupyter" is admitted but its pod ` + bobPod +
			` has not started yet: try again once kubectl cvlab queue shows it Running`))

		startRunning(ctx, ns, "bob-jupyter", bobPod)
		_, err = kubectlCvlab(ctx, alice, "-n", ns, "shell", "bob-jupyter")
		Expect(err).To(MatchError(ContainSubstring(`not allowed to open a shell in pod ` + bobPod + ` of cvlabjob "bob-jupyter": ` +
			`ValidatingAdmissionPolicy ` + connectPolicy)))
		Expect(err).To(MatchError(ContainSubstring(`only the job's owner bob and queue admins (groups cvlab-admins) may exec/attach/port-forward into its pod`)))
		_, err = kubectlCvlab(ctx, alice, "-n", ns, "port-forward", "bob-jupyter", "0:8888")
		Expect(err).To(MatchError(ContainSubstring(`not allowed to port-forward to pod ` + bobPod + ` of cvlabjob "bob-jupyter": ` +
			`ValidatingAdmissionPolicy ` + connectPolicy)))

		_, err = kubectlCvlab(ctx, bob, "-n", ns, "shell", "bob-jupyter", "--", "nvidia-smi")
		Expect(err).To(MatchError(ContainSubstring(`cannot open a shell in pod ` + bobPod + ` of cvlabjob "bob-jupyter"`)))
		Expect(err).To(MatchError(ContainSubstring("does not have a host assigned")))
		Expect(err).NotTo(MatchError(ContainSubstring("not allowed")))
		_, err = kubectlCvlab(ctx, bob, "-n", ns, "port-forward", "bob-jupyter", "0:8888")
		Expect(err).To(MatchError(ContainSubstring(`cannot port-forward to pod ` + bobPod + ` of cvlabjob "bob-jupyter"`)))
		Expect(err).To(MatchError(ContainSubstring("does not have a host assigned")))
	})

	It("type-checks against the API server's OpenAPI without a warning", func(ctx SpecContext) {
		dc, err := discovery.NewDiscoveryClientForConfig(adminCfg)
		Expect(err).NotTo(HaveOccurred())
		checker := &validating.TypeChecker{SchemaResolver: &resolver.ClientDiscoveryResolver{Discovery: dc}, RestMapper: admin.RESTMapper()}
		var p admissionregistrationv1.ValidatingAdmissionPolicy
		Expect(admin.Get(ctx, client.ObjectKey{Name: "cvlab-queue-job-pod-connect"}, &p)).To(Succeed())
		Expect(checker.Check(&p)).To(BeEmpty())
	})
})
