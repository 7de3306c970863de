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
	"sync"
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
//
// The job is not copied: Job points into the slice the order was made from (Snapshot.Jobs), so
// that a decision over 10,000 jobs does not copy 1.5 MB of them (an Entry is 72 bytes, not 216).
// The caller must not change that slice while it uses the entries; Decide and Order never do.
type Entry struct {
	*Job
	// Node is where the job's GPUs are or will be: the Job's Node, or for a waiting job the node
	// it is admitted on or whose GPUs are promised to it. It shadows Job.Node, which Decide leaves
	// alone since it belongs to the caller's snapshot.
	Node string
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
// Jobs with no GPUs are left out. The entries point into jobs (see Entry).
//
// It sorts twice, each time on keys packed into one integer when they fit (they do for any real
// queue): the jobs by user, then within a user as CompareInUser; then the global order as
// CompareGlobal. Packed keys are sorted by radix, in linear time; equal packed keys (jobs
// created in the same second) are then ordered by namespace/name. Keys that do not fit in 64
// bits (creation times centuries apart, priorities far outside -1000..1000) fall back to a
// comparison sort with the same result.
func Order(jobs []Job) []Entry {
	b := getBuffers()
	defer buffersPool.Put(b)
	return order(jobs, b)
}

// order is Order with its scratch slices taken from b.
func order(jobs []Job, b *buffers) []Entry {
	ids := make(map[string]int32, 64)
	var (
		minPrio, maxPrio int32
		t                timeCode
	)
	// The GPU jobs, by index into jobs, and their user ids. The sort keys below refer to a job
	// by its place in idx, and what the later stages need of it (GPUs, creation time) is copied
	// into small slices by that place here, while jobs is read in order: the stages then read
	// those, not the scattered jobs.
	idx, user := b.idx[:0], b.user[:0]
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
	b.idx, b.user = idx, user
	n := len(idx)
	tBits := t.bits()
	keys, tmp := resize(&b.keys, n), resize(&b.tmp, n)
	size, code, flags := resize(&b.size, n), resize(&b.code, n), resize(&b.flags, n)
	for k, i := range idx {
		j := &jobs[i]
		size[k], flags[k] = j.GPUs, flagsOf(j)
		if tBits >= 0 {
			code[k] = t.code(j.Created)
		}
	}
	key := func(x packed) string { return jobs[idx[x.job]].Key }

	// 1. By user, then CompareInUser: higher priority first, the earlier job, the name.
	uBits, pBits := bitLen(uint64(len(ids))), bitLen(uint64(int64(maxPrio)-int64(minPrio)))
	userShift := 0 // where the user id is in a key
	if tBits >= 0 && uBits+pBits+tBits <= 64 {
		userShift = pBits + tBits
		for k, i := range idx {
			keys[k] = packed{job: int32(k), key: uint64(user[k])<<(pBits+tBits) | uint64(int64(maxPrio)-int64(jobs[i].Priority))<<tBits | code[k]}
		}
		radixSort(keys, tmp, uBits+pBits+tBits, &b.count)
		breakTies(keys, key)
	} else {
		for k := range idx {
			keys[k] = packed{job: int32(k), key: uint64(user[k])}
		}
		slices.SortFunc(keys, func(a, b packed) int {
			return cmp.Or(cmp.Compare(a.key, b.key), CompareInUser(&jobs[idx[a.job]], &jobs[idx[b.job]]))
		})
	}

	// 2. Ordinals, walking each user's jobs.
	first, last := resize(&b.first, n), resize(&b.last, n) // by place in keys
	var through, maxLast int32
	for k := range keys {
		if k == 0 || keys[k].key>>userShift != keys[k-1].key>>userShift {
			through = 0
		}
		first[k] = through + 1
		through += size[keys[k].job]
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
			g.key = g.key<<tBits | code[j]
		}
		global[k] = g
	}
	if packs {
		radixSort(global, keys, lBits+tBits, &b.count)
		breakTies(global, key)
	} else {
		slices.SortFunc(global, func(a, b packed) int {
			ja, jb := &jobs[idx[a.job]], &jobs[idx[b.job]]
			return cmp.Or(cmp.Compare(a.key, b.key), ja.Created.Compare(jb.Created), strings.Compare(ja.Key, jb.Key))
		})
	}
	order, byRank := make([]Entry, n), resize(&b.byRank, n)
	for r, g := range global {
		// Field by field: a composite literal is built aside and copied in, with a bulk write
		// barrier while the collector runs.
		e, j := &order[r], &jobs[idx[g.job]]
		e.Job, e.Node = j, j.Node
		e.FirstGPU, e.LastGPU, e.Rank = first[g.at], last[g.at], r+1
		byRank[r] = flags[g.job]
	}
	return order
}

