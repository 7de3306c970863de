package harness

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

var scheme = k8sruntime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(cvlabv1alpha1.AddToScheme(scheme))
}

// podRec is what the driver knows of one of the queue's pods.
type podRec struct {
	job      string // namespace/name of its CvlabJob
	node     string
	gpus     int32
	seen     time.Time
	finished bool
}

// cvlabTruth is the state of the cluster as the driver made it: which jobs hold GPUs where, and
// which finished. The expected queue positions are computed from it with internal/queue.
type cvlabTruth struct {
	mu       sync.Mutex
	pods     map[string]*podRec // by namespace/name of the pod
	finished map[string]bool    // job keys whose pod succeeded
}

// RunCvlab runs the benchmark against the cvlab-queue manager.
func RunCvlab(ctx context.Context, o Options) (*Result, error) {
	res := &Result{System: "cvlab-queue", Jobs: o.Jobs, Users: o.Users, Nodes: o.Nodes, GPUsPerNode: o.GPUsPerNode,
		Machine: ReadMachine(), Started: time.Now()}
	cp, err := StartControlPlane(o.Dir, filepath.Join(repoRoot(), "config", "crd", "bases"))
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
	cl, err := client.New(dcfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	if err := CreateNodes(ctx, cs, o.Nodes, o.GPUsPerNode); err != nil {
		return nil, fmt.Errorf("creating nodes: %w", err)
	}
	// cvlab-queue-system: where the manager writes its admission policies' params.
	if err := CreateNamespaces(ctx, cs, o.Users, "cvlab-queue-system"); err != nil {
		return nil, fmt.Errorf("creating namespaces: %w", err)
	}

	// Watch jobs and pods before anything happens.
	c, err := cache.New(dcfg, cache.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	tl := &Timeline{}
	kub := NewKubelet(ctx, cs, tl, o.RuntimeMin, o.RuntimeMax, o.Seed, 32)
	truth := &cvlabTruth{pods: map[string]*podRec{}, finished: map[string]bool{}}
	kub.onDone = func(_ context.Context, p heldPod) error {
		truth.mu.Lock()
		defer truth.mu.Unlock()
		if r := truth.pods[p.namespace+"/"+p.name]; r != nil {
			r.finished = true
			truth.finished[r.job] = true
		}
		return nil
	}
	podInf, err := c.GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return nil, err
	}
	if _, err := podInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Labels[cluster.LabelJob] == "" {
			return
		}
		now := time.Now()
		key := p.Namespace + "/" + p.Name
		rec := &podRec{job: p.Namespace + "/" + p.Labels[cluster.LabelJob], node: p.Annotations[cluster.AnnotationNode], gpus: cluster.PodGPUs(p), seen: now}
		truth.mu.Lock()
		_, dup := truth.pods[key]
		if !dup {
			truth.pods[key] = rec
		}
		truth.mu.Unlock()
		if dup {
			return
		}
		tl.created(now, int(rec.gpus))
		hp := heldPod{namespace: p.Namespace, name: p.Name, node: rec.node, gpus: int(rec.gpus)}
		if p.Spec.NodeName != "" {
			kub.Run(ctx, hp)
		} else {
			kub.Bind(ctx, hp)
		}
	}}); err != nil {
		return nil, err
	}
	jobInf, err := c.GetInformer(ctx, &cvlabv1alpha1.CvlabJob{})
	if err != nil {
		return nil, err
	}
	pw := &positionWatch{}
	if _, err := jobInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { pw.observe(obj) },
		UpdateFunc: func(_, obj any) { pw.observe(obj) },
	}); err != nil {
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return nil, errors.New("driver cache did not sync")
	}

	// Submit every job before the manager starts: the queue starts saturated.
	specs := o.Mix.Specs()
	start := time.Now()
	if err := parallel(ctx, 32, len(specs), func(i int) error {
		return cl.Create(ctx, cvlabJob(specs[i]))
	}); err != nil {
		return nil, fmt.Errorf("submitting jobs: %w", err)
	}
	res.SubmitSeconds = time.Since(start).Seconds()
	o.logf("cvlab %d: submitted in %.1fs", o.Jobs, res.SubmitSeconds)
	if err := waitFor(ctx, 2*time.Minute, func() bool { return countJobs(c) >= len(specs) }); err != nil {
		return nil, errors.New("driver cache did not see every job")
	}

	// The manager.
	metricsPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	dashPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	args := []string{
		"--kubeconfig=" + cp.Kubeconfig,
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(metricsPort),
		"--health-probe-bind-address=0",
		"--dashboard-bind-address=127.0.0.1:" + strconv.Itoa(dashPort),
		// Like the Kueue setup (BestEffortFIFO, no preemption): nobody is evicted, and the
		// first job in line never holds the others back.
		"--preemption=Never", "--max-head-wait=-1s",
	}
	args = append(args, o.ManagerArgs...)
	res.Flags = append(slices.Clone(o.ManagerEnv), args[1:]...)
	mgr, err := StartProcess(o.ManagerPath, args, filepath.Join(o.Dir, "manager.log"), o.ManagerEnv...)
	if err != nil {
		return nil, err
	}
	defer mgr.Stop()
	scr := NewScraper(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort), "")
	rss := SampleRSS(mgr.PID(), 200*time.Millisecond)
	defer rss.Stop()

	// First admission, with every job waiting.
	if err := waitFor(ctx, o.Timeout, func() bool {
		if gone, _ := mgr.Exited(); gone {
			return true
		}
		n, _ := tl.createdCount()
		return n > 0
	}); err != nil {
		return nil, fmt.Errorf("no admission within %s", o.Timeout)
	}
	if gone, err := mgr.Exited(); gone {
		return nil, fmt.Errorf("the manager exited: %v (see %s)", err, filepath.Join(o.Dir, "manager.log"))
	}
	tl.mu.Lock()
	res.FirstAdmissionSeconds = tl.Created[0].Sub(mgr.Started).Seconds()
	tl.mu.Unlock()
	o.logf("cvlab %d: first admission %.2fs after start", o.Jobs, res.FirstAdmissionSeconds)

	// Fill: wait until no pod was created for 2 s and every pod runs.
	if err := waitQuiet(ctx, o.Timeout, tl, kub); err != nil {
		return nil, fmt.Errorf("filling the nodes: %w", err)
	}
	expect := func() map[string]expected { return cvlabExpected(c, truth, o) }
	probeTimeout := o.Timeout
	p := pw.measure(ctx, "start", expect(), probeTimeout)
	// From the manager's start, not from now.
	if p.First100Seconds >= 0 {
		p.First100Seconds += time.Since(mgr.Started).Seconds() - p.elapsed.Seconds()
	}
	if p.AllSeconds >= 0 {
		p.AllSeconds += time.Since(mgr.Started).Seconds() - p.elapsed.Seconds()
	}
	res.Probes = append(res.Probes, p.Probe)
	o.logf("cvlab %d: positions right %.2fs (first 100) / %.2fs (all %d) after start", o.Jobs, p.First100Seconds, p.AllSeconds, p.Waiting)

	// Probes: a new user's job arrives (it ranks near the front), a running job finishes.
	arrivals := 0
	for k := range o.Probes {
		spec := JobSpec{Namespace: Namespace(k % o.Users), Name: fmt.Sprintf("probe-%d", k), User: fmt.Sprintf("probe-user-%d", k), GPUs: 1}
		pw.measure(ctx, "quiet", expect(), probeTimeout) // let the previous change settle
		before := pw.snapshot()
		j := cvlabJob(spec)
		if err := cl.Create(ctx, j); err != nil {
			return nil, fmt.Errorf("probe job: %w", err)
		}
		arrivals++
		exp := cvlabExpected(c, truth, o, j)
		pr := pw.measure(ctx, "arrival", exp, probeTimeout)
		pr.Changed = changed(before, exp)
		res.Probes = append(res.Probes, pr.Probe)
		o.logf("cvlab %d: arrival probe: %.2fs / %.2fs (%d positions changed)", o.Jobs, pr.First100Seconds, pr.AllSeconds, pr.Changed)

		if err := waitQuiet(ctx, o.Timeout, tl, kub); err != nil {
			return nil, err
		}
		pw.measure(ctx, "quiet", expect(), probeTimeout)
		before = pw.snapshot()
		if _, ok := kub.FinishOne(ctx, k*7919); !ok {
			break
		}
		exp = expect()
		pr = pw.measure(ctx, "finish", exp, probeTimeout)
		pr.Changed = changed(before, exp)
		res.Probes = append(res.Probes, pr.Probe)
		o.logf("cvlab %d: finish probe: %.2fs / %.2fs (%d positions changed)", o.Jobs, pr.First100Seconds, pr.AllSeconds, pr.Changed)
		if err := waitQuiet(ctx, o.Timeout, tl, kub); err != nil {
			return nil, err
		}
	}

	// The drain.
	before, err := measurePoint(ctx, scr, cp, mgr.PID(), counter)
	if err != nil {
		return nil, err
	}
	total := len(specs) + arrivals
	if err := drain(ctx, res, drainRun{tl: tl, kub: kub, total: total, wait: o.Timeout + time.Duration(total)*20*time.Millisecond,
		scr: scr, cp: cp, pid: mgr.PID(), counter: counter, before: before, rss: rss, classify: cvlabClassify}); err != nil {
		return nil, err
	}
	o.logf("cvlab %d: drained %d admissions in %.1fs: %.1f/s", o.Jobs, res.DrainAdmissions, res.DrainSeconds, res.AdmissionsPerSecond)
	return res, nil
}

