// Package memlimit gives the Go runtime a soft memory limit below the container's: without one,
// the garbage collector lets the heap grow to twice what is live before it runs, and a manager
// that holds thousands of jobs is killed for memory it did not need.
package memlimit

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// Fraction of the container's limit given to the Go runtime: the rest is for what the runtime
// does not count (stacks, binaries, fragmentation).
const Fraction = 0.9

// unlimited is above any real limit: cgroup v1 reports "no limit" as a huge page-aligned number.
const unlimited = int64(1) << 60

// Cgroup reads the memory limit of the cgroup the process runs in, under root (/sys/fs/cgroup):
// cgroup v2's memory.max, else cgroup v1's memory/memory.limit_in_bytes. ok is false when there is
// no limit or it cannot be read.
func Cgroup(root string) (limit int64, ok bool) {
	for _, f := range []string{"memory.max", filepath.Join("memory", "memory.limit_in_bytes")} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= unlimited {
			return 0, false
		}
		return n, true
	}
	return 0, false
}

// Set gives the runtime a soft limit of Fraction of the cgroup's memory limit, unless GOMEMLIMIT
// says otherwise (the runtime reads it itself) or there is no limit. It returns the limit set, 0
// if none.
func Set(root string) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	limit, ok := Cgroup(root)
	if !ok {
		return 0
	}
	soft := int64(float64(limit) * Fraction)
	debug.SetMemoryLimit(soft)
	return soft
}
