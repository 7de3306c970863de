package queue

import (
	"fmt"
	"slices"
	"time"
)

// Decide applies the rule to a snapshot.
func Decide(s Snapshot) Decision {
	b := getBuffers()
	defer buffersPool.Put(b)
	d := Decision{Order: order(s.Jobs, b, s.Reuse)}
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
			e.Reason, e.Wait = held, HeadOfLine
			keepReservation()
			continue
		case (f&hasNotBefore != 0 || zeroHolds) && s.Now.Before(e.NotBefore):
			e.Reason = "backing off after a failed start until " + e.NotBefore.UTC().Format(time.RFC3339)
			if e.IdleHold {
				e.Reason = "held back until " + e.NotBefore.UTC().Format(time.RFC3339) + ": its GPUs sat idle"
			}
			e.Wait = BackingOff
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
			e.Reason, e.Wait = p.stopping(res.node), Reserved
			continue
		}
		if msg := p.never(g); msg != "" {
			e.Reason, e.Wait = msg, NeverFits
			continue
		}
		// A job the policy does not let preempt may still evict idle jobs (Job.Idle).
		if ok := eligible(s.Preemption, e); ok || p.idle > 0 {
			if n, soon := p.fitSoon(g); ok && soon {
				// GPUs being freed are enough: promise them, evict no one.
				p.hold(i, p.reserve(n, g))
				e.Node = p.names[n]
				e.Reason, e.Wait = p.freeing(n), Reserved
				continue
			}
			pr, n, at, found := p.preempt(d.Order, i, !ok)
			if found {
				d.Preemptions = append(d.Preemptions, pr)
				e.Node = pr.Node
				e.Reason, e.Wait = p.preempting(n, len(pr.Victims)), Reserved
				continue
			}
			wake(at)
		}
		e.Reason, e.Wait = p.shortfall(g), p.short(g)
		if e.Reclaimed && s.Preemption != PreemptNever {
			e.Reason += "; its idle GPUs were taken back, so it preempts no one until it runs again"
		}
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
				d.Blocking, e.Blocking = true, true
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

// eligible tells whether the Preemption policy lets the waiting job e evict jobs ranked below it
// (a job whose idle GPUs were taken back never does until it runs again: Job.Reclaimed).
func eligible(p Policy, e *Entry) bool {
	if e.Reclaimed {
		return false
	}
	switch p {
	case PreemptFirstGPU:
		return e.FirstGPU == 1
	case PreemptRank:
		return true
	}
	return false
}