func cvlabJob(s JobSpec) *cvlabv1alpha1.CvlabJob {
	return &cvlabv1alpha1.CvlabJob{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name},
		Spec: cvlabv1alpha1.CvlabJobSpec{User: s.User, Priority: s.Priority, GPUs: s.GPUs,
			Image: "ic-registry.epfl.ch/cvlab/lis/lab-base:cpu", Command: []string{"/opt/lab/train.sh"}},
	}
}

func countJobs(c cache.Cache) int {
	var l cvlabv1alpha1.CvlabJobList
	if err := c.List(context.Background(), &l); err != nil {
		return 0
	}
	return len(l.Items)
}

// cvlabExpected runs internal/queue on the truth: every job of the driver's cache (and extra,
// just created), holding GPUs where the driver saw its pod, gone once its pod succeeded.
func cvlabExpected(c cache.Cache, truth *cvlabTruth, o Options, extra ...*cvlabv1alpha1.CvlabJob) map[string]expected {
	var l cvlabv1alpha1.CvlabJobList
	_ = c.List(context.Background(), &l, client.UnsafeDisableDeepCopy)
	jobs := make([]*cvlabv1alpha1.CvlabJob, 0, len(l.Items)+len(extra))
	seen := map[string]bool{}
	for i := range l.Items {
		jobs = append(jobs, &l.Items[i])
		seen[l.Items[i].Namespace+"/"+l.Items[i].Name] = true
	}
	for _, j := range extra {
		if !seen[j.Namespace+"/"+j.Name] {
			jobs = append(jobs, j)
		}
	}
	truth.mu.Lock()
	holding := map[string]*podRec{}
	for _, p := range truth.pods {
		if !p.finished {
			holding[p.job] = p
		}
	}
	finished := make(map[string]bool, len(truth.finished))
	for k := range truth.finished {
		finished[k] = true
	}
	truth.mu.Unlock()
	now := time.Now()
	s := queue.Snapshot{Capacity: -1, Now: now, MaxHeadWait: -1, Preemption: queue.PreemptNever, MinRuntime: 10 * time.Minute}
	for i := range o.Nodes {
		s.Nodes = append(s.Nodes, queue.Node{Name: NodeName(i), GPUs: int32(o.GPUsPerNode)})
	}
	for _, j := range jobs {
		key := j.Namespace + "/" + j.Name
		if finished[key] {
			continue
		}
		qj := queue.Job{Key: key, User: j.Spec.User, Priority: j.Spec.Priority, Created: j.CreationTimestamp.Time, GPUs: j.Spec.GPUs}
		if p := holding[key]; p != nil {
			qj.State, qj.Node, qj.Started = queue.Holding, p.node, p.seen
		}
		s.Jobs = append(s.Jobs, qj)
	}
	d := queue.Decide(s)
	out := make(map[string]expected, len(d.Order))
	for _, e := range d.Order {
		if e.Position > 0 {
			out[e.Key] = expected{position: int32(e.Position), rank: int32(e.Rank)}
		}
	}
	return out
}

