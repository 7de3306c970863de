// Command loadgen is the end-to-end benchmark of the queue (make bench, make bench-kueue): for each
// size, a fresh control plane, the system under test as a process, and the load driver. It prints a
// table and writes one JSON file per run under -out. See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/bench/harness"
)

func main() {
	var (
		system   = flag.String("system", "cvlab", "system under test: cvlab or kueue")
		sizes    = flag.String("jobs", "5000", "comma-separated numbers of jobs, one run each")
		users    = flag.Int("users", 200, "users (one namespace each)")
		nodes    = flag.Int("nodes", 32, "fake GPU nodes")
		gpus     = flag.Int("gpus-per-node", 8, "nvidia.com/gpu per node")
		minRun   = flag.Duration("runtime-min", 100*time.Millisecond, "shortest pod runtime in the drain")
		maxRun   = flag.Duration("runtime-max", 500*time.Millisecond, "longest pod runtime in the drain")
		probes   = flag.Int("probes", 3, "position probes of each kind (cvlab)")
		timeout  = flag.Duration("timeout", 5*time.Minute, "bound of each phase")
		seed     = flag.Uint64("seed", 1, "seed of the job mix")
		out      = flag.String("out", "bench/out", "directory of the JSON results")
		manager  = flag.String("manager", "bin/bench/manager", "the cvlab-queue manager binary")
		mgrArgs  = flag.String("manager-args", "", "extra flags of the manager, space-separated")
		mgrEnv   = flag.String("manager-env", "", "extra environment of the manager, space-separated NAME=value (e.g. GOMEMLIMIT=128MiB, as a container's memory limit sets it)")
		kueue    = flag.String("kueue", "", "Kueue's manager binary (hack/build-kueue.sh)")
		crds     = flag.String("kueue-crds", "", "Kueue's CRD directory (config/components/crd/bases in its module)")
		kueueQPS = flag.Int("kueue-qps", 50, "Kueue's client QPS (burst twice that); comma-separated for several runs")
		tag      = flag.String("tag", "", "suffix of the JSON file names")
		compare  = flag.String("compare", "", "print the results of -jobs found in this directory side by side, with ratios, and exit")
	)
	flag.Parse()
	if *compare != "" {
		if err := harness.Compare(os.Stdout, *compare, *sizes); err != nil {
			fatal(err)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var results []*harness.Result
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fatal(fmt.Errorf("-jobs: %w", err))
		}
		dir, err := os.MkdirTemp("", "cvlab-bench-")
		if err != nil {
			fatal(err)
		}
		o := harness.Options{
			Mix: harness.Mix{Jobs: n, Users: *users, Seed: *seed}, Nodes: *nodes, GPUsPerNode: *gpus,
			RuntimeMin: *minRun, RuntimeMax: *maxRun, Probes: *probes, Timeout: *timeout, Dir: dir,
			ManagerPath: abs(*manager), ManagerArgs: strings.Fields(*mgrArgs), ManagerEnv: strings.Fields(*mgrEnv),
			KueuePath: abs(*kueue), KueueCRDs: *crds, KueueQPS: *kueueQPS,
			Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+f+"\n", a...) },
		}
		var r *harness.Result
		switch *system {
		case "cvlab":
			r, err = harness.RunCvlab(ctx, o)
		case "kueue":
			r, err = harness.RunKueue(ctx, o)
		default:
			err = fmt.Errorf("-system must be cvlab or kueue, not %q", *system)
		}
		if err != nil {
			fatal(fmt.Errorf("%s with %d jobs: %w (files in %s)", *system, n, err, dir))
		}
		name := fmt.Sprintf("%s-%d%s.json", *system, n, *tag)
		p, err := harness.WriteJSON(*out, name, r)
		if err != nil {
			fatal(err)
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", p)
		if os.Getenv("BENCH_KEEP") == "" {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Fprintf(os.Stderr, "kept %s (BENCH_KEEP)\n", dir)
		}
		results = append(results, r)
	}
	harness.PrintTable(os.Stdout, results)
}

func abs(p string) string {
	if p == "" {
		return ""
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "loadgen:", err)
	os.Exit(1)
}
