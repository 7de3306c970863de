package queue

import (
	"fmt"
	"strconv"
)

// withNode is s followed by " on node " and the node's name, or s alone when node is "": the
// sentence about a node, made in one allocation.
func withNode(s, node string) string {
	if node == "" {
		return s
	}
	return s + " on node " + node
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
