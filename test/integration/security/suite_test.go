// Package security_test checks docs/security.md on a real kube-apiserver: the admission policies of
// config/policies and the roles of config/rbac, installed exactly as `kubectl apply -k
// config/default` renders them, with the operator's real binary running as its service account,
// and people acting through impersonation.
package security_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

// Names as config/default installs them.
const (
	operatorNS   = "cvlab-queue-system"
	operatorSA   = "cvlab-queue-controller-manager"
	operatorUser = "system:serviceaccount:" + operatorNS + ":" + operatorSA
	userRole     = "cvlab-user"
	adminRole    = "cvlab-admin"
	readerRole   = "cvlab-queue-metrics-reader"
	usersGroup   = "cvlab-users"
	adminsGroup  = "cvlab-admins" // the default of --admin-groups
	enforcedKey  = "cvlab.epfl.ch/queue-enforced"
	ownerPolicy  = "'cvlab-queue-job-owner'"
	podsPolicy   = "'cvlab-queue-no-gpu-pods'"
	workPolicy   = "'cvlab-queue-no-gpu-workloads'"
	specPolicy   = "'cvlab-queue-job-spec'"
	opPolicy     = "'cvlab-queue-operator-pods'"
	// workloadsRole lets people create pods and workloads directly (test-only).
	workloadsRole = "test-workloads"
)

var (
	env        *envtest.Environment
	admin      client.Client // system:masters
	adminCfg   *rest.Config
	root       string
	managerBin string
	mgr        *managerProcess
	// Installed is every object of config/default the suite applied (all but the CRD, which
	// envtest installs, and the Deployment and Service, which nothing would run here).
	installed []*unstructured.Unstructured
)

func TestSecurity(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Security suite: identity, no queue bypass, least privilege")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	Expect(os.Getenv("KUBEBUILDER_ASSETS")).NotTo(BeEmpty(),
		"KUBEBUILDER_ASSETS is not set: run the suites with `make test`, which builds the control plane into bin/k8s/")
	_, file, _, _ := runtime.Caller(0)
	root = filepath.Join(filepath.Dir(file), "..", "..", "..")

	// The manager binary, built while the control plane starts.
	managerBin = filepath.Join(GinkgoT().TempDir(), "manager")
	built := make(chan error, 1)
	go func() {
		cmd := exec.Command("go", "build", "-o", managerBin, "./cmd")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build ./cmd: %w\n%s", err, out)
		}
		built <- err
	}()

	// kube-apiserver v1.37 serves admissionregistration.k8s.io/v1 MutatingAdmissionPolicy (GA
	// in 1.36) and ValidatingAdmissionPolicy by default: no --runtime-config or feature gate.
	env = &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	adminCfg, err = env.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { Expect(env.Stop()).To(Succeed()) })
	adminCfg.QPS, adminCfg.Burst = 1000, 2000
	admin, err = client.New(adminCfg, client.Options{Scheme: framework.Scheme})
	Expect(err).NotTo(HaveOccurred())

	installConfigDefault(ctx)
	// What lab members may have besides cvlab-user in some namespaces (like the built-in
	// edit role, whose rules envtest leaves empty: it has no aggregation controller).
	create(ctx, admin, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: workloadsRole}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create", "get", "list", "delete"}},
		{APIGroups: []string{"apps", "batch"}, Resources: []string{"deployments", "jobs"}, Verbs: []string{"create", "get", "update", "delete"}},
	}})
	// The lab's admins, bound as docs/security.md says.
	create(ctx, admin, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "cvlab-admins"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: adminRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: adminsGroup}},
	})

	Eventually(built, 5*time.Minute).Should(Receive(BeNil()))
	mgr = startManager()
	DeferCleanup(func() { mgr.stop() })
	// Before any job, pod or node exists: nothing asks the manager for a decision yet, and it
	// still publishes its settings (it once published a zero value, "no GPUs", until a decision).
	expectPublished(ctx)
	waitForPolicies(ctx)
}, NodeTimeout(10*time.Minute))

// installConfigDefault renders config/default with kustomize (what `kubectl apply -k` does) and
// server-side applies what can live in envtest.
func installConfigDefault(ctx context.Context) {
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(root, "config", "default"))
	Expect(err).NotTo(HaveOccurred())
	for _, r := range resources.Resources() {
		switch r.GetKind() {
		case "CustomResourceDefinition", "Deployment", "Service":
			continue
		}
		y, err := r.AsYAML()
		Expect(err).NotTo(HaveOccurred())
		u := &unstructured.Unstructured{}
		Expect(yaml.Unmarshal(y, &u.Object)).To(Succeed())
		installed = append(installed, u)
	}
	// Namespaces first.
	for _, u := range installed {
		if u.GetKind() == "Namespace" {
			applyObject(ctx, u, "kubectl")
		}
	}
	for _, u := range installed {
		if u.GetKind() != "Namespace" {
			applyObject(ctx, u, "kubectl")
		}
	}
}

