package harness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Mix is the job mix: deterministic for a seed, the same for both systems.
type Mix struct {
	Jobs, Users int
	Seed        uint64
}

// JobSpec is one job of the mix.
type JobSpec struct {
	Namespace, Name, User string
	GPUs, Priority        int32
}

// Namespace is user u's namespace: one per user (Kueue: one LocalQueue each).
func Namespace(u int) string { return fmt.Sprintf("lab-%03d", u) }

// Specs returns the mix: users pick at random; 1-4 GPUs (40% 1, 30% 2, 10% 3, 20% 4); priorities
// mostly 0, some 5 and -5.
func (m Mix) Specs() []JobSpec {
	r := rand.New(rand.NewPCG(m.Seed, 42))
	out := make([]JobSpec, m.Jobs)
	for i := range out {
		u := r.IntN(m.Users)
		g := int32(1)
		switch k := r.IntN(10); {
		case k >= 8:
			g = 4
		case k == 7:
			g = 3
		case k >= 4:
			g = 2
		}
		p := int32(0)
		switch r.IntN(10) {
		case 0:
			p = 5
		case 1:
			p = -5
		}
		out[i] = JobSpec{Namespace: Namespace(u), Name: fmt.Sprintf("job-%06d", i), User: fmt.Sprintf("user-%03d", u), GPUs: g, Priority: p}
	}
	return out
}

// NodeName is the i-th fake GPU node.
func NodeName(i int) string { return fmt.Sprintf("gpu-node-%02d", i) }

// CreateNodes creates n Ready nodes advertising gpus nvidia.com/gpu each.
func CreateNodes(ctx context.Context, cs kubernetes.Interface, n, gpus int) error {
	for i := range n {
		name := NodeName(i)
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}}}
		created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		list := corev1.ResourceList{
			"nvidia.com/gpu":      *resource.NewQuantity(int64(gpus), resource.DecimalSI),
			corev1.ResourceCPU:    resource.MustParse("64"),
			corev1.ResourceMemory: resource.MustParse("512Gi"),
			corev1.ResourcePods:   resource.MustParse("10000"),
		}
		now := metav1.Now()
		created.Status = corev1.NodeStatus{Capacity: list, Allocatable: list, Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now,
		}}}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// CreateNamespaces creates the users' namespaces.
func CreateNamespaces(ctx context.Context, cs kubernetes.Interface, users int, extra ...string) error {
	names := slices.Clone(extra)
	for u := range users {
		names = append(names, Namespace(u))
	}
	return parallel(ctx, 16, len(names), func(i int) error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: names[i]}}, metav1.CreateOptions{})
		return err
	})
}

// parallel runs f(0..n-1) on workers goroutines, and returns the first error.
func parallel(ctx context.Context, workers, n int, f func(i int) error) error {
	var (
		next  atomic.Int64
		first error
		once  sync.Once
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// RequestCounter counts the driver's own API requests, by apiserver verb and resource, so that
// they can be told apart from the system's in the apiserver's metrics.
type RequestCounter struct {
	mu     sync.Mutex
	counts map[string]float64
}

// Wrap counts the requests of a rest.Config.
func (c *RequestCounter) Wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			c.add(requestKey(req))
			return rt.RoundTrip(req)
		})
	})
	return cfg
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (c *RequestCounter) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[string]float64{}
	}
	c.counts[k]++
}

// Snapshot returns the counts so far.
func (c *RequestCounter) Snapshot() map[string]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]float64, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

// requestKey names a request as the apiserver's apiserver_request_total does: "VERB|resource|subresource".
func requestKey(req *http.Request) string {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return req.Method + "||"
	}
	if len(parts) >= 2 && parts[0] == "namespaces" && len(parts) > 2 {
		parts = parts[2:]
	}
	res, name, sub := "", "", ""
	if len(parts) > 0 {
		res = parts[0]
	}
	if len(parts) > 1 {
		name = parts[1]
	}
	if len(parts) > 2 {
		sub = parts[2]
	}
	verb := req.Method
	if verb == http.MethodGet {
		switch {
		case req.URL.Query().Get("watch") == "true":
			verb = "WATCH"
		case name == "":
			verb = "LIST"
		}
	}
	return verb + "|" + res + "|" + sub
}

