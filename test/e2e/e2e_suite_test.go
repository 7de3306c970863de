//go:build e2e

// Package e2e_test drives the whole product as its users do: it starts the local cluster of
// hack/local-cluster.sh (etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok with
// fake GPU nodes, and the operator) in a temporary state dir on free loopback ports, then uses the
// built kubectl and a controller-runtime client against it. Run it with `make test-e2e`.
package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

const (
	// The suite's cluster: 2 nodes of 2 GPUs, so that a few jobs fill it.
	nodes, gpusPerNode = 2, 2
	k8sVersion         = "v1.37.2"
)

var (
	root       string // the repository
	stateDir   string // LOCAL_DIR of the suite's cluster
	fakeDCGM   string // the fake dcgm-exporter's /metrics URL
	mailInbox  string // the mail catcher's web inbox (JSON at /api/messages)
	kubectlBin string
	kubeconfig string
	k8s        client.Client
	scheme     = k8sruntime.NewScheme()
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(cvlabv1alpha1.AddToScheme(scheme))
}

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "End-to-end suite on the local cluster")
}

var _ = BeforeSuite(func() {
	var err error
	root, err = filepath.Abs(filepath.Join("..", ".."))
	Expect(err).NotTo(HaveOccurred())
	kubectlBin = filepath.Join(root, "bin", "k8s", k8sVersion, "kubectl")
	stateDir, err = os.MkdirTemp("", "cvlab-e2e-")
	Expect(err).NotTo(HaveOccurred())
	kubeconfig = filepath.Join(stateDir, "kubeconfig")

	ports := freePorts(10)
	fakeDCGM = "http://127.0.0.1:" + ports[7] + "/metrics"
	mailInbox = "http://127.0.0.1:" + ports[9]
	env := append(os.Environ(),
		"LOCAL_DIR="+stateDir,
		"NODES="+strconv.Itoa(nodes), "GPUS_PER_NODE="+strconv.Itoa(gpusPerNode), "NODE_FILE=", "GPU_CAPACITY=",
		// Jobs here run for seconds: let them be preempted at once.
		"MANAGER_ARGS=--min-runtime=0s",
		"API_PORT="+ports[0], "ETCD_PORT="+ports[1], "ETCD_PEER_PORT="+ports[2],
		"SCHEDULER_PORT="+ports[3], "CONTROLLER_MANAGER_PORT="+ports[4], "MANAGER_PROBE_PORT="+ports[5],
		"DASHBOARD_PORT="+ports[6], "FAKE_DCGM_PORT="+ports[7], "MAIL_SMTP_PORT="+ports[8], "MAIL_WEB_PORT="+ports[9],
		// Should this process die without running the cleanup, the cluster stops on its own.
		"STOP_WITH_PID="+strconv.Itoa(os.Getpid()),
	)
	script := filepath.Join(root, "hack", "local-cluster.sh")

	// Registered first, so that it runs even when the start fails half-way: stop the cluster and
	// check that none of its processes is left.
	DeferCleanup(func() {
		stop := exec.Command(script, "stop")
		stop.Env = env
		stop.Stdout, stop.Stderr = GinkgoWriter, GinkgoWriter
		Expect(stop.Run()).To(Succeed())
		Expect(processesUsing(stateDir)).To(BeEmpty(), "processes of the local cluster left after stop")
		if os.Getenv("E2E_KEEP_STATE") != "" {
			fmt.Fprintf(GinkgoWriter, "state kept in %s\n", stateDir)
			return
		}
		Expect(os.RemoveAll(stateDir)).To(Succeed())
	})

	start := time.Now()
	up := exec.Command(script, "up", "--detach")
	up.Env = env
	var out bytes.Buffer
	up.Stdout, up.Stderr = &out, &out
	err = up.Run()
	Expect(err).NotTo(HaveOccurred(), "hack/local-cluster.sh up --detach:\n%s\n%s", out.String(), logTails())
	fmt.Fprintf(GinkgoWriter, "%s\nlocal cluster ready in %s\n", out.String(), time.Since(start).Round(time.Second))

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
})

// On failure, show where the cluster stands and the end of the components' logs.
var _ = ReportAfterEach(func(r SpecReport) {
	if r.Failed() && kubeconfig != "" {
		out, _ := kubectl("get", "nodes,cvlabjobs,pods", "-A", "-o", "wide")
		AddReportEntry("cluster", out+"\n"+logTails())
	}
})

// kubectl runs the built kubectl against the suite's cluster, from the repository's root.
func kubectl(args ...string) (string, error) {
	cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	fmt.Fprintf(GinkgoWriter, "$ kubectl %s\n%s", strings.Join(args, " "), out)
	return string(out), err
}

// freePorts returns n distinct free ports of 127.0.0.1.
func freePorts(n int) []string {
	var ports []string
	var listeners []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		listeners = append(listeners, l)
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	for _, l := range listeners {
		Expect(l.Close()).To(Succeed())
	}
	return ports
}

// processesUsing lists the live processes whose command line mentions dir (every component of
// the local cluster names its state dir in its flags).
func processesUsing(dir string) []string {
	var found []string
	entries, err := os.ReadDir("/proc")
	Expect(err).NotTo(HaveOccurred())
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(dir)) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] == "Z" {
				continue // a zombie waiting for its parent: not running
			}
		}
		found = append(found, e.Name()+" "+strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return found
}

// logTails returns the last lines of every component's log.
func logTails() string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(stateDir, "logs", "*.log"))
	for _, f := range logs {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(&b, "==> %s <==\n%s\n", f, strings.Join(lines, "\n"))
	}
	return b.String()
}

// newNamespace creates a namespace and waits for its default service account, without which the
// API server refuses pods; the namespace is deleted after the spec.
func newNamespace(ctx context.Context, prefix string) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	DeferCleanup(func(ctx SpecContext) {
		Expect(client.IgnoreNotFound(k8s.Delete(ctx, ns))).To(Succeed())
	})
	Eventually(func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "default"}, &corev1.ServiceAccount{})
	}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
	return ns.Name
}