// applyObject server-side applies a copy of u as fieldManager, like `kubectl apply --server-side`.
func applyObject(ctx context.Context, u *unstructured.Unstructured, fieldManager string) {
	u = u.DeepCopy()
	Expect(admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fieldManager), client.ForceOwnership)).
		To(Succeed(), "applying %s %s", u.GetKind(), u.GetName())
}

func installedObject(kind, name string) *unstructured.Unstructured {
	for _, u := range installed {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	Fail(fmt.Sprintf("config/default has no %s %s", kind, name))
	return nil
}

// waitForPolicies waits until each policy acts, probing with dry-run requests: a policy takes a
// moment after its creation (informers, compilation) before the API server enforces it.
func waitForPolicies(ctx context.Context) {
	ns := newNamespace(ctx, true)
	grantUser(ctx, ns, workloadsRole) // raw pods and Deployments for the probes
	By("the manager writing its --admin-groups into the params")
	Eventually(func(g Gomega) {
		var cm corev1.ConfigMap
		g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: validation.ParamsName}, &cm)).To(Succeed())
		g.Expect(cm.Data).To(HaveKeyWithValue(validation.KeyAdminGroups, adminsGroup))
	}).Should(Succeed())
	By("job-owner refusing alice's job as bob")
	Eventually(func() error {
		return as(alice).Create(ctx, job(ns, "probe", "bob", 0), client.DryRunAll)
	}).Should(MatchError(ContainSubstring(ownerPolicy)))
	By("job-owner-default setting an omitted spec.user")
	Eventually(func(g Gomega) {
		j := job(ns, "probe", "", 0)
		g.Expect(as(alice).Create(ctx, j, client.DryRunAll)).To(Succeed())
		g.Expect(j.Spec.User).To(Equal("alice"))
	}).Should(Succeed())
	By("job-owner letting an admin submit for bob")
	Eventually(func() error {
		return as(carol).Create(ctx, job(ns, "probe", "bob", 0), client.DryRunAll)
	}).Should(Succeed())
	By("job-spec refusing a job whose pod would be invalid")
	Eventually(func() error {
		j := job(ns, "probe", "", 0)
		j.Spec.PodLabels = map[string]string{"bad key": "x"}
		return as(alice).Create(ctx, j, client.DryRunAll)
	}).Should(MatchError(ContainSubstring(specPolicy)))
	By("operator-pods refusing the operator a pod that is not a job's")
	Eventually(func() error {
		operator := as(person{operatorUser, []string{"system:serviceaccounts"}})
		return operator.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, client.DryRunAll)
	}).Should(MatchError(ContainSubstring(opPolicy)))
	By("no-gpu-pods refusing a raw GPU pod")
	Eventually(func() error {
		return as(alice).Create(ctx, gpuPod(ns, "probe", 1), client.DryRunAll)
	}).Should(MatchError(ContainSubstring(podsPolicy)))
	By("no-gpu-workloads refusing a GPU Deployment")
	Eventually(func() error {
		return as(alice).Create(ctx, gpuDeployment(ns, "probe", 1), client.DryRunAll)
	}).Should(MatchError(ContainSubstring(workPolicy)))
	By("job-spec refusing a job whose pod would be invalid")
	Eventually(func() error {
		j := job(ns, "probe", "", 0)
		j.Spec.PodLabels = map[string]string{"not a key": "x"}
		return as(alice).Create(ctx, j, client.DryRunAll)
	}).Should(MatchError(ContainSubstring(specPolicy)))
}

// ---------------------------------------------------------------------------------------------
// People.

type person struct {
	username string
	groups   []string
}

var (
	alice = person{"oidc:alice", []string{usersGroup}}
	bob   = person{"oidc:bob", []string{usersGroup}}
	carol = person{"oidc:carol", []string{usersGroup, adminsGroup}} // a queue admin
)

// as is a client acting as p through impersonation (the admin may impersonate anyone).
func as(p person) client.Client {
	cfg := rest.CopyConfig(adminCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: p.username, Groups: p.groups}
	c, err := client.New(cfg, client.Options{Scheme: framework.Scheme})
	Expect(err).NotTo(HaveOccurred())
	return c
}