// Timeline records what the driver saw, with its own clock.
type Timeline struct {
	mu sync.Mutex
	// Created are the times pods were first seen, in order.
	Created []time.Time
	// tokens are freed GPUs not yet taken by a new pod, oldest first (see FreeToNext).
	tokens []time.Time
	// FreeToNext are, for each pod created after GPUs were freed, the time from the moment the
	// GPUs it needs had been freed (its g-th freed GPU, first freed first taken) to its creation.
	FreeToNext []time.Duration
	matching   bool
}

// created records a new pod of g GPUs seen at t.
func (tl *Timeline) created(t time.Time, g int) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.Created = append(tl.Created, t)
	if !tl.matching {
		return
	}
	if len(tl.tokens) < g {
		tl.tokens = tl.tokens[:0] // not made possible by freed GPUs alone: no sample
		return
	}
	tl.FreeToNext = append(tl.FreeToNext, t.Sub(tl.tokens[g-1]))
	tl.tokens = tl.tokens[g:]
}

// freed records g GPUs freed at t.
func (tl *Timeline) freed(t time.Time, g int) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if !tl.matching {
		return
	}
	for range g {
		tl.tokens = append(tl.tokens, t)
	}
}

// startMatching starts pairing freed GPUs with new pods (the drain).
func (tl *Timeline) startMatching() {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.matching = true
}

// createdCount is how many pods were seen so far, and when the last one was.
func (tl *Timeline) createdCount() (int, time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if len(tl.Created) == 0 {
		return 0, time.Time{}
	}
	return len(tl.Created), tl.Created[len(tl.Created)-1]
}

// Kubelet plays the scheduler and the kubelet of the fake nodes: it binds pods (or creates them
// bound), marks them Running, and, once released, Succeeded after a random runtime.
type Kubelet struct {
	cs       kubernetes.Interface
	tl       *Timeline
	rng      *rand.Rand
	rngMu    sync.Mutex
	min, max time.Duration
	tasks    chan func()

	mu sync.Mutex
	// held are running pods waiting for Release; released says whether new ones run to completion.
	held     []heldPod
	released bool
	// onDone is called after a pod is marked Succeeded (Kueue: the Job's status too).
	onDone func(ctx context.Context, p heldPod) error
	errs   atomic.Int64
	// lastErr is the last error of a kubelet write, for the report.
	lastErr atomic.Value
	// running counts pods marked Running, done those marked Succeeded.
	running, done atomic.Int64
}

type heldPod struct {
	namespace, name, node, owner string
	gpus                         int
}

// NewKubelet starts workers goroutines.
func NewKubelet(ctx context.Context, cs kubernetes.Interface, tl *Timeline, minRun, maxRun time.Duration, seed uint64, workers int) *Kubelet {
	k := &Kubelet{cs: cs, tl: tl, rng: rand.New(rand.NewPCG(seed, 7)), min: minRun, max: maxRun, tasks: make(chan func(), 100_000)}
	for range workers {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case f := <-k.tasks:
					f()
				}
			}
		}()
	}
	return k
}

func (k *Kubelet) fail(err error) {
	k.errs.Add(1)
	k.lastErr.Store(err.Error())
}

// Errors is the number of failed kubelet writes and the last error.
func (k *Kubelet) Errors() (int64, string) {
	s, _ := k.lastErr.Load().(string)
	return k.errs.Load(), s
}

