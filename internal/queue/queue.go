// Package queue is the lab's fair-share rule as a pure function: a Snapshot of jobs and capacity
// goes in, a Decision (the global order, ranks, positions and the jobs to admit) comes out.
//
// It has no client, no clock and no goroutines, so every sentence of the rule is unit-tested on
// plain values. The controller builds the Snapshot from its caches, calls Decide, then acts.
//
// The rule:
//  1. The active GPU jobs of each user (waiting or holding GPUs) are sorted by priority (desc), then
//     creation time, then namespace/name. Walking that list, a job's ordinal is the user's GPU count
//     through this job: a user's 2-GPU first job has ordinal 2 and covers the user's GPUs "1-2".
//  2. The global order sorts all active GPU jobs by ordinal (asc), then creation time, then
//     namespace/name. A job's rank is its 1-based index in that order.
//  3. Admission walks the global order: a waiting job is admitted when the free GPUs (capacity
//     minus GPUs held) cover it. A job that does not fit does not block smaller jobs behind it,
//     until it has been the first waiting job for MaxHeadWait; then nothing ranked below it is
//     admitted until it starts.
//  4. CPU-only jobs (0 GPUs) are admitted at once and take no part in the order.
//
// With Nodes, a job is placed on one node that has enough free GPUs (best fit, so that whole
// nodes stay free for big jobs); a job larger than every node is never admitted. A waiting job
// that the Preemption policy allows, and that cannot start otherwise, evicts running jobs ranked
// strictly below it on one node (lowest-ranked first, no more than needed, none younger than
// MinRuntime); the GPUs they free are reserved for it. Since a victim always ranks below its
// preemptor, it can never evict the preemptor back: evictions cannot loop.
package queue

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// State is where a job stands from the queue's point of view.
type State int

const (
	// Waiting jobs want GPUs and hold none.
	Waiting State = iota
	// Holding jobs hold their GPUs: admitted, running, or terminating but not gone yet.
	Holding
)

// Policy says which waiting jobs may evict running ones.
type Policy int

const (
	// PreemptFirstGPU lets a waiting job whose user ordinal starts at 1 evict (the lab's rule).
	PreemptFirstGPU Policy = iota
	// PreemptRank lets any waiting job evict running jobs ranked below it.
	PreemptRank
	// PreemptNever never evicts.
	PreemptNever
)

// Job is one active job (not finished, not suspended) as the queue sees it.
type Job struct {
	// Key is "namespace/name": unique, and the last tie-break.
	Key      string
	User     string
	Priority int32
	Created  time.Time
	GPUs     int32
	State    State
	// Node is where a Holding job's GPUs are ("" when unknown or in pool mode).
	Node string
	// Started is when a Holding job's pod started running; zero if it has not.
	Started time.Time
	// NotBefore holds a Waiting job back until then (backoff after a failed start).
	NotBefore time.Time
	// Evicting marks a Holding job whose pod is being stopped by a preemption: it holds its
	// GPUs until it is gone, and is not chosen as a victim again.
	Evicting bool
}

// Node is one schedulable GPU node.
type Node struct {
	Name string
	// GPUs is the node's allocatable nvidia.com/gpu.
	GPUs int32
	// Busy are GPUs taken by pods that are not active jobs: other people's pods, and the
	// queue's pods being deleted.
	Busy int32
	// Terminating are the part of Busy held by the queue's pods being stopped: they will be
	// free soon, so a preemptor may count on them instead of evicting more jobs.
	Terminating int32
}

