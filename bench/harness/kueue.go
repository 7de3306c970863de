package harness

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// The Kueue side of the comparison (make bench-kueue): Kueue v0.17.0's manager as a process on
// the same kind of control plane, one ClusterQueue with the GPU quota of the nodes, one
// LocalQueue per user namespace, the same job mix as suspended batch/v1 Jobs labelled
// kueue.x-k8s.io/queue-name. envtest has no Job controller: the driver plays it, creating the pod
// of each Job Kueue unsuspends (bound to a node with room: Kueue does not place pods) and marking
// the Job Complete when its pod succeeds, so that Kueue's own work is all that is measured.

const kueueNamespace = "kueue-system"

var (
	gvrClusterQueue  = schema.GroupVersionResource{Group: "kueue.x-k8s.io", Version: "v1beta2", Resource: "clusterqueues"}
	gvrLocalQueue    = schema.GroupVersionResource{Group: "kueue.x-k8s.io", Version: "v1beta2", Resource: "localqueues"}
	gvrFlavor        = schema.GroupVersionResource{Group: "kueue.x-k8s.io", Version: "v1beta2", Resource: "resourceflavors"}
	gvrPriorityClass = schema.GroupVersionResource{Group: "kueue.x-k8s.io", Version: "v1beta2", Resource: "workloadpriorityclasses"}
)