// Bind binds a pod to node (as the scheduler does, pods/binding), then runs it.
func (k *Kubelet) Bind(ctx context.Context, p heldPod) {
	k.tasks <- func() {
		err := k.cs.CoreV1().Pods(p.namespace).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.namespace, Name: p.name},
			Target:     corev1.ObjectReference{Kind: "Node", Name: p.node},
		}, metav1.CreateOptions{})
		if err != nil {
			k.fail(fmt.Errorf("binding %s/%s: %w", p.namespace, p.name, err))
			return
		}
		k.run(ctx, p)
	}
}

// Run marks an already bound pod Running.
func (k *Kubelet) Run(ctx context.Context, p heldPod) { k.tasks <- func() { k.run(ctx, p) } }

func (k *Kubelet) run(ctx context.Context, p heldPod) {
	now := time.Now().UTC().Format(time.RFC3339)
	patch := fmt.Sprintf(`{"status":{"phase":"Running","startTime":%q,"conditions":[{"type":"PodScheduled","status":"True"},{"type":"Ready","status":"True"}],`+
		`"containerStatuses":[{"name":"job","image":"x","imageID":"","ready":true,"restartCount":0,"state":{"running":{"startedAt":%q}}}]}}`, now, now)
	if _, err := k.cs.CoreV1().Pods(p.namespace).Patch(ctx, p.name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
		k.fail(fmt.Errorf("starting %s/%s: %w", p.namespace, p.name, err))
		return
	}
	k.running.Add(1)
	k.mu.Lock()
	if !k.released {
		k.held = append(k.held, p)
		k.mu.Unlock()
		return
	}
	k.mu.Unlock()
	k.finishAfter(ctx, p, k.runtime())
}

func (k *Kubelet) runtime() time.Duration {
	k.rngMu.Lock()
	defer k.rngMu.Unlock()
	return k.min + time.Duration(k.rng.Int64N(int64(k.max-k.min)+1))
}

func (k *Kubelet) finishAfter(ctx context.Context, p heldPod, d time.Duration) {
	time.AfterFunc(d, func() {
		select {
		case k.tasks <- func() { k.finish(ctx, p) }:
		case <-ctx.Done():
		}
	})
}

// finish marks a pod Succeeded.
func (k *Kubelet) finish(ctx context.Context, p heldPod) {
	now := time.Now().UTC().Format(time.RFC3339)
	patch := fmt.Sprintf(`{"status":{"phase":"Succeeded","conditions":[{"type":"Ready","status":"False","reason":"PodCompleted"}],`+
		`"containerStatuses":[{"name":"job","image":"x","imageID":"","ready":false,"restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed","startedAt":%q,"finishedAt":%q}}}]}}`, now, now)
	if _, err := k.cs.CoreV1().Pods(p.namespace).Patch(ctx, p.name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
		k.fail(fmt.Errorf("finishing %s/%s: %w", p.namespace, p.name, err))
		return
	}
	if k.onDone != nil {
		if err := k.onDone(ctx, p); err != nil {
			k.fail(err)
			return
		}
	}
	k.done.Add(1)
	k.tl.freed(time.Now(), p.gpus)
}

// Release lets every held pod finish after a random runtime, and every later one too.
func (k *Kubelet) Release(ctx context.Context) {
	k.mu.Lock()
	held := k.held
	k.held, k.released = nil, true
	k.mu.Unlock()
	for _, p := range held {
		k.finishAfter(ctx, p, k.runtime())
	}
}

// FinishOne marks one held pod Succeeded now (a probe) and returns it.
func (k *Kubelet) FinishOne(ctx context.Context, pick int) (heldPod, bool) {
	k.mu.Lock()
	if len(k.held) == 0 {
		k.mu.Unlock()
		return heldPod{}, false
	}
	i := pick % len(k.held)
	p := k.held[i]
	k.held = slices.Delete(k.held, i, i+1)
	k.mu.Unlock()
	k.finish(ctx, p)
	return p, true
}

// Held is the number of held pods.
func (k *Kubelet) Held() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.held)
}