// Snapshot is everything a decision depends on.
type Snapshot struct {
	Jobs []Job
	// Nodes are the Ready GPU nodes. When nil, the queue is one pool of Capacity GPUs (minus
	// PoolBusy) and placement is left to the scheduler.
	Nodes []Node
	// Capacity is the number of GPUs the queue may hand out: the pool's size, or with Nodes an
	// upper bound on the GPUs its jobs hold (negative: no bound).
	Capacity int32
	// PoolBusy are the pool's GPUs held outside the active jobs, of which PoolTerminating by
	// the queue's pods being stopped (see Node).
	PoolBusy, PoolTerminating int32
	// Now is the decision time.
	Now time.Time
	// MaxHeadWait is how long the first waiting job may be passed by smaller jobs behind it
	// before it blocks them. Zero means it blocks at once; negative means never.
	MaxHeadWait time.Duration
	// Head is the key of the first waiting job of the previous decision and HeadSince the time it
	// became first; both come from the previous Decision.
	Head      string
	HeadSince time.Time
	// Preemption says who may evict; MinRuntime how long a job runs before it may be evicted.
	Preemption Policy
	MinRuntime time.Duration
	// Reserved maps a waiting preemptor's key to the node whose GPUs its victims free for it.
	Reserved map[string]string
}

// Entry is one active GPU job in the global order.
type Entry struct {
	Job
	// Rank is the 1-based place in the global order.
	Rank int
	// FirstGPU and LastGPU are the user's GPU ordinals the job covers; LastGPU is its ordinal.
	FirstGPU, LastGPU int32
	// Admit is true when the job is waiting and is admitted by this decision, on Node.
	Admit bool
	// Position is the 1-based place among the jobs still waiting after this decision; 0 if none.
	Position int
	// Reason says why a job still waits; empty when it does not.
	Reason string
}

// Preemption is one waiting job evicting running jobs ranked below it, on one node.
type Preemption struct {
	Preemptor string
	Node      string
	// Victims are the keys of the evicted jobs, lowest-ranked first.
	Victims []string
}

// UserGPUs renders the user's GPU ordinals the job covers: "1", "2-3".
func (e Entry) UserGPUs() string {
	if e.FirstGPU == e.LastGPU {
		return strconv.Itoa(int(e.LastGPU))
	}
	return fmt.Sprintf("%d-%d", e.FirstGPU, e.LastGPU)
}

// Decision is the outcome of Decide.
type Decision struct {
	// Order is the global fair-share order of the active GPU jobs.
	Order []Entry
	// AdmitCPU are the keys of waiting CPU-only jobs: they are admitted at once.
	AdmitCPU []string
	// Used is the number of GPUs held, and Free the number left after this decision's admissions.
	Used, Free int32
	// Head is the first job still waiting after this decision ("" if none), HeadSince when it
	// became first, and Blocking whether it now holds back every job ranked below it.
	Head      string
	HeadSince time.Time
	Blocking  bool
	// Wakeup is when the decision changes by itself with no other input (the head starts
	// blocking, a backoff ends, a victim reaches its minimum run time); zero if never.
	Wakeup time.Time
	// Preemptions are the evictions this decision asks for.
	Preemptions []Preemption
	// Reserved maps each waiting preemptor's key to the node whose GPUs are promised to it:
	// the previous reservations still waiting, and the new ones. Pass it back in the next
	// Snapshot.
	Reserved map[string]string
}

// CompareInUser orders the jobs of one user: higher priority first, then the earlier job, then
// namespace/name.
func CompareInUser(a, b *Job) int {
	if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
		return c
	}
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	return cmp.Compare(a.Key, b.Key)
}

// CompareGlobal orders entries across users: lower ordinal first, then the earlier job, then
// namespace/name.
func CompareGlobal(a, b *Entry) int {
	if c := cmp.Compare(a.LastGPU, b.LastGPU); c != 0 {
		return c
	}
	if c := a.Created.Compare(b.Created); c != 0 {
		return c
	}
	return cmp.Compare(a.Key, b.Key)
}

