package queue

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"time"
)

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
	return order(jobs, b, nil)
}

// order is Order with its scratch slices taken from b, and the entries in reuse when it is
// large enough.
func order(jobs []Job, b *buffers, reuse []Entry) []Entry {
	if b.ids == nil {
		b.ids = make(map[string]int32, 64)
	}
	ids := b.ids
	clear(ids)
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
	order, byRank := reuse[:0], resize(&b.byRank, n)
	if reuse != nil && cap(order) >= n {
		order = order[:n]
		clear(order)
	} else {
		order = make([]Entry, n)
	}
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
	count       []int32          // radixSort's
	ids         map[string]int32 // user ids
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
