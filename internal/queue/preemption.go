package queue

import (
	"slices"
	"time"
)

// holder is a started Holding job on a node, as a possible victim.
type holder struct {
	at int // index into the order
	// rank orders the victims: at, or for an idle job at plus the length of the order, so that
	// idle jobs rank below every other job and any preemptor (see Job.Idle).
	rank int
	idle bool
	gpus int32
	// young tells whether its pod started less than MinRuntime ago; ready is when it becomes
	// evictable.
	young bool
	ready time.Time
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
//
// With idleOnly (the preemptor may not evict by the Preemption policy), only idle jobs are
// candidates; idle jobs are candidates of any preemptor, and are chosen before the others.
func (p *placement) preempt(order []Entry, i int, idleOnly bool) (Preemption, int, time.Time, bool) {
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
			(len(holders) < l || holders[len(holders)-l].rank <= bestFirst) {
			continue
		}
		chosen = chosen[:0]
		var freed int32
		for k := len(holders) - 1; k >= 0 && !p.enough(n, want, freed); k-- { // lowest-ranked first
			h := &holders[k]
			if h.rank <= i || idleOnly && !h.idle {
				break // holders are in rank order: the rest rank above the preemptor (or are not idle)
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
			len(chosen) == len(best) && holders[slices.Min(chosen)].rank > bestFirst {
			bestNode, found = n, true
			best, chosen = chosen, best // keep these victims; reuse the other slice
			if len(best) > 0 {
				bestFirst = holders[slices.Min(best)].rank
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
		if h.idle {
			p.idle--
		}
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