// waitQuiet waits until no pod was created for 2 s and every pod created runs.
func waitQuiet(ctx context.Context, timeout time.Duration, tl *Timeline, kub *Kubelet) error {
	return waitFor(ctx, timeout, func() bool {
		n, last := tl.createdCount()
		return time.Since(last) > 2*time.Second && kub.running.Load() >= int64(n)
	})
}

// waitFor polls cond every 20 ms until it holds.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// expected is a waiting job's position and rank.
type expected struct{ position, rank int32 }

// positionWatch follows the jobs' status against the expected positions.
type positionWatch struct {
	mu sync.Mutex
	// cur is every job's last seen position and rank.
	cur map[string]expected
	// During a measurement: exp, and the jobs not yet right among the first 100 and among all.
	exp             map[string]expected
	wrong100, wrong map[string]bool
	at100, atAll    time.Time
	started         time.Time
}

func (pw *positionWatch) observe(obj any) {
	j, ok := obj.(*cvlabv1alpha1.CvlabJob)
	if !ok {
		return
	}
	key := j.Namespace + "/" + j.Name
	var got expected
	if j.Status.QueuePosition != nil {
		got.position = *j.Status.QueuePosition
	}
	if j.Status.Rank != nil {
		got.rank = *j.Status.Rank
	}
	now := time.Now()
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if pw.cur == nil {
		pw.cur = map[string]expected{}
	}
	pw.cur[key] = got
	if pw.exp == nil {
		return
	}
	if want, ok := pw.exp[key]; ok && want == got {
		delete(pw.wrong, key)
		delete(pw.wrong100, key)
		pw.check(now)
	}
}

