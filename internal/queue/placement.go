package queue

import (
	"math"
	"slices"
	"strings"
)

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
	// idle counts the idle jobs in onNode (Job.Idle): while there are some, any waiting job may
	// look for victims among them.
	idle int
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
	// total free, most free on one node, most free plus being freed on one node; onNodes is the
	// total free on the nodes before the capacity bound (total is at most capFree).
	total, most, mostSoon, onNodes int32
	// reasons are shortfall's sentences by GPUs needed, for the total and most of reasonsFor:
	// thousands of waiting jobs share a few sentences, which change only with those two sums.
	reasons    []string
	reasonsFor [2]int32
	texts      []nodeText // by node: see freeing, stopping, preempting
	victims    []string   // the backing of every Preemption.Victims of the decision
	scratch    [2][]int
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
	// Idle jobs rank below all others as victims: they go after them on their node, in a second
	// pass made only when there are some.
	for _, h := range held {
		if k := h.node; k >= 0 {
			e := &order[h.at]
			p.biggest[k] = max(p.biggest[k], e.GPUs)
			if e.Idle && s.Preemption != PreemptNever {
				p.idle++
				continue
			}
			hd := holder{at: int(h.at), rank: int(h.at), gpus: e.GPUs, ready: e.Started.Add(s.MinRuntime)}
			hd.young = s.Now.Before(hd.ready)
			p.onNode[k] = append(p.onNode[k], hd) // within its share of all: no allocation
		}
	}
	if p.idle > 0 {
		for _, h := range held {
			if k := h.node; k >= 0 && order[h.at].Idle {
				// MinRuntime does not protect an idle job.
				p.onNode[k] = append(p.onNode[k], holder{at: int(h.at), rank: int(h.at) + len(order), idle: true, gpus: order[h.at].GPUs})
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
		// A claim is kept only while its job may still preempt and can fit there; a stale one
		// (the policy changed, the node or the capacity shrank) is dropped before anyone sees it.
		// Whether it may preempt is checked first: it spares most jobs the lookup by key.
		e := &order[i]
		// A job that is not eligible may have claimed GPUs from idle victims (Job.IdleClaim).
		if b.byRank[i]&isWaiting == 0 || !eligible(s.Preemption, e) && (!e.IdleClaim || s.Preemption == PreemptNever) {
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

// freeOnNodes is the sum of the free GPUs of the nodes, the capacity bound aside.
func (p *placement) freeOnNodes() int32 {
	var sum int32
	for _, f := range p.free {
		sum += max(f, 0)
	}
	return sum
}

// totalFree is the number of GPUs free: on the nodes, and within the capacity bound.
func (p *placement) totalFree() int32 { return max(min(p.freeOnNodes(), p.capFree), 0) }

// sums refreshes the totals over nodes when free GPUs changed since they were computed.
func (p *placement) sums() {
	if p.sumsAt == p.changes {
		return
	}
	p.onNodes = p.freeOnNodes()
	p.total = max(min(p.onNodes, p.capFree), 0)
	p.most, p.mostSoon = 0, 0
	for n, f := range p.free {
		p.most = max(p.most, f)
		if p.soon[n] > 0 {
			p.mostSoon = max(p.mostSoon, f+p.soon[n])
		}
	}
	p.sumsAt = p.changes
}

// short says as a value what shortfall says in a sentence: why a job of g GPUs that fit could
// not place does not fit now. The free GPUs are too few, in pool mode or on all the nodes
// together (NoGPUsFree), or within the capacity bound although the nodes have enough
// (QuotaExceeded): both are "N GPUs free, needs g". Otherwise there are enough in total but no
// node has g free (NoNodeFits): "N GPUs free but at most M on one node, needs g".
func (p *placement) short(g int32) WaitReason {
	switch p.sums(); {
	case p.pool || p.onNodes < g:
		return NoGPUsFree
	case p.total < g:
		return QuotaExceeded
	}
	return NoNodeFits
}