// Order returns the global fair-share order of the GPU jobs in jobs, with ranks and ordinals set.
// Jobs with no GPUs are left out.
//
// It sorts twice, each time on keys packed into one integer when they fit (they do for any real
// queue): the jobs by user, then within a user as CompareInUser; then the global order as
// CompareGlobal. Packed keys are sorted by radix, in linear time; equal packed keys (jobs
// created in the same second) are then ordered by namespace/name. Keys that do not fit in 64
// bits (creation times centuries apart, priorities far outside -1000..1000) fall back to a
// comparison sort with the same result.
func Order(jobs []Job) []Entry {
	ids := make(map[string]int32, 64)
	var (
		idx              []int32 // the GPU jobs, by index into jobs
		user             []int32 // their user ids
		minPrio, maxPrio int32
		t                timeCode
	)
	for i := range jobs {
		j := &jobs[i]
		if j.GPUs <= 0 {
			continue
		}
		id, ok := ids[j.User]
		if !ok {
			id = int32(len(ids))
			ids[j.User] = id
		}
		if len(idx) == 0 {
			minPrio, maxPrio = j.Priority, j.Priority
		}
		minPrio, maxPrio = min(minPrio, j.Priority), max(maxPrio, j.Priority)
		t.see(j.Created, len(idx) == 0)
		idx = append(idx, int32(i))
		user = append(user, id)
	}
	n := len(idx)
	tBits := t.bits()
	keys, tmp := make([]packed, n), make([]packed, n)

	// 1. By user, then CompareInUser: higher priority first, the earlier job, the name.
	uBits, pBits := bitLen(uint64(len(ids))), bitLen(uint64(int64(maxPrio)-int64(minPrio)))
	userShift := 0 // where the user id is in a key
	if tBits >= 0 && uBits+pBits+tBits <= 64 {
		userShift = pBits + tBits
		for k, i := range idx {
			j := &jobs[i]
			keys[k] = packed{job: i, key: uint64(user[k])<<(pBits+tBits) | uint64(int64(maxPrio)-int64(j.Priority))<<tBits | t.code(j.Created)}
		}
		radixSort(keys, tmp, uBits+pBits+tBits)
		breakTies(keys, jobs)
	} else {
		for k, i := range idx {
			keys[k] = packed{job: i, key: uint64(user[k])}
		}
		slices.SortFunc(keys, func(a, b packed) int {
			return cmp.Or(cmp.Compare(a.key, b.key), CompareInUser(&jobs[a.job], &jobs[b.job]))
		})
	}

	// 2. Ordinals, walking each user's jobs.
	first, last := make([]int32, n), make([]int32, n) // by place in keys
	var through, maxLast int32
	for k := range keys {
		if k == 0 || keys[k].key>>userShift != keys[k-1].key>>userShift {
			through = 0
		}
		first[k] = through + 1
		through += jobs[keys[k].job].GPUs
		last[k] = through
		maxLast = max(maxLast, through)
	}

	// 3. The global order, CompareGlobal: the lower ordinal, the earlier job, the name.
	global := tmp
	lBits := bitLen(uint64(maxLast))
	packs := tBits >= 0 && lBits+tBits <= 64
	for k := range keys {
		j := keys[k].job
		g := packed{job: j, at: int32(k), key: uint64(last[k])}
		if packs {
			g.key = g.key<<tBits | t.code(jobs[j].Created)
		}
		global[k] = g
	}
	if packs {
		radixSort(global, keys, lBits+tBits)
		breakTies(global, jobs)
	} else {
		slices.SortFunc(global, func(a, b packed) int {
			return cmp.Or(cmp.Compare(a.key, b.key), jobs[a.job].Created.Compare(jobs[b.job].Created),
				strings.Compare(jobs[a.job].Key, jobs[b.job].Key))
		})
	}
	order := make([]Entry, n)
	for r, g := range global {
		order[r] = Entry{Job: jobs[g.job], FirstGPU: first[g.at], LastGPU: last[g.at], Rank: r + 1}
	}
	return order
}

// packed is a sort key packed into an integer, with the job's index into the input and its
// place in the previous stage's order.
type packed struct {
	key uint64
	job int32
	at  int32
}

