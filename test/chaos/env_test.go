package chaos_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

const (
	// annotationRuntime is how long the simulated kubelet runs a pod before it succeeds.
	annotationRuntime = "chaos.cvlab.epfl.ch/runtime"
	namespace         = "chaos"
)

func init() {
	utilruntime.Must(apiextensionsv1.AddToScheme(framework.Scheme))
	level := zapcore.ErrorLevel
	if os.Getenv("TEST_VERBOSE") != "" {
		level = zapcore.DebugLevel
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(level)))
}

// env is one control plane, the test's clients and the managers started on it.
type env struct {
	t           *testing.T
	ctx         context.Context
	fw          *framework.Framework
	c           client.WithWatch
	kubeconfig  string
	logDir      string
	managers    []*manager
	managerRuns int
	// root is the env this one was made from by with; it owns the managers.
	root *env
}

// with returns the env for a subtest: the same cluster, failures reported to t.
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	c.root = e.owner()
	return &c
}

func (e *env) owner() *env {
	if e.root != nil {
		return e.root
	}
	return e
}

// newEnv starts a control plane (restartable: kube-apiserver and etcd can be restarted) with the
// namespace "chaos". Everything is stopped when the test ends; the managers' logs are kept when it
// failed or CHAOS_LOGS is set.
func newEnv(t *testing.T, restartable bool) *env {
	t.Helper()
	requireAssets(t)
	managerBinary(t) // build before the clock of the test starts
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, ctx: ctx}
	var err error
	e.logDir = os.Getenv("CHAOS_LOGS")
	if e.logDir != "" {
		e.logDir = filepath.Join(e.logDir, strings.ReplaceAll(t.Name(), "/", "_"))
		err = os.MkdirAll(e.logDir, 0o755)
	} else {
		e.logDir, err = os.MkdirTemp("", "cvlab-chaos-logs-")
	}
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.fw, err = framework.StartControlPlane(restartable)
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Logf("control plane up in %s", time.Since(start).Round(100*time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster at the end:\n%s", e.dump())
		}
		cancel()
		for _, m := range e.managers {
			if m.running() {
				m.kill()
			}
		}
		if err := e.fw.StopControlPlane(); err != nil {
			t.Logf("stopping the control plane: %v", err)
		}
		if t.Failed() || os.Getenv("CHAOS_LOGS") != "" {
			t.Logf("manager logs kept in %s", e.logDir)
		} else {
			_ = os.RemoveAll(e.logDir)
		}
	})
	e.c, err = client.NewWithWatch(e.fw.Config, client.Options{Scheme: framework.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	e.kubeconfig = filepath.Join(e.logDir, "kubeconfig")
	if err := e.fw.WriteKubeconfig(e.kubeconfig); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatal(err)
	}
	return e
}

// createNode adds a Ready node with gpus nvidia.com/gpu.
func (e *env) createNode(name string, gpus int64) {
	e.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}}}
	if err := e.c.Create(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
	list := corev1.ResourceList{
		controllers.ResourceGPU: *resource.NewQuantity(gpus, resource.DecimalSI),
		corev1.ResourceCPU:      resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("512Gi"),
		corev1.ResourcePods: resource.MustParse("110"),
	}
	n.Status = corev1.NodeStatus{Capacity: list, Allocatable: list, Conditions: []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}}
	if err := e.c.Status().Update(e.ctx, n); err != nil {
		e.t.Fatal(err)
	}
}

// setNodeReady sets a node's Ready condition, as the node lifecycle controller does when the
// kubelet stops posting.
func (e *env) setNodeReady(name string, ready bool) {
	e.t.Helper()
	e.eventually(10*time.Second, func() error {
		var n corev1.Node
		if err := e.c.Get(e.ctx, types.NamespacedName{Name: name}, &n); err != nil {
			return err
		}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, Reason: "Test",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		return e.c.Status().Update(e.ctx, &n)
	}, "setting node %s Ready=%v", name, ready)
}

// job is a CvlabJob of the chaos namespace that the simulated kubelet runs for runtime.
func job(name, user string, gpus int32, runtime time.Duration) *cvlabv1alpha1.CvlabJob {
	return &cvlabv1alpha1.CvlabJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: cvlabv1alpha1.CvlabJobSpec{
			User: user, Image: "ic-registry.epfl.ch/cvlab/lis/lab-base:cpu", GPUs: gpus,
			Command:                       []string{"/opt/lab/train.sh"},
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			PodAnnotations:                map[string]string{annotationRuntime: runtime.String()},
		},
	}
}

func (e *env) create(j *cvlabv1alpha1.CvlabJob) {
	e.t.Helper()
	e.eventually(30*time.Second, func() error { return client.IgnoreAlreadyExists(e.c.Create(e.ctx, j)) }, "creating job %s", j.Name)
}

func (e *env) getJob(name string) (*cvlabv1alpha1.CvlabJob, error) {
	var j cvlabv1alpha1.CvlabJob
	err := e.c.Get(e.ctx, types.NamespacedName{Namespace: namespace, Name: name}, &j)
	return &j, err
}

// eventually retries f every 100 ms until it returns nil, and fails the test after timeout.
func (e *env) eventually(timeout time.Duration, f func() error, what string, args ...any) {
	e.t.Helper()
	if err := poll(e.ctx, timeout, f); err != nil {
		e.t.Fatalf("%s: %v", fmt.Sprintf(what, args...), err)
	}
}

