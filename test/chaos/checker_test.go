package chaos_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// checker verifies the queue's invariants from the API server's state, continuously:
//
// Hard invariants, which must hold in every state the API server goes through:
//   - at most one live pod (not terminating, not finished) per job;
//   - on every node, the GPUs of its unfinished pods (the queue's, terminating ones included, and
//     foreign ones) are at most its allocatable; the live pods of the queue hold at most
//     --gpu-capacity GPUs in total;
//   - a job becomes Succeeded or Failed only once its pod has ended (or vanished): checked on the
//     pods as they were at the resource version of the job's terminal write;
//   - a finished job has no live pod.
//
// They are checked on every pod event of a watch (each event is one state), and on consistent
// snapshots: jobs listed, then pods and nodes listed at exactly the jobs' resource version.
//
// Convergence invariants, which may be false for a moment after a change but must not stay false
// longer than the bound: every unfinished job is either waiting with no live pod, or Admitted /
// Running with exactly one live pod, the one its status names; no live pod of the queue outlives
// its job; every job's rank, GPU ordinals and queue position are the engine's answer
// (queue.Decide on a snapshot built from the API state); no job that the engine would admit on
// that state waits, and no preemption it asks for is left undone.
type checker struct {
	e    *env
	opts checkerOptions

	mu    sync.Mutex
	pods  map[types.UID]*corev1.Pod
	nodes map[string]*corev1.Node
	jobs  map[types.UID]*cvlabv1alpha1.CvlabJob

	violations []string
	reported   map[string]bool

	// History of the queue's pods, from the watch.
	podsOfJob   map[types.UID]map[string]bool
	stoppedLive map[types.UID]bool
	// endedOwn is, per job, its pod that ended by itself (Succeeded or Failed, never deleted):
	// the job's result, after which it must get no other pod.
	endedOwn   map[types.UID]string
	evictions  map[types.UID]int
	admissions []time.Time
	// timeline is each job's pod events, for failure messages.
	timeline map[types.UID][]string

	pending  map[string]time.Time
	classMax map[string]time.Duration
	held     bool
	marks    []mark

	snapshots, snapshotErrors int
	// watchOnly counts states that only the watch showed broken, not an exact read of them.
	watchOnly                          int
	watchOnlyExample                   string
	terminalChecked, terminalUnchecked int
	watchEvents                        int

	subs map[string][]chan struct{}
	wg   sync.WaitGroup
	// running counts the checks under way in their own goroutine (terminal moves, confirmations).
	running int
}

type checkerOptions struct {
	// capacity is the manager's --gpu-capacity (-1: none); policy and minRuntime its preemption flags.
	capacity   int32
	policy     queue.Policy
	minRuntime time.Duration
	// bound is how long a convergence invariant may stay false; orderBound, for the ranks and
	// positions shown in status and the first status of a new job (default: bound).
	bound, orderBound time.Duration
	// interval between consistent snapshots.
	interval time.Duration
}

// mark is one snapshot's answer to "does the engine admit a job on this state?".
type mark struct {
	at         time.Time
	admissible bool
}

func (e *env) startChecker(opts checkerOptions) *checker {
	if opts.bound == 0 {
		opts.bound = 20 * time.Second
	}
	if opts.orderBound == 0 {
		opts.orderBound = opts.bound
	}
	if opts.interval == 0 {
		opts.interval = 250 * time.Millisecond
	}
	c := &checker{
		e: e, opts: opts,
		pods: map[types.UID]*corev1.Pod{}, nodes: map[string]*corev1.Node{}, jobs: map[types.UID]*cvlabv1alpha1.CvlabJob{},
		reported: map[string]bool{}, podsOfJob: map[types.UID]map[string]bool{}, stoppedLive: map[types.UID]bool{},
		evictions: map[types.UID]int{}, endedOwn: map[types.UID]string{}, timeline: map[types.UID][]string{}, pending: map[string]time.Time{}, classMax: map[string]time.Duration{},
		subs: map[string][]chan struct{}{},
	}
	synced := make(chan struct{}, 3)
	go c.mirror(e.ctx, func() client.ObjectList { return &corev1.NodeList{} }, c.resetNodes, c.nodeEvent, synced)
	go c.mirror(e.ctx, func() client.ObjectList { return &corev1.PodList{} }, c.resetPods, c.podEvent, synced)
	go c.mirror(e.ctx, func() client.ObjectList { return &cvlabv1alpha1.CvlabJobList{} }, c.resetJobs, c.jobEvent, synced)
	for range 3 {
		<-synced
	}
	go c.snapshotLoop(e.ctx)
	e.t.Cleanup(c.wg.Wait)
	return c
}