// newNamespace creates a namespace, enforced or not, where the group cvlab-users has the shipped
// cvlab-user role (per-namespace binding, as docs/security.md suggests).
func newNamespace(ctx context.Context, enforced bool) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "cvlab-sec-"}}
	if enforced {
		ns.Labels = map[string]string{enforcedKey: "true"}
	}
	Expect(admin.Create(ctx, ns)).To(Succeed())
	grantUser(ctx, ns.Name, userRole)
	return ns.Name
}

// grantUser binds a ClusterRole to the group cvlab-users in ns.
func grantUser(ctx context.Context, ns, clusterRole string) {
	create(ctx, admin, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cvlab-users-" + clusterRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: usersGroup}},
	})
}

func create(ctx context.Context, c client.Client, obj client.Object) {
	GinkgoHelper()
	Expect(c.Create(ctx, obj)).To(Succeed())
}

// job is a CvlabJob; user "" leaves spec.user out (as far as the typed client can: it sends "").
func job(ns, name, user string, gpus int32) *cvlabv1alpha1.CvlabJob {
	return framework.Job(ns, name, user, gpus)
}

// ---------------------------------------------------------------------------------------------
// The operator, run as its service account.

type managerProcess struct {
	cmd         *exec.Cmd
	done        chan struct{}
	dir         string
	metricsAddr string
	out         *syncBuffer
}

// startManager runs the manager binary with args added to the suite's, impersonating the
// operator's service account, so that it has exactly the shipped roles.
func startManager(args ...string) *managerProcess {
	dir, err := os.MkdirTemp("", "cvlab-manager-")
	Expect(err).NotTo(HaveOccurred())
	kubeconfig := filepath.Join(dir, "kubeconfig")
	Expect(clientcmd.WriteToFile(clientcmdapi.Config{
		Clusters: map[string]*clientcmdapi.Cluster{"envtest": {Server: adminCfg.Host, CertificateAuthorityData: adminCfg.CAData}},
		AuthInfos: map[string]*clientcmdapi.AuthInfo{"operator": {
			ClientCertificateData: adminCfg.CertData, ClientKeyData: adminCfg.KeyData, Impersonate: operatorUser,
		}},
		Contexts:       map[string]*clientcmdapi.Context{"operator": {Cluster: "envtest", AuthInfo: "operator"}},
		CurrentContext: "operator",
	}, kubeconfig)).To(Succeed())
	m := &managerProcess{done: make(chan struct{}), dir: dir, metricsAddr: freeAddr(), out: &syncBuffer{}}
	all := append([]string{"--kubeconfig=" + kubeconfig, "--gpu-capacity=8", "--dashboard-bind-address=0",
		"--health-probe-bind-address=0", "--metrics-bind-address=" + m.metricsAddr, "--metrics-secure"}, args...)
	m.cmd = exec.Command(managerBin, all...)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	m.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+operatorNS)
	Expect(m.cmd.Start()).To(Succeed())
	go func() { _ = m.cmd.Wait(); close(m.done) }()
	return m
}

// stop ends the manager this suite started (its own process only) and shows its log.
func (m *managerProcess) stop() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	GinkgoWriter.Printf("manager %v log:\n%s\n", m.cmd.Args[1:], m.out.String())
	_ = os.RemoveAll(m.dir)
}

// metricsGet scrapes the manager's HTTPS metrics endpoint with a bearer token ("" for none).
func (m *managerProcess) metricsGet(token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "https://"+m.metricsAddr+"/metrics", nil)
	Expect(err).NotTo(HaveOccurred())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the manager's self-signed certificate
	}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String(), nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

// forbidden matches an admission denial by policy whose message holds every part.
func forbidden(policy string, parts ...string) OmegaMatcher {
	ms := []OmegaMatcher{WithTransform(apierrors.IsForbidden, BeTrue()), MatchError(ContainSubstring("ValidatingAdmissionPolicy " + policy))}
	for _, p := range parts {
		ms = append(ms, MatchError(ContainSubstring(p)))
	}
	return SatisfyAll(ms...)
}

// invalid matches a refusal by policy (reason Invalid, 422) whose message holds every part.
func invalid(policy string, parts ...string) OmegaMatcher {
	ms := []OmegaMatcher{WithTransform(apierrors.IsInvalid, BeTrue()), MatchError(ContainSubstring("ValidatingAdmissionPolicy " + policy))}
	for _, p := range parts {
		ms = append(ms, MatchError(ContainSubstring(p)))
	}
	return SatisfyAll(ms...)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
