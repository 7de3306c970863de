package chaos_test

import (
	"context"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
)

// kubelet plays kube-scheduler and the kubelets of the GPU nodes for the operator's pods: it binds
// each admitted pod to the node of its cvlab.epfl.ch/node annotation through pods/binding (only
// when that node is Ready, as the scheduler would), marks it Running, then Succeeded after the
// runtime in its chaos.cvlab.epfl.ch/runtime annotation, and finishes graceful deletions after a
// short random delay. Pods on a node that is not Ready are left alone: their kubelet is gone.
type kubelet struct {
	cs    kubernetes.Interface
	pods  listersv1.PodLister
	nodes listersv1.NodeLister
	queue workqueue.TypedRateLimitingInterface[string]

	mu       sync.Mutex
	rng      *rand.Rand
	running  map[string]time.Time
	deleting map[string]bool

	// paused holds every running pod in Running: nothing finishes, so the queue goes quiet.
	paused atomic.Bool
	// held are pods whose graceful deletion is not finished (a slow checkpoint) until released.
	held sync.Map
	// Counters.
	bound, started, succeeded, deleted atomic.Int64
}

func (e *env) startKubelet(seed int64) *kubelet {
	cs, err := kubernetes.NewForConfig(e.fw.Config)
	if err != nil {
		e.t.Fatal(err)
	}
	// Like the manager's (controllers/reconnect.go), its informers retry every second while the
	// API server is down, so that it plays its part again right after an outage.
	podInformer := cache.NewSharedIndexInformer(patient(cache.NewListWatchFromClient(cs.CoreV1().RESTClient(), "pods", "", fields.Everything())),
		&corev1.Pod{}, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	nodeInformer := cache.NewSharedIndexInformer(patient(cache.NewListWatchFromClient(cs.CoreV1().RESTClient(), "nodes", "", fields.Everything())),
		&corev1.Node{}, 0, cache.Indexers{})
	k := &kubelet{
		cs: cs, pods: listersv1.NewPodLister(podInformer.GetIndexer()), nodes: listersv1.NewNodeLister(nodeInformer.GetIndexer()),
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 2*time.Second)),
		rng:   rand.New(rand.NewSource(seed)), running: map[string]time.Time{}, deleting: map[string]bool{},
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	_, _ = podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
	})
	// A node coming back (Ready) lets its pods be bound and run again.
	_, _ = nodeInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, o any) {
			pods, _ := k.pods.List(labelsEverything())
			for _, p := range pods {
				enqueue(p)
			}
		},
	})
	go podInformer.RunWithContext(e.ctx)
	go nodeInformer.RunWithContext(e.ctx)
	cache.WaitForCacheSync(e.ctx.Done(), podInformer.HasSynced, nodeInformer.HasSynced)
	for range 3 {
		go func() {
			for k.next(e.ctx) {
			}
		}()
	}
	go func() { <-e.ctx.Done(); k.queue.ShutDown() }()
	return k
}

func (k *kubelet) next(ctx context.Context) bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(ctx, key); err != nil {
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

func (k *kubelet) random(lo, hi time.Duration) time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	return lo + time.Duration(k.rng.Int63n(int64(hi-lo)+1))
}

func (k *kubelet) nodeUp(name string) bool {
	n, err := k.nodes.Get(name)
	return err == nil && cluster.NodeSchedulable(n)
}