// mirror keeps a list+watch of one kind: reset with each list, handle each event in order.
func (c *checker) mirror(ctx context.Context, newList func() client.ObjectList, reset func(client.ObjectList),
	handle func(watch.EventType, client.Object), synced chan<- struct{}) {
	first := true
	for ctx.Err() == nil {
		list := newList()
		if err := c.e.c.List(ctx, list); err != nil {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
		reset(list)
		if first {
			synced <- struct{}{}
			first = false
		}
		w, err := c.e.c.Watch(ctx, newList(), &client.ListOptions{Raw: &metav1.ListOptions{
			ResourceVersion: list.GetResourceVersion(), AllowWatchBookmarks: true}})
		if err != nil {
			sleep(ctx, 200*time.Millisecond)
			continue
		}
	events:
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Error:
				break events
			case watch.Bookmark:
				continue
			}
			if o, ok := ev.Object.(client.Object); ok {
				handle(ev.Type, o)
			}
		}
		w.Stop()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// violate records a violation once per key.
func (c *checker) violate(key, format string, args ...any) {
	if c.reported[key] {
		return
	}
	c.reported[key] = true
	msg := fmt.Sprintf("%s %s", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	c.violations = append(c.violations, msg)
}

// Violations returns what was found so far.
func (c *checker) Violations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.violations)
}

// assertNone fails the test with every violation found, once the checks under way are done.
func (c *checker) assertNone(t *testing.T) {
	t.Helper()
	_ = poll(c.e.ctx, 40*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.running > 0 {
			return fmt.Errorf("%d checks under way", c.running)
		}
		return nil
	})
	if v := c.Violations(); len(v) > 0 {
		t.Errorf("%d invariant violation(s):\n  %s", len(v), strings.Join(v, "\n  "))
	}
}

// hold suspends the convergence invariants (during a declared outage); release restarts their
// clocks.
func (c *checker) hold() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = true
	clear(c.pending)
}

func (c *checker) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	clear(c.pending)
}

// next returns a channel closed at the next event of a kind: "admission" (a pod of the queue
// appears), "eviction" (a live pod of the queue starts terminating), "preempted" (a job's status
// goes back to Queued with one more preemption).
func (c *checker) next(kind string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{})
	c.subs[kind] = append(c.subs[kind], ch)
	return ch
}

func (c *checker) notify(kind string) {
	for _, ch := range c.subs[kind] {
		close(ch)
	}
	c.subs[kind] = nil
}

func ownerJob(p *corev1.Pod) types.UID {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != "CvlabJob" {
		return ""
	}
	return ref.UID
}

func live(p *corev1.Pod) bool { return p.DeletionTimestamp == nil && !cluster.PodFinished(p) }

// --- nodes ---

func (c *checker) resetNodes(l client.ObjectList) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes = map[string]*corev1.Node{}
	for i := range l.(*corev1.NodeList).Items {
		n := &l.(*corev1.NodeList).Items[i]
		c.nodes[n.Name] = n
	}
}

func (c *checker) nodeEvent(t watch.EventType, o client.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := o.(*corev1.Node)
	if t == watch.Deleted {
		delete(c.nodes, n.Name)
		return
	}
	c.nodes[n.Name] = n
}