func (pw *positionWatch) check(now time.Time) {
	if len(pw.wrong100) == 0 && pw.at100.IsZero() {
		pw.at100 = now
	}
	if len(pw.wrong) == 0 && pw.atAll.IsZero() {
		pw.atAll = now
	}
}

func (pw *positionWatch) snapshot() map[string]expected {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	out := make(map[string]expected, len(pw.cur))
	for k, v := range pw.cur {
		out[k] = v
	}
	return out
}

func changed(before, exp map[string]expected) int {
	n := 0
	for k, v := range exp {
		if before[k] != v {
			n++
		}
	}
	return n
}

type probeRun struct {
	Probe
	elapsed time.Duration
}

// measure waits until every job of exp shows its expected position and rank.
func (pw *positionWatch) measure(ctx context.Context, kind string, exp map[string]expected, timeout time.Duration) probeRun {
	now := time.Now()
	pw.mu.Lock()
	pw.exp, pw.started = exp, now
	pw.at100, pw.atAll = time.Time{}, time.Time{}
	pw.wrong, pw.wrong100 = map[string]bool{}, map[string]bool{}
	for k, want := range exp {
		if pw.cur[k] != want {
			pw.wrong[k] = true
			if want.position <= 100 {
				pw.wrong100[k] = true
			}
		}
	}
	pw.check(now)
	pw.mu.Unlock()
	_ = waitFor(ctx, timeout, func() bool {
		pw.mu.Lock()
		defer pw.mu.Unlock()
		return !pw.atAll.IsZero()
	})
	pw.mu.Lock()
	defer pw.mu.Unlock()
	r := probeRun{Probe: Probe{Kind: kind, Waiting: len(exp), First100Seconds: -1, AllSeconds: -1}, elapsed: time.Since(now)}
	if !pw.at100.IsZero() {
		r.First100Seconds = pw.at100.Sub(now).Seconds()
	}
	if !pw.atAll.IsZero() {
		r.AllSeconds = pw.atAll.Sub(now).Seconds()
	}
	pw.exp = nil
	return r
}
