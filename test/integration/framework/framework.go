// Package framework starts a real control plane (kube-apiserver and etcd built by hack/build-k8s.sh)
// with the CvlabJob CRD, and the operator's manager on it, for the Ginkgo integration suites.
package framework

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
)

// Scheme knows the built-in types and the CvlabJob API.
var Scheme = k8sruntime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(cvlabv1alpha1.AddToScheme(Scheme))
}

// Framework is one control plane shared by a suite.
type Framework struct {
	env    *envtest.Environment
	Config *rest.Config
	Client client.Client
	// stateDir, when set, holds etcd's data and the API server's certificates, so that either can
	// be stopped and started again (StartRestartable); it is removed by Stop.
	stateDir string
}

// Start starts kube-apiserver and etcd from KUBEBUILDER_ASSETS and installs the CRDs.
func Start() *Framework {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	Expect(os.Getenv("KUBEBUILDER_ASSETS")).NotTo(BeEmpty(),
		"KUBEBUILDER_ASSETS is not set: run the suites with `make test`, which builds the control plane into bin/k8s/")
	f, err := StartControlPlane(false)
	Expect(err).NotTo(HaveOccurred())
	return f
}

// RepoRoot is the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// StartControlPlane is Start without Gomega (for plain `testing` suites): it starts kube-apiserver
// and etcd from KUBEBUILDER_ASSETS and installs the CRDs. With restartable, etcd keeps its data and
// the API server its certificates and port in a directory of their own, so that StopAPIServer /
// StartAPIServer and StopEtcd / StartEtcd can take them down and bring them back with the same
// state, address and credentials.
func StartControlPlane(restartable bool) (*Framework, error) {
	f := &Framework{env: &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}}
	if restartable {
		dir, err := os.MkdirTemp("", "cvlab-controlplane-")
		if err != nil {
			return nil, err
		}
		f.stateDir = dir
		for _, d := range []string{"etcd", "apiserver"} {
			if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
				return nil, err
			}
		}
		f.env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(dir, "etcd")}
		f.env.ControlPlane.APIServer = &envtest.APIServer{CertDir: filepath.Join(dir, "apiserver")}
		// kube-apiserver drains for a long while on SIGTERM: past this, it is killed (StopAPIServer
		// then returns a timeout error, see IsKilledOnStop).
		f.env.ControlPlaneStopTimeout = 2 * time.Second
	}
	cfg, err := f.env.Start()
	if err != nil {
		f.removeState()
		return nil, err
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	f.Config = cfg
	f.Client, err = client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Stop stops the control plane.
func (f *Framework) Stop() {
	Expect(f.StopControlPlane()).To(Succeed())
}

// StopControlPlane is Stop without Gomega.
func (f *Framework) StopControlPlane() error {
	defer f.removeState()
	return f.env.Stop()
}

func (f *Framework) removeState() {
	if f.stateDir != "" {
		_ = os.RemoveAll(f.stateDir)
	}
}

// StopAPIServer stops kube-apiserver (SIGTERM, as a rolling restart does), keeping etcd. Only for
// a control plane started restartable.
func (f *Framework) StopAPIServer() error {
	if f.stateDir == "" {
		return fmt.Errorf("the control plane was not started restartable")
	}
	return f.env.ControlPlane.APIServer.Stop()
}

// IsKilledOnStop tells whether an error of StopAPIServer or StopEtcd only says that the process
// did not stop within the stop timeout after SIGTERM and was killed with SIGKILL.
func IsKilledOnStop(err error) bool {
	return err != nil && strings.Contains(err.Error(), "timeout waiting for process")
}

// StartAPIServer starts kube-apiserver again on the same port with the same certificates, and
// waits until it is healthy.
func (f *Framework) StartAPIServer() error {
	if f.stateDir == "" {
		return fmt.Errorf("the control plane was not started restartable")
	}
	return f.env.ControlPlane.APIServer.Start()
}

// StopEtcd stops etcd, keeping its data. Only for a control plane started restartable.
func (f *Framework) StopEtcd() error {
	if f.stateDir == "" {
		return fmt.Errorf("the control plane was not started restartable")
	}
	return f.env.ControlPlane.Etcd.Stop()
}

// StartEtcd starts etcd again on the same client address with its data.
func (f *Framework) StartEtcd() error {
	if f.stateDir == "" {
		return fmt.Errorf("the control plane was not started restartable")
	}
	return f.env.ControlPlane.Etcd.Start()
}

// WriteKubeconfig writes a kubeconfig for the control plane's admin user, for processes such as
// the manager binary (--kubeconfig).
func (f *Framework) WriteKubeconfig(path string) error {
	return clientcmd.WriteToFile(*KubeconfigFor(f.Config), path)
}

// KubeconfigFor turns a rest.Config with certificate authentication into a kubeconfig.
func KubeconfigFor(cfg *rest.Config) *clientcmdapi.Config {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	return kc
}

// StartManager runs the operator's manager with the given options until the returned function is
// called; that function waits for the manager to stop. metricsAddr, if given, serves /metrics.
func (f *Framework) StartManager(opts controllers.Options, metricsAddr ...string) (stop func()) {
	bind := "0"
	if len(metricsAddr) > 0 {
		bind = metricsAddr[0]
	}
	return f.StartManagerWith(opts, bind, nil)
}

// StartManagerWith is StartManager with setup, if not nil, called on the manager before the queue
// is set up (to add runnables and fill opts, as cmd/main.go does); bind is the metrics address.
func (f *Framework) StartManagerWith(opts controllers.Options, bind string, setup func(ctrl.Manager, *controllers.Options)) (stop func()) {
	mgr, err := ctrl.NewManager(f.Config, ctrl.Options{
		Scheme:                 Scheme,
		Metrics:                metricsserver.Options{BindAddress: bind},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(),
		// Each test starts a new manager in the same process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	if setup != nil {
		setup(mgr, &opts)
	}
	r := controllers.NewQueueReconciler(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder("cvlab-queue"), opts)
	Expect(r.SetupWithManager(mgr)).To(Succeed())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() {
		cancel()
		Eventually(done, 30*time.Second).Should(Receive(BeNil()))
	}
}

// NewNamespace creates a namespace with a generated name.
func (f *Framework) NewNamespace(ctx context.Context) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "cvlab-test-"}}
	Expect(f.Client.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

// Cleanup deletes every CvlabJob and pod of a namespace (envtest has no garbage collector), so that
// they hold no GPUs of the next test.
func (f *Framework) Cleanup(ctx context.Context, ns string) {
	Expect(f.Client.DeleteAllOf(ctx, &cvlabv1alpha1.CvlabJob{}, client.InNamespace(ns))).To(Succeed())
	Expect(f.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0))).To(Succeed())
}