func (k *kubelet) sync(ctx context.Context, key string) error {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		k.mu.Lock()
		delete(k.running, key)
		delete(k.deleting, key)
		k.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	if _, ours := pod.Labels[controllers.LabelJob]; !ours {
		return nil
	}
	node := pod.Spec.NodeName
	if pod.DeletionTimestamp != nil {
		if node != "" && !k.nodeUp(node) {
			return nil // its kubelet is gone: the pod stays terminating
		}
		if _, held := k.held.Load(key); held {
			return nil
		}
		k.mu.Lock()
		first := !k.deleting[key]
		k.deleting[key] = true
		k.mu.Unlock()
		if first { // the container takes a moment to stop
			k.queue.AddAfter(key, k.random(0, 200*time.Millisecond))
			return nil
		}
		err := k.cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if err == nil {
			k.deleted.Add(1)
		}
		return ignoreGone(err)
	}
	if cluster.PodFinished(pod) {
		return nil
	}
	if node == "" {
		target := pod.Annotations[controllers.AnnotationNode]
		if target == "" {
			return nil
		}
		if !k.nodeUp(target) {
			k.queue.AddAfter(key, 500*time.Millisecond)
			return nil
		}
		err := k.cs.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: target},
		}, metav1.CreateOptions{})
		if err == nil {
			k.bound.Add(1)
		}
		if apierrors.IsConflict(err) {
			return nil // bound already
		}
		return ignoreGone(err)
	}
	if !k.nodeUp(node) {
		return nil
	}
	switch pod.Status.Phase {
	case corev1.PodPending, "":
		now := metav1.Now()
		p := pod.DeepCopy()
		p.Status.Phase = corev1.PodRunning
		p.Status.StartTime = &now
		p.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: controllers.ContainerName, Image: p.Spec.Containers[0].Image,
			Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}
		if _, err := k.cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			return ignoreGone(err)
		}
		k.started.Add(1)
		k.mu.Lock()
		k.running[key] = time.Now()
		k.mu.Unlock()
		k.queue.AddAfter(key, k.runtime(pod))
	case corev1.PodRunning:
		k.mu.Lock()
		since, ok := k.running[key]
		if !ok {
			since = time.Now()
			k.running[key] = since
		}
		k.mu.Unlock()
		if k.paused.Load() {
			k.queue.AddAfter(key, 200*time.Millisecond)
			return nil
		}
		if left := k.runtime(pod) - time.Since(since); left > 0 {
			k.queue.AddAfter(key, left)
			return nil
		}
		now := metav1.Now()
		p := pod.DeepCopy()
		p.Status.Phase = corev1.PodSucceeded
		p.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "PodCompleted", LastTransitionTime: now},
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: controllers.ContainerName, Image: p.Spec.Containers[0].Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}}}}
		if _, err := k.cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			return ignoreGone(err)
		}
		k.succeeded.Add(1)
	}
	return nil
}

func (k *kubelet) runtime(p *corev1.Pod) time.Duration {
	if d, err := time.ParseDuration(p.Annotations[annotationRuntime]); err == nil {
		return d
	}
	return time.Second
}

// resume lets pods finish again after pause, at once for those past their runtime.
func (k *kubelet) resume() {
	k.paused.Store(false)
	pods, _ := k.pods.List(labelsEverything())
	for _, p := range pods {
		if key, err := cache.MetaNamespaceKeyFunc(p); err == nil {
			k.queue.Add(key)
		}
	}
}

func ignoreGone(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func labelsEverything() labels.Selector { return labels.Everything() }

// holdDeletion keeps a pod terminating once it is deleted, until releaseDeletion.
func (k *kubelet) holdDeletion(ns, name string) { k.held.Store(ns+"/"+name, true) }

func (k *kubelet) releaseDeletion(ns, name string) {
	k.held.Delete(ns + "/" + name)
	k.queue.Add(ns + "/" + name)
}

// patient makes a ListerWatcher retry every second while the API server is unreachable (a copy
// of the manager's patientListWatch for the simulated kubelet).
func patient(lw *cache.ListWatch) cache.ListerWatcher {
	inner := cache.ToListerWatcherWithContext(lw)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return retryUnreachable(ctx, func() (runtime.Object, error) { return inner.ListWithContext(ctx, opts) })
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return retryUnreachable(ctx, func() (watch.Interface, error) { return inner.WatchWithContext(ctx, opts) })
		},
	}
}

func retryUnreachable[T any](ctx context.Context, f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if err == nil || ctx.Err() != nil || !(utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) ||
			utilnet.IsProbableEOF(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err)) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(time.Second):
		}
	}
}