// RunKueue runs the benchmark against Kueue.
func RunKueue(ctx context.Context, o Options) (*Result, error) {
	res := &Result{System: "kueue", Jobs: o.Jobs, Users: o.Users, Nodes: o.Nodes, GPUsPerNode: o.GPUsPerNode,
		Machine: ReadMachine(), Started: time.Now()}
	if o.KueuePath == "" || o.KueueCRDs == "" {
		return nil, errors.New("Kueue's binary and CRD directory are needed (hack/build-kueue.sh)")
	}
	cp, err := StartControlPlane(o.Dir, o.KueueCRDs)
	if err != nil {
		return nil, err
	}
	defer cp.Stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	counter := &RequestCounter{}
	dcfg := counter.Wrap(cp.Config)
	cs, err := kubernetes.NewForConfig(dcfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(dcfg)
	if err != nil {
		return nil, err
	}
	if err := CreateNodes(ctx, cs, o.Nodes, o.GPUsPerNode); err != nil {
		return nil, fmt.Errorf("creating nodes: %w", err)
	}
	if err := CreateNamespaces(ctx, cs, o.Users, kueueNamespace); err != nil {
		return nil, fmt.Errorf("creating namespaces: %w", err)
	}
	if err := kueueObjects(ctx, dyn, o); err != nil {
		return nil, fmt.Errorf("creating Kueue's queues: %w", err)
	}
	token, err := scrapeToken(ctx, cs)
	if err != nil {
		return nil, fmt.Errorf("a token for Kueue's metrics: %w", err)
	}

	// The driver: Jobs Kueue unsuspends get their pod on a node with room.
	tl := &Timeline{}
	kub := NewKubelet(ctx, cs, tl, o.RuntimeMin, o.RuntimeMax, o.Seed, 32)
	sched := newScheduler(o.Nodes, o.GPUsPerNode)
	var (
		mu      sync.Mutex
		started = map[string]time.Time{} // Jobs unsuspended, by namespace/name
	)
	place := func(p heldPod) { // create the pod, bound to a node with room, and run it
		kub.tasks <- func() {
			pod := kueuePod(p)
			if _, err := cs.CoreV1().Pods(p.namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				kub.fail(fmt.Errorf("creating pod %s/%s: %w", p.namespace, p.name, err))
				return
			}
			kub.run(ctx, p)
		}
	}
	sched.onPlace = place
	kub.onDone = func(ctx context.Context, p heldPod) error {
		mu.Lock()
		st := started[p.namespace+"/"+p.owner]
		mu.Unlock()
		if err := completeJob(ctx, cs, p.namespace, p.owner, st); err != nil {
			return err
		}
		sched.free(p)
		return nil
	}
	factory := informers.NewSharedInformerFactory(cs, 0)
	jobInf := factory.Batch().V1().Jobs().Informer()
	onJob := func(obj any) {
		j, ok := obj.(*batchv1.Job)
		if !ok || ptr.Deref(j.Spec.Suspend, false) {
			return
		}
		key := j.Namespace + "/" + j.Name
		now := time.Now()
		mu.Lock()
		_, dup := started[key]
		if !dup {
			started[key] = now
		}
		mu.Unlock()
		if dup {
			return
		}
		g := jobGPUs(j)
		tl.created(now, g) // admitted: unsuspended by Kueue
		sched.place(heldPod{namespace: j.Namespace, name: j.Name + "-0", owner: j.Name, gpus: g})
	}
	if _, err := jobInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: onJob, UpdateFunc: func(_, obj any) { onJob(obj) },
	}); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	specs := o.Mix.Specs()
	start := time.Now()
	if err := parallel(ctx, 32, len(specs), func(i int) error {
		_, err := cs.BatchV1().Jobs(specs[i].Namespace).Create(ctx, kueueJob(specs[i]), metav1.CreateOptions{})
		return err
	}); err != nil {
		return nil, fmt.Errorf("submitting jobs: %w", err)
	}
	res.SubmitSeconds = time.Since(start).Seconds()
	o.logf("kueue %d: submitted in %.1fs", o.Jobs, res.SubmitSeconds)

	// Kueue.
	proc, scr, err := startKueue(o, cp, token)
	if err != nil {
		return nil, err
	}
	defer proc.Stop()
	rss := SampleRSS(proc.PID(), 200*time.Millisecond)
	defer rss.Stop()
	res.Flags = []string{fmt.Sprintf("clientConnection.qps=%d", o.KueueQPS), fmt.Sprintf("clientConnection.burst=%d", 2*o.KueueQPS),
		"integrations.frameworks=[batch/job]", "internalCertManagement.enable=false", "--feature-gates=VisibilityOnDemand=false",
		"queueingStrategy=BestEffortFIFO", "no preemption"}
	if err := waitFor(ctx, o.Timeout, func() bool {
		if gone, _ := proc.Exited(); gone {
			return true
		}
		n, _ := tl.createdCount()
		return n > 0
	}); err != nil {
		return nil, fmt.Errorf("no admission within %s (see %s)", o.Timeout, filepath.Join(o.Dir, "kueue.log"))
	}
	if gone, err := proc.Exited(); gone {
		return nil, fmt.Errorf("kueue exited: %v (see %s)", err, filepath.Join(o.Dir, "kueue.log"))
	}
	tl.mu.Lock()
	res.FirstAdmissionSeconds = tl.Created[0].Sub(proc.Started).Seconds()
	tl.mu.Unlock()
	o.logf("kueue %d: first admission %.2fs after start", o.Jobs, res.FirstAdmissionSeconds)
	if err := waitQuiet(ctx, o.Timeout, tl, kub); err != nil {
		return nil, fmt.Errorf("filling the nodes: %w", err)
	}
	// Metrics work only once Kueue serves them (a cert watcher, authn and authz in front).
	var before point
	if err := waitFor(ctx, 30*time.Second, func() bool {
		before, err = measurePoint(ctx, scr, cp, proc.PID(), counter)
		return err == nil
	}); err != nil {
		return nil, fmt.Errorf("scraping Kueue's metrics: %w", err)
	}
	if err := drain(ctx, res, drainRun{tl: tl, kub: kub, total: len(specs), wait: o.Timeout + time.Duration(len(specs))*100*time.Millisecond,
		scr: scr, cp: cp, pid: proc.PID(), counter: counter, before: before, rss: rss, classify: kueueClassify}); err != nil {
		return nil, err
	}
	res.Notes = append(res.Notes, "admission = Kueue unsuspends the Job (seen by the driver's watch); the driver, playing the Job "+
		"controller, then creates its pod bound to a node with room (Kueue's quota is not placement: a pod may wait for a node)")
	o.logf("kueue %d: drained %d admissions in %.1fs: %.1f/s", o.Jobs, res.DrainAdmissions, res.DrainSeconds, res.AdmissionsPerSecond)
	return res, nil
}

func jobGPUs(j *batchv1.Job) int {
	var g int64
	for _, c := range j.Spec.Template.Spec.Containers {
		q := c.Resources.Limits["nvidia.com/gpu"]
		g += q.Value()
	}
	return int(g)
}