// timeCode packs creation times into as few bits as their spread needs: seconds since the
// earliest when all are whole seconds (as Kubernetes' creation timestamps are), nanoseconds
// otherwise.
type timeCode struct {
	minSec, maxSec int64
	nanos          bool
}

func (c *timeCode) see(t time.Time, first bool) {
	s := t.Unix()
	if first {
		c.minSec, c.maxSec = s, s
	}
	c.minSec, c.maxSec = min(c.minSec, s), max(c.maxSec, s)
	c.nanos = c.nanos || t.Nanosecond() != 0
}

// bits is the width of a code, or -1 when the spread does not fit in 63 bits.
func (c *timeCode) bits() int {
	if c.maxSec-c.minSec < 0 {
		return -1 // times further apart than an int64 of seconds: the subtraction overflowed
	}
	spread := uint64(c.maxSec - c.minSec)
	if !c.nanos {
		return bitLen(spread)
	}
	if spread >= 1<<63/1_000_000_000-1 {
		return -1
	}
	return bitLen(spread*1_000_000_000 + 999_999_999)
}

func (c *timeCode) code(t time.Time) uint64 {
	s := uint64(t.Unix() - c.minSec)
	if !c.nanos {
		return s
	}
	return s*1_000_000_000 + uint64(t.Nanosecond())
}

// bitLen is the number of bits needed to write v.
func bitLen(v uint64) int {
	n := 0
	for ; v != 0; v >>= 1 {
		n++
	}
	return n
}