// buffers are the scratch slices of a decision, kept for the next one: a decision's garbage is
// then mostly what it returns, and the collector runs that much less often.
type buffers struct {
	idx, user, size []int32
	code            []uint64
	flags           []jobFlags // by place in idx
	// byRank are the flags of the order's jobs, by rank: Decide reads them there rather than
	// from the jobs, which lie scattered in memory in rank order.
	byRank      []jobFlags
	keys, tmp   []packed
	count       []int32 // radixSort's
	first, last []int32
	// Used by newPlacement.
	claimOf []int32
	held    []heldOn
	holders []holder
}

// jobFlags are what Decide reads of every job, packed: its state, and whether it has a
// NotBefore.
type jobFlags uint8

const (
	isWaiting jobFlags = 1 << iota
	isHolding
	hasNotBefore
)

func flagsOf(j *Job) jobFlags {
	var f jobFlags
	switch j.State {
	case Waiting:
		f |= isWaiting
	case Holding:
		f |= isHolding
	}
	if !j.NotBefore.IsZero() {
		f |= hasNotBefore
	}
	return f
}

var buffersPool = sync.Pool{New: func() any { return new(buffers) }}

func getBuffers() *buffers { return buffersPool.Get().(*buffers) }

// resize makes *s n long, reusing its array when it is large enough, and returns it. The
// elements are not cleared.
func resize[T any](s *[]T, n int) []T {
	if cap(*s) < n {
		*s = make([]T, n)
	}
	*s = (*s)[:n]
	return *s
}

// packed is a sort key packed into an integer, with the job's place among the GPU jobs (see
// order) and its place in the previous stage's order.
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