// --- pods ---

func (c *checker) resetPods(l client.ObjectList) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := map[types.UID]*corev1.Pod{}
	for i := range l.(*corev1.PodList).Items {
		p := &l.(*corev1.PodList).Items[i]
		next[p.UID] = p
		c.notePod(c.pods[p.UID], p)
	}
	for uid, p := range c.pods {
		if _, ok := next[uid]; !ok {
			c.noteGone(p)
		}
	}
	c.pods = next
	c.report(c.checkPods(podValues(c.pods), nil, "relist"))
}

func (c *checker) podEvent(t watch.EventType, o client.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchEvents++
	p := o.(*corev1.Pod)
	if owner := ownerJob(p); owner != "" {
		c.timeline[owner] = append(c.timeline[owner], fmt.Sprintf("%s %s %s rv=%s phase=%s node=%s deleting=%v", time.Now().Format("15:04:05.000"),
			t, p.Name, p.ResourceVersion, p.Status.Phase, p.Spec.NodeName, p.DeletionTimestamp != nil))
	}
	if t == watch.Deleted {
		if old, ok := c.pods[p.UID]; ok {
			c.noteGone(old)
		}
		delete(c.pods, p.UID)
		return
	}
	c.notePod(c.pods[p.UID], p)
	c.pods[p.UID] = p
	if found := c.checkPods(podValues(c.pods), nil, "pod watch at resourceVersion "+p.ResourceVersion); len(found) > 0 {
		// The watch's view is checked again by an exact read of that resource version, so that an
		// event the watch would have missed cannot make a false alarm.
		nodes := maps(c.nodes)
		c.running++
		c.wg.Add(1)
		go c.confirm(p.ResourceVersion, nodes, found)
	}
}

// notePod keeps the history of the queue's pods: admissions, and pods stopped while live.
func (c *checker) notePod(old, p *corev1.Pod) {
	owner := ownerJob(p)
	if owner == "" {
		return
	}
	if c.podsOfJob[owner] == nil {
		c.podsOfJob[owner] = map[string]bool{}
	}
	if old == nil && !c.podsOfJob[owner][p.Name] {
		c.podsOfJob[owner][p.Name] = true
		if first, ok := c.endedOwn[owner]; ok {
			c.violate("rerun/"+string(owner), "job %s got pod %s after its pod %s had ended by itself: it runs twice", owner, p.Name, first)
		}
		c.admissions = append(c.admissions, time.Now())
		c.notify("admission")
	}
	if cluster.PodFinished(p) && p.DeletionTimestamp == nil && !c.stoppedLive[p.UID] && podDisruption(p) == "" {
		if _, ok := c.endedOwn[owner]; !ok {
			c.endedOwn[owner] = p.Name
		}
	}
	if p.DeletionTimestamp != nil && !cluster.PodFinished(p) && !c.stoppedLive[p.UID] {
		c.stoppedLive[p.UID] = true
		c.evictions[owner]++
		c.notify("eviction")
	}
}

// noteGone counts a pod that vanished while live (its terminating state was not seen).
func (c *checker) noteGone(last *corev1.Pod) {
	if owner := ownerJob(last); owner != "" && !cluster.PodFinished(last) && !c.stoppedLive[last.UID] {
		c.stoppedLive[last.UID] = true
		c.evictions[owner]++
	}
}