// kueueObjects creates the flavor, the ClusterQueue (the nodes' GPUs as quota), one LocalQueue per
// user namespace and the priority classes of the mix.
func kueueObjects(ctx context.Context, dyn dynamic.Interface, o Options) error {
	mk := func(gvr schema.GroupVersionResource, ns string, obj map[string]any) error {
		u := &unstructured.Unstructured{Object: obj}
		u.SetAPIVersion(gvr.Group + "/" + gvr.Version)
		var err error
		if ns == "" {
			_, err = dyn.Resource(gvr).Create(ctx, u, metav1.CreateOptions{})
		} else {
			_, err = dyn.Resource(gvr).Namespace(ns).Create(ctx, u, metav1.CreateOptions{})
		}
		return err
	}
	if err := mk(gvrFlavor, "", map[string]any{"kind": "ResourceFlavor", "metadata": map[string]any{"name": "default-flavor"}}); err != nil {
		return err
	}
	quota := strconv.Itoa(o.Nodes * o.GPUsPerNode)
	if err := mk(gvrClusterQueue, "", map[string]any{"kind": "ClusterQueue", "metadata": map[string]any{"name": "cq"},
		"spec": map[string]any{
			"namespaceSelector": map[string]any{},
			"queueingStrategy":  "BestEffortFIFO",
			"resourceGroups": []any{map[string]any{
				"coveredResources": []any{"nvidia.com/gpu"},
				"flavors": []any{map[string]any{"name": "default-flavor", "resources": []any{
					map[string]any{"name": "nvidia.com/gpu", "nominalQuota": quota},
				}}},
			}},
		}}); err != nil {
		return err
	}
	for name, v := range map[string]int64{"high": 5, "low": -5} {
		if err := mk(gvrPriorityClass, "", map[string]any{"kind": "WorkloadPriorityClass", "metadata": map[string]any{"name": name}, "value": v}); err != nil {
			return err
		}
	}
	return parallel(ctx, 16, o.Users, func(u int) error {
		return mk(gvrLocalQueue, Namespace(u), map[string]any{"kind": "LocalQueue", "metadata": map[string]any{"name": "lq"},
			"spec": map[string]any{"clusterQueue": "cq"}})
	})
}

// kueueJob is a job of the mix as Kueue takes it: a suspended Job in the user's LocalQueue.
func kueueJob(s JobSpec) *batchv1.Job {
	labels := map[string]string{"kueue.x-k8s.io/queue-name": "lq", "user": s.User}
	switch {
	case s.Priority > 0:
		labels["kueue.x-k8s.io/priority-class"] = "high"
	case s.Priority < 0:
		labels["kueue.x-k8s.io/priority-class"] = "low"
	}
	gpu := *resource.NewQuantity(int64(s.GPUs), resource.DecimalSI)
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, Labels: labels},
		Spec: batchv1.JobSpec{
			Suspend: ptr.To(true), Parallelism: ptr.To[int32](1), Completions: ptr.To[int32](1), BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "job", Image: "ic-registry.epfl.ch/cvlab/lis/lab-base:cpu", Command: []string{"/opt/lab/train.sh"},
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{"nvidia.com/gpu": gpu}, Limits: corev1.ResourceList{"nvidia.com/gpu": gpu}}}},
			}},
		},
	}
}

// kueuePod is the pod the Job controller would create, already bound to its node.
func kueuePod(p heldPod) *corev1.Pod {
	gpu := *resource.NewQuantity(int64(p.gpus), resource.DecimalSI)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.namespace, Name: p.name, Labels: map[string]string{batchv1.JobNameLabel: p.owner}},
		Spec: corev1.PodSpec{NodeName: p.node, RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{
			Name: "job", Image: "ic-registry.epfl.ch/cvlab/lis/lab-base:cpu",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{"nvidia.com/gpu": gpu}, Limits: corev1.ResourceList{"nvidia.com/gpu": gpu}},
		}}},
	}
}

// completeJob marks a Job Complete, as the Job controller does when its pod succeeded.
func completeJob(ctx context.Context, cs kubernetes.Interface, ns, name string, started time.Time) error {
	now := time.Now().UTC()
	if started.IsZero() || started.After(now) {
		started = now
	}
	st, at := started.UTC().Format(time.RFC3339), now.Format(time.RFC3339)
	patch := fmt.Sprintf(`{"status":{"startTime":%q,"completionTime":%q,"succeeded":1,"active":0,"ready":0,"terminating":0,"conditions":[`+
		`{"type":"SuccessCriteriaMet","status":"True","reason":"CompletionsReached","message":"Reached expected number of succeeded pods","lastProbeTime":%q,"lastTransitionTime":%q},`+
		`{"type":"Complete","status":"True","reason":"CompletionsReached","message":"Reached expected number of succeeded pods","lastProbeTime":%q,"lastTransitionTime":%q}]}}`,
		st, at, at, at, at, at)
	if _, err := cs.BatchV1().Jobs(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("completing Job %s/%s: %w", ns, name, err)
	}
	return nil
}

// scheduler places the driver's pods for Kueue: best fit over the nodes' free GPUs, first come
// first served when none has room.
type scheduler struct {
	mu      sync.Mutex
	gpus    []int // free GPUs by node
	waiting []heldPod
	onPlace func(heldPod)
}

func newScheduler(nodes, gpus int) *scheduler {
	s := &scheduler{gpus: make([]int, nodes)}
	for i := range s.gpus {
		s.gpus[i] = gpus
	}
	return s
}

func (s *scheduler) place(p heldPod) {
	s.mu.Lock()
	s.waiting = append(s.waiting, p)
	ready := s.assign()
	s.mu.Unlock()
	for _, p := range ready {
		s.onPlace(p)
	}
}