// Job returns a CvlabJob with the given user and GPUs, to be tweaked by the caller.
func Job(ns, name, user string, gpus int32) *cvlabv1alpha1.CvlabJob {
	return &cvlabv1alpha1.CvlabJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: cvlabv1alpha1.CvlabJobSpec{
			User: user, Image: "ic-registry.epfl.ch/cvlab/lis/lab-base:cpu", GPUs: gpus,
			Command: []string{"/opt/lab/setup_and_wait.sh"},
		},
	}
}

// Get reads a job, for use in Eventually.
func (f *Framework) Get(ctx context.Context, ns, name string) func() (*cvlabv1alpha1.CvlabJob, error) {
	return func() (*cvlabv1alpha1.CvlabJob, error) {
		var j cvlabv1alpha1.CvlabJob
		err := f.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &j)
		return &j, err
	}
}

// CurrentPod waits until the job's status names a pod that exists, and returns it.
func (f *Framework) CurrentPod(ctx context.Context, ns, job string, timeout time.Duration) *corev1.Pod {
	ginkgo.GinkgoHelper()
	var p corev1.Pod
	Eventually(func(g Gomega) {
		j, err := f.Get(ctx, ns, job)()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(j.Status.PodName).NotTo(BeEmpty())
		g.Expect(f.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: j.Status.PodName}, &p)).To(Succeed())
	}, timeout).Should(Succeed())
	return &p
}