// radixSort sorts a by key, stably, looking at the low bits bits; tmp is scratch of a's size.
func radixSort(a, tmp []packed, bits int) {
	if len(a) == 0 {
		return
	}
	src, dst := a, tmp
	for shift := 0; shift < bits; shift += 8 {
		var count [256]int
		for i := range src {
			count[byte(src[i].key>>shift)]++
		}
		if count[byte(src[0].key>>shift)] == len(src) {
			continue // the same digit everywhere
		}
		pos := 0
		for d := range count {
			count[d], pos = pos, pos+count[d]
		}
		for i := range src {
			d := byte(src[i].key >> shift)
			dst[count[d]] = src[i]
			count[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &a[0] {
		copy(a, src)
	}
}

// breakTies orders the runs of equal keys in sorted a by namespace/name.
func breakTies(a []packed, jobs []Job) {
	for i := 0; i < len(a); {
		k := i + 1
		for k < len(a) && a[k].key == a[i].key {
			k++
		}
		if k-i > 1 {
			slices.SortFunc(a[i:k], func(x, y packed) int { return strings.Compare(jobs[x.job].Key, jobs[y.job].Key) })
		}
		i = k
	}
}

// Decide applies the rule to a snapshot.
func Decide(s Snapshot) Decision {
	d := Decision{Order: Order(s.Jobs)}
	for _, j := range s.Jobs {
		if j.GPUs <= 0 && j.State == Waiting {
			d.AdmitCPU = append(d.AdmitCPU, j.Key)
		}
	}
	slices.Sort(d.AdmitCPU)

	p := newPlacement(s, d.Order)
	d.Used = p.used
	wake := func(t time.Time) {
		if !t.IsZero() && (d.Wakeup.IsZero() || t.Before(d.Wakeup)) {
			d.Wakeup = t
		}
	}

	// The first waiting job that does not fit this round is the head. It blocks the jobs behind
	// it once it has been head for MaxHeadWait, unless it can never fit at all.
	headIdx := -1
	held := "" // the reason of every job held behind a blocking head: the same sentence for all
	for i := range d.Order {
		e := &d.Order[i]
		if e.State != Waiting {
			continue
		}
		// A preemptor's reservation is its own to use.
		var (
			res      claim
			reserved bool
		)
		if res = p.claims[i]; res.held {
			reserved = true
			p.release(res)
		}
		keepReservation := func() {
			if reserved {
				p.claim(res)
			}
		}
		switch {
		case d.Blocking:
			if held == "" {
				held = fmt.Sprintf("held behind %s, which waits for %s", d.Head, gpus(d.Order[headIdx].GPUs))
			}
			e.Reason = held
			keepReservation()
			continue
		case s.Now.Before(e.NotBefore):
			e.Reason = "backing off after a failed start until " + e.NotBefore.UTC().Format(time.RFC3339)
			wake(e.NotBefore)
			keepReservation()
			continue
		}
		if n, ok := p.fit(e.GPUs, res.node, reserved); ok {
			e.Admit, e.Node = true, p.names[n]
			p.free[n] -= e.GPUs
			p.capFree -= e.GPUs
			p.changes++
			continue
		}
		if reserved {
			keepReservation()
			e.Node = p.names[res.node]
			e.Reason = "waiting for the jobs it preempted to stop" + onNode(e.Node)
			continue
		}
		if msg := p.never(e.GPUs); msg != "" {
			e.Reason = msg
			continue
		}
		if eligible(s.Preemption, e) {
			if n, ok := p.fitSoon(e.GPUs); ok {
				// GPUs being freed are enough: promise them, evict no one.
				p.hold(i, p.reserve(n, e.GPUs))
				e.Node = p.names[n]
				e.Reason = "waiting for GPUs being freed" + onNode(e.Node)
				continue
			}
			pr, at, ok := p.preempt(d.Order, i)
			if ok {
				d.Preemptions = append(d.Preemptions, pr)
				e.Node = pr.Node
				e.Reason = fmt.Sprintf("preempting %d lower-ranked job(s)%s", len(pr.Victims), onNode(pr.Node))
				continue
			}
			wake(at)
		}
		e.Reason = p.shortfall(e.GPUs)
		if headIdx >= 0 {
			continue
		}
		headIdx = i
		d.Head = e.Key
		d.HeadSince = s.Now
		if s.Head == e.Key && !s.HeadSince.IsZero() {
			d.HeadSince = s.HeadSince
		}
		if s.MaxHeadWait >= 0 {
			deadline := d.HeadSince.Add(s.MaxHeadWait)
			if !s.Now.Before(deadline) {
				d.Blocking = true
				e.Reason += "; first in line, so no job ranked below it starts before it"
			} else {
				wake(deadline)
			}
		}
	}
	d.Free = p.totalFree()
	if len(p.claimed) > 0 {
		d.Reserved = make(map[string]string, len(p.claimed))
		for _, i := range p.claimed {
			if e := &d.Order[i]; e.State == Waiting && !e.Admit {
				d.Reserved[e.Key] = p.names[p.claims[i].node]
			}
		}
		if len(d.Reserved) == 0 { // every reserved job started
			d.Reserved = nil
		}
	}

	pos := 0
	for i := range d.Order {
		if e := &d.Order[i]; e.State == Waiting && !e.Admit {
			pos++
			e.Position = pos
		}
	}
	return d
}

func eligible(p Policy, e *Entry) bool {
	switch p {
	case PreemptFirstGPU:
		return e.FirstGPU == 1
	case PreemptRank:
		return true
	}
	return false
}

func onNode(n string) string {
	if n == "" {
		return ""
	}
	return " on node " + n
}

// placement tracks free GPUs per node during one decision. Pool mode is one node named "".
// Nodes are numbered in name order, and everything per node is a slice indexed by that number:
// the decision's inner loops (best fit, victims) do no hashing.
type placement struct {
	pool  bool
	names []string       // node names, sorted
	index map[string]int // node name → number
	alloc []int32
	free  []int32 // may be negative while reserved or over-committed
	// soon are GPUs being freed by pods that are stopping, by node: promised to no one yet.
	soon     []int32
	onNode   [][]holder // the Holding jobs, by node, in rank order
	evicting []bool     // by index into the order
	// claims are the claims of waiting preemptors, by index into the order; claimed lists
	// those indices.
	claims   []claim
	claimed  []int
	largest  int32
	capacity int32 // upper bound on held GPUs; negative: none
	capFree  int32
	used     int32
	// changes counts changes to free GPUs; shortfall's cache is valid while it stays sumsAt.
	changes, sumsAt int
	// total free, most free on one node, most free plus being freed on one node.
	total, most, mostSoon int32
	reasons               map[int32]string
	scratch               [2][]int
}

// claim is what a preemptor holds on a node: GPUs promised out of those being freed (soon) and
// out of those free now.
type claim struct {
	node           int
	fromSoon, free int32
	held           bool
}

// hold records the claim of the waiting job order[i].
func (p *placement) hold(i int, c claim) {
	c.held = true
	p.claims[i] = c
	p.claimed = append(p.claimed, i)
}

// holder is a Holding job on a node, as a possible victim.
type holder struct {
	at   int // index into the order
	gpus int32
	// started tells whether its pod started; young, whether it did less than MinRuntime ago,
	// and then ready is when it becomes evictable.
	started, young bool
	ready          time.Time
}

// reserve promises g GPUs of node n to a preemptor: those free now first, then those being
// freed. Reservations are made in rank order, so a higher-ranked preemptor gets the GPUs that
// are free first and starts first.
func (p *placement) reserve(n int, g int32) claim {
	c := claim{node: n, free: min(g, max(p.free[n], 0))}
	c.fromSoon = g - c.free
	p.claim(c)
	return c
}

func (p *placement) claim(c claim) {
	p.changes++
	p.soon[c.node] -= c.fromSoon
	p.free[c.node] -= c.free
	p.capFree -= c.fromSoon + c.free
}

func (p *placement) release(c claim) {
	p.changes++
	p.soon[c.node] += c.fromSoon
	p.free[c.node] += c.free
	p.capFree += c.fromSoon + c.free
}

func newPlacement(s Snapshot, order []Entry) *placement {
	p := &placement{
		pool: s.Nodes == nil, claims: make([]claim, len(order)), evicting: make([]bool, len(order)),
		capacity: s.Capacity, capFree: math.MaxInt32,
	}
	if p.pool {
		p.names = []string{""}
		p.index = map[string]int{"": 0}
		p.alloc = []int32{s.Capacity}
		p.free = []int32{s.Capacity - s.PoolBusy}
		p.soon = []int32{s.PoolTerminating}
		p.largest = s.Capacity
		p.capacity = -1
	} else {
		// Sorted by name; of two nodes with the same name, the later one counts.
		sorted := slices.Clone(s.Nodes)
		slices.SortStableFunc(sorted, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
		nodes := sorted[:0]
		for _, n := range sorted {
			if len(nodes) > 0 && nodes[len(nodes)-1].Name == n.Name {
				nodes[len(nodes)-1] = n
				continue
			}
			nodes = append(nodes, n)
		}
		p.names = make([]string, len(nodes))
		p.index = make(map[string]int, len(nodes))
		p.alloc, p.free, p.soon = make([]int32, len(nodes)), make([]int32, len(nodes)), make([]int32, len(nodes))
		for k, n := range nodes {
			p.names[k] = n.Name
			p.index[n.Name] = k
			p.alloc[k] = n.GPUs
			p.free[k] = n.GPUs - n.Busy
			p.soon[k] = n.Terminating
			p.largest = max(p.largest, n.GPUs)
		}
	}
	p.onNode = make([][]holder, len(p.names))
	for i := range order {
		e := &order[i]
		if e.State != Holding {
			continue
		}
		p.used += e.GPUs
		node := e.Node
		if p.pool {
			node = ""
		}
		k, ok := p.index[node]
		if ok {
			p.free[k] -= e.GPUs
			h := holder{at: i, gpus: e.GPUs, started: !e.Started.IsZero()}
			if h.started {
				h.ready = e.Started.Add(s.MinRuntime)
				h.young = s.Now.Before(h.ready)
			}
			p.onNode[k] = append(p.onNode[k], h)
		}
		if e.Evicting {
			p.evicting[i] = true
			if ok {
				p.soon[k] += e.GPUs
			}
		}
	}
	if p.capacity >= 0 {
		p.capFree = p.capacity - p.used
	}
	if len(s.Reserved) == 0 {
		return p
	}
	for i := range order { // in rank order: see reserve
		e := &order[i]
		node, ok := s.Reserved[e.Key]
		if !ok || e.State != Waiting {
			continue
		}
		if p.pool {
			node = ""
		}
		// A claim is kept only while its job may still preempt and can fit there; a stale one
		// (the policy changed, the node or the capacity shrank) is dropped before anyone sees it.
		if k, ok := p.index[node]; ok && eligible(s.Preemption, e) && p.alloc[k] >= e.GPUs &&
			(p.capacity < 0 || p.capacity >= e.GPUs) {
			p.hold(i, p.reserve(k, e.GPUs))
		}
	}
	return p
}

// fit picks the node for a job: its reserved node if it fits there, else the best fit (the node
// with the fewest free GPUs that still fit, to keep whole nodes free for big jobs).
func (p *placement) fit(g int32, prefer int, hasPrefer bool) (int, bool) {
	if p.capFree < g {
		return 0, false
	}
	if hasPrefer && p.free[prefer] >= g {
		return prefer, true
	}
	if p.sums(); g > p.most {
		return 0, false // no node has room: the common case in a busy cluster
	}
	best, found := 0, false
	for n, f := range p.free {
		if f >= g && (!found || f < p.free[best]) {
			best, found = n, true
		}
	}
	return best, found
}

// fitSoon finds a node where the GPUs free now and those being freed cover g (best fit).
func (p *placement) fitSoon(g int32) (int, bool) {
	if p.sums(); p.capFree < g || g > p.mostSoon {
		return 0, false
	}
	best, found := 0, false
	for n := range p.names {
		if f := p.free[n] + p.soon[n]; p.soon[n] > 0 && f >= g && (!found || f < p.free[best]+p.soon[best]) {
			best, found = n, true
		}
	}
	return best, found
}

// never explains why a job cannot start even on an empty cluster; "" if it can.
func (p *placement) never(g int32) string {
	switch {
	case p.pool && g > p.alloc[0]:
		return fmt.Sprintf("needs %s but the capacity is %d", gpus(g), p.alloc[0])
	case p.pool:
		return ""
	case len(p.names) == 0:
		return "no GPU node is ready"
	case g > p.largest:
		return fmt.Sprintf("needs %s but the largest GPU node has %d", gpus(g), p.largest)
	case p.capacity >= 0 && g > p.capacity:
		return fmt.Sprintf("needs %s but the capacity is %d", gpus(g), p.capacity)
	}
	return ""
}

func (p *placement) totalFree() int32 {
	var sum int32
	for _, f := range p.free {
		sum += max(f, 0)
	}
	return max(min(sum, p.capFree), 0)
}

// sums refreshes the totals over nodes when free GPUs changed since they were computed.
func (p *placement) sums() {
	if p.sumsAt == p.changes && p.reasons != nil {
		return
	}
	p.total = p.totalFree()
	p.most, p.mostSoon = 0, 0
	for n, f := range p.free {
		p.most = max(p.most, f)
		if p.soon[n] > 0 {
			p.mostSoon = max(p.mostSoon, f+p.soon[n])
		}
	}
	p.sumsAt, p.reasons = p.changes, map[int32]string{}
}

// shortfall explains why a job does not fit now. Most waiting jobs see the same free GPUs, so
// the sums and sentences are kept until the free GPUs change.
func (p *placement) shortfall(g int32) string {
	p.sums()
	if r, ok := p.reasons[g]; ok {
		return r
	}
	r := fmt.Sprintf("%s free but at most %d on one node, needs %d", gpus(p.total), p.most, g)
	if p.pool || p.total < g {
		r = fmt.Sprintf("%s free, needs %d", gpus(p.total), g)
	}
	p.reasons[g] = r
	return r
}

// enough tells whether node n, with the GPUs being freed and freed more, can take g GPUs.
// Without a capacity bound capFree is near math.MaxInt32: adding freed would overflow.
func (p *placement) enough(n int, g, freed int32) bool {
	return p.free[n]+p.soon[n]+freed >= g && (p.capacity < 0 || p.capFree+freed >= g)
}

// preempt looks for the running jobs that the waiting job order[i] may evict to start: on one
// node, ranked below it, running for at least MinRuntime, the lowest-ranked first and no more
// than needed. Among nodes it prefers the fewest victims, then victims ranked lowest. When none
// is found, it returns the earliest time a young job becomes evictable (zero if none).
func (p *placement) preempt(order []Entry, i int) (Preemption, time.Time, bool) {
	e := &order[i]
	var (
		bestNode int
		found    bool
		wakeAt   time.Time
	)
	// Two scratch slices, reused across nodes and decisions' preemptors: the best victims so
	// far and the current node's.
	best, chosen := p.scratch[0][:0], p.scratch[1][:0]
	defer func() { p.scratch[0], p.scratch[1] = best[:0], chosen[:0] }()
	for n := range p.names {
		if p.alloc[n] < e.GPUs {
			continue
		}
		chosen = chosen[:0]
		var freed int32
		holders := p.onNode[n]
		for k := len(holders) - 1; k >= 0 && !p.enough(n, e.GPUs, freed); k-- { // lowest-ranked first
			h := &holders[k]
			if h.at <= i {
				break // holders are in rank order: the rest rank above the preemptor
			}
			if p.evicting[h.at] || !h.started {
				continue
			}
			if h.young {
				if wakeAt.IsZero() || h.ready.Before(wakeAt) {
					wakeAt = h.ready
				}
				continue
			}
			chosen = append(chosen, h.at)
			freed += h.gpus
		}
		if !p.enough(n, e.GPUs, freed) {
			continue
		}
		for k := len(chosen) - 1; k >= 0; k-- { // drop the higher-ranked ones not needed
			if g := order[chosen[k]].GPUs; p.enough(n, e.GPUs, freed-g) {
				freed -= g
				chosen = slices.Delete(chosen, k, k+1)
			}
		}
		if !found || len(chosen) < len(best) ||
			len(chosen) == len(best) && slices.Min(chosen) > slices.Min(best) {
			bestNode, found = n, true
			best, chosen = chosen, best // keep these victims; reuse the other slice
		}
	}
	bestChosen := best
	if !found {
		return Preemption{}, wakeAt, false
	}
	pr := Preemption{Preemptor: e.Key, Node: p.names[bestNode]}
	var freed int32
	for _, j := range bestChosen {
		pr.Victims = append(pr.Victims, order[j].Key)
		p.evicting[j] = true
		freed += order[j].GPUs
	}
	// The victims' GPUs will be free soon and the preemptor claims them (see reserve). Within
	// this decision they still count against the capacity bound.
	p.soon[bestNode] += freed
	p.changes++
	p.hold(i, p.reserve(bestNode, e.GPUs))
	return pr, time.Time{}, true
}

// Ordinal renders 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st...: a user's GPU ordinals in messages.
func Ordinal(n int32) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return strconv.Itoa(int(n)) + suffix
}

// GPUCount renders a GPU count for messages: "1 GPU", "3 GPUs".
func GPUCount(n int32) string { return gpus(n) }

// gpus renders a GPU count for messages: "1 GPU", "3 GPUs".
func gpus(n int32) string {
	if n == 1 {
		return "1 GPU"
	}
	return fmt.Sprintf("%d GPUs", n)
}