// poll retries f every 100 ms until it returns nil or timeout passes; it returns the last error.
func poll(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// waitPhase waits until the job is in one of the phases.
func (e *env) waitPhase(name string, timeout time.Duration, phases ...cvlabv1alpha1.JobPhase) *cvlabv1alpha1.CvlabJob {
	e.t.Helper()
	var got *cvlabv1alpha1.CvlabJob
	e.eventually(timeout, func() error {
		j, err := e.getJob(name)
		if err != nil {
			return err
		}
		got = j
		for _, p := range phases {
			if j.Status.Phase == p {
				return nil
			}
		}
		return fmt.Errorf("phase %q (%s), want %v", j.Status.Phase, j.Status.Message, phases)
	}, "job %s", name)
	return got
}

// podOf waits for the job's pod named in its status and returns it.
func (e *env) podOf(name string, timeout time.Duration) *corev1.Pod {
	e.t.Helper()
	var p corev1.Pod
	e.eventually(timeout, func() error {
		j, err := e.getJob(name)
		if err != nil {
			return err
		}
		if j.Status.PodName == "" {
			return fmt.Errorf("no pod yet (phase %q)", j.Status.Phase)
		}
		return e.c.Get(e.ctx, types.NamespacedName{Namespace: namespace, Name: j.Status.PodName}, &p)
	}, "pod of %s", name)
	return &p
}

// allDone waits until every job of the chaos namespace is finished and returns them.
func (e *env) allFinished(timeout time.Duration) []cvlabv1alpha1.CvlabJob {
	e.t.Helper()
	var jobs cvlabv1alpha1.CvlabJobList
	e.eventually(timeout, func() error {
		if err := e.c.List(e.ctx, &jobs, client.InNamespace(namespace)); err != nil {
			return err
		}
		var open []string
		for _, j := range jobs.Items {
			if !controllers.IsFinished(&j.Status) {
				open = append(open, fmt.Sprintf("%s=%s(%s)", j.Name, j.Status.Phase, j.Status.Message))
			}
		}
		if len(open) > 0 {
			if len(open) > 5 {
				open = append(open[:5], fmt.Sprintf("... %d more", len(open)-5))
			}
			return fmt.Errorf("%d of %d jobs not finished: %s", len(open), len(jobs.Items), strings.Join(open, ", "))
		}
		return nil
	}, "all jobs finishing")
	return jobs.Items
}

func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

// describe tells a job's story for a failure message: its status, pods and events.
func (e *env) describe(name string) string {
	var b strings.Builder
	if j, err := e.getJob(name); err == nil {
		fmt.Fprintf(&b, "  status: phase=%s admissions=%d preemptions=%d pod=%s message=%q\n", j.Status.Phase, j.Status.Admissions,
			j.Status.Preemptions, j.Status.PodName, j.Status.Message)
		for _, c := range j.Status.Conditions {
			fmt.Fprintf(&b, "  condition %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
		}
	}
	var pods corev1.PodList
	if err := e.c.List(e.ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{controllers.LabelJob: name}); err == nil {
		for _, p := range pods.Items {
			fmt.Fprintf(&b, "  pod %s: phase=%s node=%s deleting=%v created=%s\n", p.Name, p.Status.Phase, p.Spec.NodeName,
				p.DeletionTimestamp != nil, p.CreationTimestamp.Format("15:04:05"))
		}
	}
	var events eventsv1.EventList
	if err := e.c.List(e.ctx, &events, client.InNamespace(namespace)); err == nil {
		slices.SortFunc(events.Items, func(a, b eventsv1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })
		for _, ev := range events.Items {
			if ev.Regarding.Name == name {
				fmt.Fprintf(&b, "  event %s %s %s: %s\n", ev.EventTime.Format("15:04:05.000"), ev.Type, ev.Reason, ev.Note)
			}
		}
	}
	return b.String()
}

// dump lists the nodes, jobs and pods, for failure messages.
func (e *env) dump() string {
	var b strings.Builder
	var nodes corev1.NodeList
	if err := e.c.List(e.ctx, &nodes); err == nil {
		for _, n := range nodes.Items {
			q := n.Status.Allocatable[controllers.ResourceGPU]
			fmt.Fprintf(&b, "  node %s: gpus=%s up=%v\n", n.Name, q.String(), cluster.NodeSchedulable(&n))
		}
	}
	var jobs cvlabv1alpha1.CvlabJobList
	if err := e.c.List(e.ctx, &jobs); err == nil {
		for _, j := range jobs.Items {
			if !controllers.IsFinished(&j.Status) {
				fmt.Fprintf(&b, "  job %s: %s gpus=%d pod=%s %q\n", j.Name, j.Status.Phase, j.Spec.GPUs, j.Status.PodName, j.Status.Message)
			}
		}
	}
	var pods corev1.PodList
	if err := e.c.List(e.ctx, &pods); err == nil {
		for _, p := range pods.Items {
			if !cluster.PodFinished(&p) {
				fmt.Fprintf(&b, "  pod %s: %s node=%s/%s deleting=%v gpus=%d\n", p.Name, p.Status.Phase, p.Spec.NodeName,
					p.Annotations[controllers.AnnotationNode], p.DeletionTimestamp != nil, cluster.PodGPUs(&p))
			}
		}
	}
	return b.String()
}