// radixSort sorts a by key, stably, looking at the low bits bits; tmp is scratch of a's size
// and count scratch for the digit counts. It counts every digit first, then moves the elements
// once per digit. Digits are 8 bits wide for small inputs; large ones take up to 11 bits, so
// that 30-odd bit keys (the usual) take 3 passes instead of 4.
func radixSort(a, tmp []packed, bits int, count *[]int32) {
	n := len(a)
	if n == 0 || bits <= 0 {
		return
	}
	width := 8
	if n >= 4096 {
		width = 11
	}
	passes := (bits + width - 1) / width
	width = (bits + passes - 1) / passes // as many bits in each digit: 31 bits make 3 of 11
	buckets, mask := 1<<width, uint64(1)<<width-1
	counts := resize(count, passes*buckets)
	clear(counts)
	for p := range passes {
		c, shift := counts[p*buckets:(p+1)*buckets], p*width
		for i := range a {
			c[a[i].key>>shift&mask]++
		}
	}
	src, dst := a, tmp
	for p := range passes {
		shift, c := p*width, counts[p*buckets:(p+1)*buckets]
		if int(c[src[0].key>>shift&mask]) == n {
			continue // the same digit everywhere
		}
		var pos int32
		for d := range c {
			c[d], pos = pos, pos+c[d]
		}
		for i := range src {
			d := src[i].key >> shift & mask
			dst[c[d]] = src[i]
			c[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &a[0] {
		copy(a, src)
	}
}

// breakTies orders the runs of equal keys in sorted a by namespace/name, given by key.
func breakTies(a []packed, key func(packed) string) {
	for i := 0; i < len(a); {
		k := i + 1
		for k < len(a) && a[k].key == a[i].key {
			k++
		}
		if k-i > 1 {
			slices.SortFunc(a[i:k], func(x, y packed) int { return strings.Compare(key(x), key(y)) })
		}
		i = k
	}
}

// Decide applies the rule to a snapshot.
func Decide(s Snapshot) Decision {
	b := getBuffers()
	defer buffersPool.Put(b)
	d := Decision{Order: order(s.Jobs, b)}
	for i := range s.Jobs {
		if j := &s.Jobs[i]; j.GPUs <= 0 && j.State == Waiting {
			d.AdmitCPU = append(d.AdmitCPU, j.Key)
		}
	}
	slices.Sort(d.AdmitCPU)

	p := newPlacement(s, d.Order, b)
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
	// A zero NotBefore holds no job back, unless Now is before the zero time: only then need the
	// jobs without a NotBefore be compared (and be read: see buffers.byRank).
	zeroHolds := s.Now.Before(time.Time{})
	for i := range d.Order {
		f := b.byRank[i]
		if f&isWaiting == 0 {
			continue
		}
		e := &d.Order[i]
		g := e.LastGPU - e.FirstGPU + 1 // e.GPUs, without reading the job
		// A preemptor's reservation is its own to use.
		var (
			res      claim
			reserved bool
		)
		if c := p.claimOf[i]; c != 0 {
			res, reserved = p.claims[c-1], true
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
		case (f&hasNotBefore != 0 || zeroHolds) && s.Now.Before(e.NotBefore):
			e.Reason = "backing off after a failed start until " + e.NotBefore.UTC().Format(time.RFC3339)
			wake(e.NotBefore)
			keepReservation()
			continue
		}
		if n, ok := p.fit(g, res.node, reserved); ok {
			e.Admit, e.Node = true, p.names[n]
			p.free[n] -= g
			p.capFree -= g
			p.changes++
			continue
		}
		if reserved {
			keepReservation()
			e.Node = p.names[res.node]
			e.Reason = p.stopping(res.node)
			continue
		}
		if msg := p.never(g); msg != "" {
			e.Reason = msg
			continue
		}
		if eligible(s.Preemption, e) {
			if n, ok := p.fitSoon(g); ok {
				// GPUs being freed are enough: promise them, evict no one.
				p.hold(i, p.reserve(n, g))
				e.Node = p.names[n]
				e.Reason = p.freeing(n)
				continue
			}
			pr, n, at, ok := p.preempt(d.Order, i)
			if ok {
				d.Preemptions = append(d.Preemptions, pr)
				e.Node = pr.Node
				e.Reason = p.preempting(n, len(pr.Victims))
				continue
			}
			wake(at)
		}
		e.Reason = p.shortfall(g)
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
	if len(p.claims) > 0 {
		d.Reserved = make(map[string]string, len(p.claims))
		for _, c := range p.claims {
			if e := &d.Order[c.at]; e.State == Waiting && !e.Admit {
				d.Reserved[e.Key] = p.names[c.node]
			}
		}
		if len(d.Reserved) == 0 { // every reserved job started
			d.Reserved = nil
		}
	}

	pos := 0
	for i := range d.Order {
		if e := &d.Order[i]; b.byRank[i]&isWaiting != 0 && !e.Admit {
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

// withNode is s + onNode(node), made in one allocation.
func withNode(s, node string) string {
	if node == "" {
		return s
	}
	return s + " on node " + node
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
	soon []int32
	// onNode are the Holding jobs that may become victims, by node, in rank order: started,
	// and not being evicted (those never are, so they are left out, and victims are removed as
	// they are chosen).
	onNode  [][]holder
	biggest []int32 // by node, at least the GPUs of each job in onNode (to skip nodes: see preempt)
	// claims are the claims of waiting preemptors, in the order they were made; claimOf maps an
	// index into the order to 1 + the index of its claim, 0 if it has none. Few jobs claim: one
	// int32 per job keeps the per-job lookup cheap without a map.
	claims   []claim
	claimOf  []int32
	largest  int32
	capacity int32 // upper bound on held GPUs; negative: none
	capFree  int32
	used     int32
	// changes counts changes to free GPUs; the sums below are valid while it stays sumsAt.
	changes, sumsAt int
	// total free, most free on one node, most free plus being freed on one node.
	total, most, mostSoon int32
	// reasons are shortfall's sentences by GPUs needed, for the total and most of reasonsFor:
	// thousands of waiting jobs share a few sentences, which change only with those two sums.
	reasons    []string
	reasonsFor [2]int32
	texts      []nodeText // by node: see freeing, stopping, preempting
	victims    []string   // the backing of every Preemption.Victims of the decision
	scratch    [2][]int
}

// nodeText are the sentences about one node, made at most once per decision and shared by every
// job they describe.
type nodeText struct {
	freeing, stopping string
	preempting        [4]string // by number of victims - 1
}

// freeing is the reason of a job waiting for GPUs being freed on node n.
func (p *placement) freeing(n int) string {
	t := &p.texts[n]
	if t.freeing == "" {
		t.freeing = withNode("waiting for GPUs being freed", p.names[n])
	}
	return t.freeing
}

// stopping is the reason of a job waiting for its victims on node n to stop.
func (p *placement) stopping(n int) string {
	t := &p.texts[n]
	if t.stopping == "" {
		t.stopping = withNode("waiting for the jobs it preempted to stop", p.names[n])
	}
	return t.stopping
}

// preempting is the reason of a job that evicts victims jobs on node n.
func (p *placement) preempting(n, victims int) string {
	text := func() string { // withNode's sentence, in one allocation
		if node := p.names[n]; node != "" {
			return "preempting " + strconv.Itoa(victims) + " lower-ranked job(s) on node " + node
		}
		return "preempting " + strconv.Itoa(victims) + " lower-ranked job(s)"
	}
	t := &p.texts[n]
	if victims < 1 || victims > len(t.preempting) {
		return text()
	}
	if r := &t.preempting[victims-1]; *r == "" {
		*r = text()
	}
	return t.preempting[victims-1]
}

// claim is what a preemptor (order[at]) holds on a node: GPUs promised out of those being freed
// (soon) and out of those free now.
type claim struct {
	at, node       int
	fromSoon, free int32
}

// hold records the claim of the waiting job order[i]. A job makes at most one claim per decision.
func (p *placement) hold(i int, c claim) {
	c.at = i
	p.claims = append(p.claims, c)
	p.claimOf[i] = int32(len(p.claims))
}

// heldOn is a Holding job, by index into the order, and its node's number (-1: none).
type heldOn struct{ at, node int32 }

// holder is a started Holding job on a node, as a possible victim.
type holder struct {
	at   int // index into the order
	gpus int32
	// young tells whether its pod started less than MinRuntime ago; ready is when it becomes
	// evictable.
	young bool
	ready time.Time
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

// newPlacement sets up the placement of a decision on order, with the scratch slices and the
// job flags (byRank) that order left in b.
func newPlacement(s Snapshot, order []Entry, b *buffers) *placement {
	p := &placement{
		pool: s.Nodes == nil, claimOf: resize(&b.claimOf, len(order)),
		capacity: s.Capacity, capFree: math.MaxInt32, sumsAt: -1,
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
	clear(p.claimOf)
	p.texts = make([]nodeText, len(p.names))
	// The holders of all nodes share one array, each node's in rank order: count them by node
	// first (held remembers each Holding job and its node, -1 for none or when it is no
	// candidate), then fill.
	count := make([]int, len(p.names)+1)
	held := b.held[:0]
	for i := range order {
		if b.byRank[i]&isHolding == 0 {
			continue
		}
		e := &order[i]
		p.used += e.GPUs
		node := e.Node
		if p.pool {
			node = ""
		}
		k, ok := p.index[node]
		if ok {
			p.free[k] -= e.GPUs
			if e.Evicting {
				p.soon[k] += e.GPUs
			}
		}
		if !ok || e.Started.IsZero() || e.Evicting { // never a victim
			k = -1
		} else {
			count[k+1]++
		}
		held = append(held, heldOn{at: int32(i), node: int32(k)})
	}
	b.held = held
	for k := range p.names { // count[k] becomes where node k's holders start
		count[k+1] += count[k]
	}
	all := resize(&b.holders, count[len(p.names)])
	p.onNode, p.biggest = make([][]holder, len(p.names)), make([]int32, len(p.names))
	for k := range p.onNode {
		p.onNode[k] = all[count[k]:count[k]:count[k+1]]
	}
	for _, h := range held {
		if k := h.node; k >= 0 {
			e := &order[h.at]
			p.biggest[k] = max(p.biggest[k], e.GPUs)
			hd := holder{at: int(h.at), gpus: e.GPUs, ready: e.Started.Add(s.MinRuntime)}
			hd.young = s.Now.Before(hd.ready)
			p.onNode[k] = append(p.onNode[k], hd) // within its share of all: no allocation
		}
	}
	if p.capacity >= 0 {
		p.capFree = p.capacity - p.used
	}
	if len(s.Reserved) == 0 {
		return p
	}
	for i := range order { // in rank order: see reserve
		// A claim is kept only while its job may still preempt and can fit there; a stale one
		// (the policy changed, the node or the capacity shrank) is dropped before anyone sees it.
		// Whether it may preempt is checked first: it spares most jobs the lookup by key.
		e := &order[i]
		if b.byRank[i]&isWaiting == 0 || !eligible(s.Preemption, e) {
			continue
		}
		node, ok := s.Reserved[e.Key]
		if !ok {
			continue
		}
		if p.pool {
			node = ""
		}
		if k, ok := p.index[node]; ok && p.alloc[k] >= e.GPUs && (p.capacity < 0 || p.capacity >= e.GPUs) {
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
	if p.sumsAt == p.changes {
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
	p.sumsAt = p.changes
}

// shortfall explains why a job does not fit now. Most waiting jobs see the same free GPUs, so
// the sums are kept until the free GPUs change, and the sentences while the sums stay the same.
func (p *placement) shortfall(g int32) string {
	p.sums()
	if p.reasonsFor != [2]int32{p.total, p.most} {
		p.reasonsFor = [2]int32{p.total, p.most}
		clear(p.reasons)
	}
	if g >= 0 && int(g) < len(p.reasons) && p.reasons[g] != "" {
		return p.reasons[g]
	}
	r := fmt.Sprintf("%s free but at most %d on one node, needs %d", gpus(p.total), p.most, g)
	if p.pool || p.total < g {
		r = fmt.Sprintf("%s free, needs %d", gpus(p.total), g)
	}
	if g >= 0 && g < 64 { // jobs bigger than that are rare: no cache for them
		if int(g) >= len(p.reasons) {
			p.reasons = append(p.reasons, make([]string, int(g)+1-len(p.reasons))...)
		}
		p.reasons[g] = r
	}
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
// is found, it returns the earliest time a young job becomes evictable (zero if none); else the
// preemption and its node's number.
func (p *placement) preempt(order []Entry, i int) (Preemption, int, time.Time, bool) {
	e := &order[i]
	want := e.GPUs
	var (
		bestNode  int
		bestFirst int // the highest-ranked victim on bestNode, by index into the order
		found     bool
		wakeAt    time.Time
	)
	// Two scratch slices, reused across nodes and decisions' preemptors: the best victims so
	// far and the current node's, by index into their node's holders.
	best, chosen := p.scratch[0][:0], p.scratch[1][:0]
	for n := range p.names {
		if p.alloc[n] < want {
			continue
		}
		holders := p.onNode[n]
		// Once victims are found, skip the nodes that cannot do better without looking at their
		// holders (the young ones' wake-up times no longer matter then): those where fewer
		// victims, even the biggest, would not free enough, and where as many victims would
		// not all rank below the best's highest-ranked one. Of any l of a node's holders, the
		// highest-ranked ranks at or above its l-th lowest-ranked holder.
		if l := len(best); found && l > 0 && p.free[n]+p.soon[n]+int32(l-1)*p.biggest[n] < want &&
			(len(holders) < l || holders[len(holders)-l].at <= bestFirst) {
			continue
		}
		chosen = chosen[:0]
		var freed int32
		for k := len(holders) - 1; k >= 0 && !p.enough(n, want, freed); k-- { // lowest-ranked first
			h := &holders[k]
			if h.at <= i {
				break // holders are in rank order: the rest rank above the preemptor
			}
			if h.young {
				if wakeAt.IsZero() || h.ready.Before(wakeAt) {
					wakeAt = h.ready
				}
				continue
			}
			chosen = append(chosen, k)
			freed += h.gpus
		}
		if !p.enough(n, want, freed) {
			continue
		}
		for k := len(chosen) - 1; k >= 0; k-- { // drop the higher-ranked ones not needed
			if g := holders[chosen[k]].gpus; p.enough(n, want, freed-g) {
				freed -= g
				chosen = slices.Delete(chosen, k, k+1)
			}
		}
		// Holders are in rank order: the smallest index among them is the highest-ranked.
		if !found || len(chosen) < len(best) ||
			len(chosen) == len(best) && holders[slices.Min(chosen)].at > bestFirst {
			bestNode, found = n, true
			best, chosen = chosen, best // keep these victims; reuse the other slice
			if len(best) > 0 {
				bestFirst = holders[slices.Min(best)].at
			}
		}
	}
	p.scratch[0], p.scratch[1] = best[:0], chosen[:0]
	if !found {
		return Preemption{}, 0, wakeAt, false
	}
	pr := Preemption{Preemptor: e.Key, Node: p.names[bestNode]}
	var freed int32
	start := len(p.victims)
	holders := p.onNode[bestNode]
	for _, k := range best { // lowest-ranked first, so by decreasing k
		h := holders[k]
		p.victims = append(p.victims, order[h.at].Key)
		freed += h.gpus
		holders = slices.Delete(holders, k, k+1) // no longer a candidate
	}
	p.onNode[bestNode] = holders
	// The decision's victims share one array; each preemption gets its part, capped so that an
	// append by the caller copies instead of overwriting the next preemption's victims.
	if len(best) > 0 {
		pr.Victims = p.victims[start:len(p.victims):len(p.victims)]
	}
	// The victims' GPUs will be free soon and the preemptor claims them (see reserve). Within
	// this decision they still count against the capacity bound.
	p.soon[bestNode] += freed
	p.changes++
	p.hold(i, p.reserve(bestNode, want))
	return pr, bestNode, time.Time{}, true
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