func podValues(m map[types.UID]*corev1.Pod) []*corev1.Pod {
	out := make([]*corev1.Pod, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	return out
}

// finding is one broken invariant: a key (reported once) and what was seen.
type finding struct{ key, msg string }

func (c *checker) report(found []finding) {
	for _, f := range found {
		c.violate(f.key, "%s", f.msg)
	}
}

// confirm reads the pods at exactly rv, where the watch saw something wrong, and reports what
// that read shows; what only the watch showed is counted apart.
func (c *checker) confirm(rv string, nodes map[string]*corev1.Node, seen []finding) {
	defer c.wg.Done()
	var pods corev1.PodList
	err := poll(c.e.ctx, 30*time.Second, func() error {
		return c.e.c.List(c.e.ctx, &pods, &client.ListOptions{Raw: &metav1.ListOptions{
			ResourceVersion: rv, ResourceVersionMatch: metav1.ResourceVersionMatchExact}})
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running--
	if err != nil {
		c.report(seen) // cannot tell: report what the watch saw
		return
	}
	list := make([]*corev1.Pod, len(pods.Items))
	for i := range pods.Items {
		list[i] = &pods.Items[i]
	}
	found := c.checkPods(list, nodes, "exact read at resourceVersion "+rv)
	c.report(found)
	if len(found) == 0 {
		c.watchOnly++
		if c.watchOnlyExample == "" {
			c.watchOnlyExample = seen[0].msg
		}
	}
}

// checkPods checks the hard invariants on pods alone: GPUs per node and in total, one live pod
// per job. nodes defaults to the node mirror.
func (c *checker) checkPods(pods []*corev1.Pod, nodes map[string]*corev1.Node, where string) []finding {
	var found []finding
	if nodes == nil {
		nodes = c.nodes
	}
	perNode := map[string]int32{}
	holders := map[string][]string{}
	var queueLive int32
	liveOf := map[types.UID][]string{}
	for _, p := range pods {
		if cluster.PodFinished(p) {
			continue
		}
		g := cluster.PodGPUs(p)
		owner := ownerJob(p)
		if owner == "" && p.Spec.NodeName == "" {
			continue // a foreign pod not scheduled holds nothing
		}
		perNode[cluster.PodNode(p)] += g
		if g > 0 {
			holders[cluster.PodNode(p)] = append(holders[cluster.PodNode(p)], fmt.Sprintf("%s(%d,%s,rv=%s,deleting=%v)", p.Name, g, p.Status.Phase, p.ResourceVersion, p.DeletionTimestamp != nil))
		}
		if owner != "" && live(p) {
			queueLive += g
			liveOf[owner] = append(liveOf[owner], p.Namespace+"/"+p.Name)
		}
	}
	for name, used := range perNode {
		n, ok := nodes[name]
		if !ok || name == "" {
			continue
		}
		q := n.Status.Allocatable[controllers.ResourceGPU]
		if int64(used) > q.Value() {
			found = append(found, finding{"node/" + name + fmt.Sprint(used), fmt.Sprintf("over capacity on node %s: its unfinished pods hold %d GPUs, it has %d (%s): %v", name, used, q.Value(), where, holders[name])})
		}
	}
	if c.opts.capacity >= 0 && queueLive > c.opts.capacity {
		found = append(found, finding{fmt.Sprint("capacity/", queueLive), fmt.Sprintf("over --gpu-capacity: the queue's live pods hold %d GPUs > %d (%s)", queueLive, c.opts.capacity, where)})
	}
	for uid, names := range liveOf {
		if len(names) > 1 {
			slices.Sort(names)
			found = append(found, finding{"double/" + strings.Join(names, ","), fmt.Sprintf("job %s has %d live pods: %v (%s)", uid, len(names), names, where)})
		}
	}
	return found
}

// --- jobs ---

func (c *checker) resetJobs(l client.ObjectList) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := map[types.UID]*cvlabv1alpha1.CvlabJob{}
	initial := len(c.jobs) == 0 && c.snapshots == 0
	for i := range l.(*cvlabv1alpha1.CvlabJobList).Items {
		j := &l.(*cvlabv1alpha1.CvlabJobList).Items[i]
		next[j.UID] = j
		if !initial {
			c.noteJob(c.jobs[j.UID], j)
		}
	}
	c.jobs = next
}

func (c *checker) jobEvent(t watch.EventType, o client.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j := o.(*cvlabv1alpha1.CvlabJob)
	if t == watch.Deleted {
		delete(c.jobs, j.UID)
		return
	}
	c.noteJob(c.jobs[j.UID], j)
	c.jobs[j.UID] = j
}

func (c *checker) noteJob(old, j *cvlabv1alpha1.CvlabJob) {
	if controllers.IsFinished(&j.Status) && (old == nil || !controllers.IsFinished(&old.Status)) {
		c.running++
		c.wg.Add(1)
		go c.checkTerminal(j.DeepCopy())
	}
	if old != nil && j.Status.Phase == cvlabv1alpha1.PhaseQueued && j.Status.Preemptions > old.Status.Preemptions {
		c.notify("preempted")
	}
}

// checkTerminal checks the job's pods as they were when the job was written Succeeded or Failed.
func (c *checker) checkTerminal(j *cvlabv1alpha1.CvlabJob) {
	defer c.wg.Done()
	var pods corev1.PodList
	err := poll(c.e.ctx, 30*time.Second, func() error {
		return c.e.c.List(c.e.ctx, &pods, client.InNamespace(j.Namespace), &client.ListOptions{Raw: &metav1.ListOptions{
			ResourceVersion: j.ResourceVersion, ResourceVersionMatch: metav1.ResourceVersionMatchExact}})
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running--
	if err != nil {
		c.terminalUnchecked++
		return
	}
	c.terminalChecked++
	for i := range pods.Items {
		p := &pods.Items[i]
		if ownerJob(p) != j.UID {
			continue
		}
		switch {
		case live(p):
			c.violate("terminal/"+string(j.UID), "job %s/%s became %s at resourceVersion %s while its pod %s was live (%s)",
				j.Namespace, j.Name, j.Status.Phase, j.ResourceVersion, p.Name, p.Status.Phase)
		case p.Name == j.Status.PodName && !cluster.PodFinished(p):
			c.violate("terminal/"+string(j.UID), "job %s/%s became %s (%s) at resourceVersion %s while its pod %s had not ended (terminating, phase %s)",
				j.Namespace, j.Name, j.Status.Phase, j.Status.Message, j.ResourceVersion, p.Name, p.Status.Phase)
		}
	}
}

// --- consistent snapshots ---

func (c *checker) snapshotLoop(ctx context.Context) {
	tick := time.NewTicker(c.opts.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s, err := c.e.snapshot(ctx)
		c.mu.Lock()
		if err != nil {
			c.snapshotErrors++
		} else {
			c.snapshots++
			c.analyze(s)
		}
		c.mu.Unlock()
	}
}

// state is the cluster at one resource version.
type state struct {
	at    time.Time
	rv    string
	jobs  []cvlabv1alpha1.CvlabJob
	pods  []corev1.Pod
	nodes []corev1.Node
}

// snapshot lists the jobs, then the pods and nodes at exactly the jobs' resource version.
func (e *env) snapshot(ctx context.Context) (*state, error) {
	var jobs cvlabv1alpha1.CvlabJobList
	if err := e.c.List(ctx, &jobs); err != nil {
		return nil, err
	}
	s := &state{at: time.Now(), rv: jobs.ResourceVersion, jobs: jobs.Items}
	exact := &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: jobs.ResourceVersion, ResourceVersionMatch: metav1.ResourceVersionMatchExact}}
	var pods corev1.PodList
	if err := e.c.List(ctx, &pods, exact); err != nil {
		return nil, err
	}
	var nodes corev1.NodeList
	if err := e.c.List(ctx, &nodes, exact); err != nil {
		return nil, err
	}
	s.pods, s.nodes = pods.Items, nodes.Items
	return s, nil
}

// jobState is one job of a state with its pods.
type jobState struct {
	job  *cvlabv1alpha1.CvlabJob
	live []*corev1.Pod
	pods []*corev1.Pod
}

func (s *state) index() (map[types.UID]*jobState, []*corev1.Pod) {
	jobs := map[types.UID]*jobState{}
	for i := range s.jobs {
		jobs[s.jobs[i].UID] = &jobState{job: &s.jobs[i]}
	}
	var others []*corev1.Pod
	for i := range s.pods {
		p := &s.pods[i]
		js, ok := jobs[ownerJob(p)]
		if !ok {
			others = append(others, p)
			continue
		}
		js.pods = append(js.pods, p)
		if live(p) {
			js.live = append(js.live, p)
		}
	}
	return jobs, others
}

// active tells whether the queue orders the job: not finished, not suspended, valid.
func active(j *cvlabv1alpha1.CvlabJob) bool {
	return !controllers.IsFinished(&j.Status) && !j.Spec.Suspend && j.Spec.GPUs >= 0
}

// engine builds the engine's input from a state, as the operator would after a restart (no
// reservations, backoffs or head timer), and returns its decision.
func (c *checker) engine(s *state, jobs map[types.UID]*jobState, others []*corev1.Pod) (queue.Decision, map[string]*jobState) {
	snap := queue.Snapshot{Now: s.at, MaxHeadWait: -1, Preemption: c.opts.policy, MinRuntime: c.opts.minRuntime, Capacity: c.opts.capacity}
	busy, terminating := map[string]int32{}, map[string]int32{}
	hold := func(p *corev1.Pod, stopping bool) {
		if cluster.PodFinished(p) {
			return
		}
		n := cluster.PodNode(p)
		busy[n] += cluster.PodGPUs(p)
		if stopping {
			terminating[n] += cluster.PodGPUs(p)
		}
	}
	for _, p := range others {
		if ownerJob(p) != "" || p.Spec.NodeName != "" {
			hold(p, ownerJob(p) != "" && p.DeletionTimestamp != nil)
		}
	}
	byKey := map[string]*jobState{}
	for _, js := range jobs {
		j := js.job
		for _, p := range js.pods {
			if !live(p) {
				hold(p, true)
			} else if !active(j) {
				hold(p, false)
			}
		}
		if !active(j) {
			continue
		}
		key := j.Namespace + "/" + j.Name
		byKey[key] = js
		qj := queue.Job{Key: key, User: j.Spec.User, Priority: j.Spec.Priority, Created: j.CreationTimestamp.Time, GPUs: j.Spec.GPUs}
		if len(js.live) > 0 {
			qj.State = queue.Holding
			qj.Node = cluster.PodNode(js.live[0])
			if j.Status.StartTime != nil {
				qj.Started = j.Status.StartTime.Time
			}
		}
		snap.Jobs = append(snap.Jobs, qj)
	}
	for i := range s.nodes {
		n := &s.nodes[i]
		q, ok := n.Status.Allocatable[controllers.ResourceGPU]
		if !ok || !cluster.NodeSchedulable(n) || q.Value() <= 0 {
			continue
		}
		snap.Nodes = append(snap.Nodes, queue.Node{Name: n.Name, GPUs: int32(q.Value()), Busy: busy[n.Name], Terminating: terminating[n.Name]})
	}
	if snap.Nodes == nil {
		snap.Nodes = []queue.Node{}
	}
	return queue.Decide(snap), byKey
}

// analyze checks one consistent state.
func (c *checker) analyze(s *state) {
	where := "snapshot at resourceVersion " + s.rv
	nodes := map[string]*corev1.Node{}
	for i := range s.nodes {
		nodes[s.nodes[i].Name] = &s.nodes[i]
	}
	pods := make([]*corev1.Pod, len(s.pods))
	for i := range s.pods {
		pods[i] = &s.pods[i]
	}
	c.report(c.checkPods(pods, nodes, where))

	jobs, others := s.index()
	now := map[string]string{} // convergence conditions that are false now → description
	for _, js := range jobs {
		j, key := js.job, js.job.Namespace+"/"+js.job.Name
		finished := controllers.IsFinished(&j.Status)
		if finished && len(js.live) > 0 {
			c.violate("finished-live/"+key, "finished job %s (%s) has a live pod %s (%s)", key, j.Status.Phase, js.live[0].Name, where)
		}
		if finished {
			continue
		}
		switch j.Status.Phase {
		case "":
			now["new/"+key] = "job " + key + " has no status yet"
		case cvlabv1alpha1.PhaseQueued, cvlabv1alpha1.PhaseSuspended:
			if len(js.live) > 0 {
				now["waiting-with-pod/"+key] = fmt.Sprintf("job %s is %s but has the live pod %s", key, j.Status.Phase, js.live[0].Name)
			}
		case cvlabv1alpha1.PhaseAdmitted, cvlabv1alpha1.PhaseRunning:
			switch {
			case len(js.live) == 0:
				now["holding-without-pod/"+key] = fmt.Sprintf("job %s is %s (pod %s) but has no live pod", key, j.Status.Phase, j.Status.PodName)
			case js.live[0].Name != j.Status.PodName:
				now["podname/"+key] = fmt.Sprintf("job %s names pod %s but its live pod is %s", key, j.Status.PodName, js.live[0].Name)
			}
		}
	}
	for _, p := range others {
		if ownerJob(p) != "" && live(p) {
			now["orphan/"+p.Namespace+"/"+p.Name] = fmt.Sprintf("pod %s/%s outlives its job", p.Namespace, p.Name)
		}
	}

	d, byKey := c.engine(s, jobs, others)
	admissible := len(d.AdmitCPU) > 0
	for _, k := range d.AdmitCPU {
		now["idle/"+k] = "CPU job " + k + " is not admitted"
	}
	pos := 0
	ordered := map[string]bool{}
	for _, e := range d.Order {
		js := byKey[e.Key]
		ordered[e.Key] = true
		st := &js.job.Status
		wantPos := 0
		if e.State == queue.Waiting {
			pos++
			wantPos = pos
		}
		if e.Admit {
			admissible = true
			now["idle/"+e.Key] = fmt.Sprintf("job %s fits on node %s but is not admitted", e.Key, e.Node)
		}
		if got := deref(st.Rank); got != e.Rank || st.UserGPUs != e.UserGPUs() || deref(st.QueuePosition) != wantPos {
			now["order/"+e.Key] = fmt.Sprintf("job %s shows rank %d, GPU# %q, position %d; the engine says rank %d, GPU# %q, position %d",
				e.Key, deref(st.Rank), st.UserGPUs, deref(st.QueuePosition), e.Rank, e.UserGPUs(), wantPos)
		}
	}
	for k, js := range byKey {
		if !ordered[k] && (js.job.Status.Rank != nil || js.job.Status.QueuePosition != nil) {
			now["order/"+k] = fmt.Sprintf("job %s is not in the GPU order but shows rank %d, position %d", k, deref(js.job.Status.Rank), deref(js.job.Status.QueuePosition))
		}
	}
	for _, pr := range d.Preemptions {
		now["preempt/"+pr.Preemptor] = fmt.Sprintf("job %s should evict %v on node %s", pr.Preemptor, pr.Victims, pr.Node)
	}
	c.marks = append(c.marks, mark{at: s.at, admissible: admissible})

	if c.held {
		return
	}
	for k, first := range c.pending {
		if _, still := now[k]; !still {
			class := k[:strings.IndexByte(k, '/')]
			c.classMax[class] = max(c.classMax[class], s.at.Sub(first))
			delete(c.pending, k)
		}
	}
	for k, desc := range now {
		first, ok := c.pending[k]
		if !ok {
			c.pending[k] = s.at
			continue
		}
		bound := c.opts.bound
		if strings.HasPrefix(k, "order/") || strings.HasPrefix(k, "new/") {
			bound = c.opts.orderBound // what status shows of a waiting job
		}
		if s.at.Sub(first) > bound {
			c.violate("stuck/"+k, "for more than %s: %s (%s)", c.opts.bound, desc, where)
		}
	}
}

func deref(p *int32) int {
	if p == nil {
		return 0
	}
	return int(*p)
}

// quiet waits until the state is converged: no convergence invariant false, the order and
// positions exactly the engine's, nothing left to admit or evict.
func (c *checker) quiet(timeout time.Duration) error {
	return poll(c.e.ctx, timeout, func() error {
		s, err := c.e.snapshot(c.e.ctx)
		if err != nil {
			return err
		}
		probe := &checker{e: c.e, opts: c.opts, reported: map[string]bool{}, pending: map[string]time.Time{},
			classMax: map[string]time.Duration{}, subs: map[string][]chan struct{}{}, nodes: map[string]*corev1.Node{}}
		probe.opts.bound, probe.opts.orderBound = -1, -1 // any false convergence invariant counts
		probe.analyze(s)
		probe.analyze(s)
		if len(probe.violations) > 0 {
			sort.Strings(probe.violations)
			if len(probe.violations) > 5 {
				probe.violations = append(probe.violations[:5], fmt.Sprintf("... %d more", len(probe.violations)-5))
			}
			return fmt.Errorf("not quiet: %s", strings.Join(probe.violations, "; "))
		}
		return nil
	})
}

// resumeTimes measures, for each manager run [start, end), how long after its start the first
// pod was created, when the engine had a job to admit at its start. Runs that ended before
// admitting are counted apart (killed before resuming).
func (c *checker) resumeTimes(runs [][2]time.Time) (times []time.Duration, censored int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range runs {
		start, end := r[0], r[1]
		i := sort.Search(len(c.marks), func(i int) bool { return c.marks[i].at.After(start) })
		if i == len(c.marks) || !c.marks[i].admissible || c.marks[i].at.After(end) {
			continue
		}
		k := sort.Search(len(c.admissions), func(k int) bool { return c.admissions[k].After(start) })
		if k == len(c.admissions) || !c.admissions[k].Before(end) {
			censored++
			continue
		}
		times = append(times, c.admissions[k].Sub(start))
	}
	return times, censored
}

// stats returns the checker's counters for the report.
func (c *checker) stats() map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[string]any{
		"violations": len(c.violations), "snapshots": c.snapshots, "snapshotErrors": c.snapshotErrors,
		"podEvents": c.watchEvents, "terminalChecked": c.terminalChecked, "terminalUnchecked": c.terminalUnchecked,
		"watchOnlyFindings": c.watchOnly,
	}
	if c.watchOnly > 0 {
		m["watchOnlyExample"] = c.watchOnlyExample
	}
	for class, d := range c.classMax {
		m["longest_"+class+"_s"] = seconds(d)
	}
	return m
}

// history returns, per job UID, the pods created for it and its pods stopped while live.
func (c *checker) history() (pods map[types.UID]int, stopped map[types.UID]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pods = map[types.UID]int{}
	for uid, names := range c.podsOfJob {
		pods[uid] = len(names)
	}
	return pods, maps(c.evictions)
}

func maps[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// podTimeline returns the pod events the watch saw for a job.
func (c *checker) podTimeline(uid types.UID) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return "  pod events: \n    " + strings.Join(c.timeline[uid], "\n    ")
}

// firstAdmissibleAfter returns the time of the first snapshot after t0 in which the engine would
// admit a job, if any was taken yet.
func (c *checker) firstAdmissibleAfter(t0 time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.marks {
		if m.at.After(t0) && m.admissible {
			return m.at, true
		}
	}
	return time.Time{}, false
}

// podDisruption tells whether a pod was failed by the cluster for its node (kubelet eviction,
// pod GC): not the job's result.
func podDisruption(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue {
			return c.Reason
		}
	}
	if p.Status.Reason == "Evicted" {
		return "Evicted"
	}
	return ""
}