// StartPod plays the scheduler and the kubelet for a job the queue admitted: it binds the job's
// current pod to the node the queue placed it on and sets it Running; it returns the pod's name.
func (f *Framework) StartPod(ctx context.Context, ns, job string, timeout time.Duration) string {
	ginkgo.GinkgoHelper()
	p := f.CurrentPod(ctx, ns, job, timeout)
	f.BindPod(ctx, ns, p.Name, p.Annotations[controllers.AnnotationNode])
	f.SetPodPhase(ctx, ns, p.Name, corev1.PodRunning, "")
	return p.Name
}

// SetPodPhase plays the kubelet: it moves a pod to a phase through the status subresource.
func (f *Framework) SetPodPhase(ctx context.Context, ns, name string, phase corev1.PodPhase, reason string) {
	Eventually(func() error {
		var p corev1.Pod
		if err := f.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
			return err
		}
		p.Status.Phase = phase
		p.Status.Reason = reason
		now := metav1.Now()
		if p.Status.StartTime == nil {
			p.Status.StartTime = &now
		}
		switch phase {
		case corev1.PodSucceeded, corev1.PodFailed:
			code := int32(0)
			if phase == corev1.PodFailed {
				code = 1
			}
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: controllers.ContainerName, Image: p.Spec.Containers[0].Image,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, StartedAt: now, FinishedAt: now}}}}
		case corev1.PodRunning:
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: controllers.ContainerName, Image: p.Spec.Containers[0].Image,
				Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}
		}
		return f.Client.Status().Update(ctx, &p)
	}, 10*time.Second).Should(Succeed(), fmt.Sprintf("setting pod %s/%s to %s", ns, name, phase))
}

// zapLevel logs errors only, unless TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("TEST_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

// CreateGPUNode creates a Ready node advertising gpus nvidia.com/gpu, deleted when the test ends.
func (f *Framework) CreateGPUNode(ctx context.Context, name string, gpus int64) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}}}
	Expect(f.Client.Create(ctx, n)).To(Succeed())
	ginkgo.DeferCleanup(func() { Expect(client.IgnoreNotFound(f.Client.Delete(ctx, n))).To(Succeed()) })
	list := corev1.ResourceList{
		controllers.ResourceGPU: *resource.NewQuantity(gpus, resource.DecimalSI),
		corev1.ResourceCPU:      resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("512Gi"),
		corev1.ResourcePods: resource.MustParse("110"),
	}
	n.Status = corev1.NodeStatus{Capacity: list, Allocatable: list}
	Expect(f.Client.Status().Update(ctx, n)).To(Succeed())
	f.SetNodeReady(ctx, name, true)
}

// SetNodeReady sets a node's Ready condition, as the kubelet and node lifecycle controller do.
func (f *Framework) SetNodeReady(ctx context.Context, name string, ready bool) {
	Eventually(func() error {
		var n corev1.Node
		if err := f.Client.Get(ctx, types.NamespacedName{Name: name}, &n); err != nil {
			return err
		}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, Reason: "Test",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		return f.Client.Status().Update(ctx, &n)
	}, 10*time.Second).Should(Succeed())
}

// BindPod plays the scheduler: it binds a pod to a node through the pods/binding subresource.
func (f *Framework) BindPod(ctx context.Context, ns, name, node string) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	Expect(f.Client.SubResource("binding").Create(ctx, pod, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	})).To(Succeed())
}

// ForeignGPUPod creates a running pod the operator does not own (a person's raw pod) holding
// gpus on node.
func (f *Framework) ForeignGPUPod(ctx context.Context, ns, name, node string, gpus int64) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"user": "raw"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "raw",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{controllers.ResourceGPU: *resource.NewQuantity(gpus, resource.DecimalSI)}}}}},
	}
	Expect(f.Client.Create(ctx, p)).To(Succeed())
	f.SetPodPhase(ctx, ns, name, corev1.PodRunning, "")
}

// FinishDeletion plays the kubelet: a pod being deleted gracefully is removed for good.
func (f *Framework) FinishDeletion(ctx context.Context, ns, name string) {
	Expect(client.IgnoreNotFound(f.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}},
		client.GracePeriodSeconds(0)))).To(Succeed())
}