// free returns a finished pod's GPUs and places waiting pods.
func (s *scheduler) free(p heldPod) {
	s.mu.Lock()
	var i int
	fmt.Sscanf(strings.TrimPrefix(p.node, "gpu-node-"), "%d", &i)
	s.gpus[i] += p.gpus
	ready := s.assign()
	s.mu.Unlock()
	for _, p := range ready {
		s.onPlace(p)
	}
}

func (s *scheduler) assign() []heldPod {
	var ready, still []heldPod
	for _, p := range s.waiting {
		best := -1
		for i, f := range s.gpus {
			if f >= p.gpus && (best < 0 || f < s.gpus[best]) {
				best = i
			}
		}
		if best < 0 {
			still = append(still, p)
			continue
		}
		s.gpus[best] -= p.gpus
		p.node = NodeName(best)
		ready = append(ready, p)
	}
	s.waiting = still
	return ready
}

// scrapeToken makes a service account allowed to GET /metrics and returns a token for it: Kueue
// serves its metrics over HTTPS behind authentication and authorization.
func scrapeToken(ctx context.Context, cs kubernetes.Interface) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: kueueNamespace, Name: "bench-scraper"}}
	if _, err := cs.CoreV1().ServiceAccounts(kueueNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "bench-metrics-reader"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bench-metrics-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: kueueNamespace, Name: sa.Name}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	tr, err := cs.CoreV1().ServiceAccounts(kueueNamespace).CreateToken(ctx, sa.Name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)}}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// startKueue writes Kueue's configuration and certificates and starts it.
//
// Kueue v0.17.0 with internalCertManagement.enable=false reads its metrics certificate from a
// fixed path, /etc/kueue/metrics/certs/tls.{crt,key} (cmd/kueue/main.go: no flag or field
// changes it), and its visibility server's from /visibility (pkg/visibility/server.go). The
// webhook server's directory is configurable (webhook.certDir). So: self-signed certificates in
// the run's directory; the webhook's through the configuration; the metrics' through a private
// mount namespace (unshare -m) in which /etc is an overlay that adds kueue/metrics/certs, leaving
// the real /etc untouched; the visibility server (an optional on-demand API) off with
// --feature-gates=VisibilityOnDemand=false.
func startKueue(o Options, cp *ControlPlane, token string) (*Process, *Scraper, error) {
	dir := o.Dir
	certs := filepath.Join(dir, "etc-upper", "kueue", "metrics", "certs")
	webhookCerts := filepath.Join(dir, "webhook-certs")
	for _, d := range []string{certs, webhookCerts, filepath.Join(dir, "etc-work")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, nil, err
		}
	}
	if err := selfSigned(certs, true); err != nil {
		return nil, nil, err
	}
	if err := selfSigned(webhookCerts, false); err != nil {
		return nil, nil, err
	}
	ports := make([]int, 3)
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return nil, nil, err
		}
		ports[i] = p
	}
	cfg := fmt.Sprintf(`apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: %s
health:
  healthProbeBindAddress: 127.0.0.1:%d
metrics:
  bindAddress: 127.0.0.1:%d
webhook:
  host: 127.0.0.1
  port: %d
  certDir: %s
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: false
clientConnection:
  qps: %d
  burst: %d
integrations:
  frameworks:
  - batch/job
`, kueueNamespace, ports[0], ports[1], ports[2], webhookCerts, o.KueueQPS, 2*o.KueueQPS)
	cfgPath := filepath.Join(dir, "kueue-config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, nil, err
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, nil, fmt.Errorf("unshare (util-linux) is needed to give Kueue its metrics certificate: %w", err)
	}
	script := `mount -t overlay overlay -o lowerdir=/etc,upperdir="$1",workdir="$2" /etc && shift 2 && exec "$@"`
	args := []string{"-m", "--propagation", "private", "sh", "-c", script, "kueue",
		filepath.Join(dir, "etc-upper"), filepath.Join(dir, "etc-work"),
		o.KueuePath, "--config=" + cfgPath, "--feature-gates=VisibilityOnDemand=false", "--zap-log-level=error"}
	proc, err := StartProcess(unshare, args, filepath.Join(dir, "kueue.log"), "KUBECONFIG="+cp.Kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	return proc, NewScraper(fmt.Sprintf("https://127.0.0.1:%d/metrics", ports[1]), token), nil
}

// selfSigned writes tls.crt and tls.key (and ca.crt, the same certificate) for 127.0.0.1.
func selfSigned(dir string, withCA bool) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "kueue-bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	files := map[string][]byte{"tls.crt": crt, "tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})}
	if withCA {
		files["ca.crt"] = crt
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
