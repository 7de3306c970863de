package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	sim "github.com/epfl-cvlab/cvlab-queue/internal/simulate"
	"github.com/epfl-cvlab/cvlab-queue/internal/simulate/report"
)

// simulateOptions are the flags of `kubectl cvlab simulate` besides the decision settings (root's
// settings flags).
type simulateOptions struct {
	trace, nodes, generate, out, output, start string
	lab                                        sim.LabParams
	compare                                    []string
	idle                                       idleFlags
	startDelay, stopDelay, step, horizon       time.Duration
	topUsers                                   int
	// fromCluster starts from the cluster's queue now (predict.go: fromCluster).
	fromCluster bool
}

// idleFlags are the operator's --idle-* and --utilization-interval flags.
type idleFlags struct {
	threshold    int32
	after, grace time.Duration
	action       string
	interval     time.Duration
}

// compareKeys are the flags --compare may vary.
var compareKeys = []string{"preemption", "max-head-wait", "min-runtime", "gpu-capacity", "gpu-node-selector",
	"idle-threshold", "idle-after", "idle-grace", "idle-action", "utilization-interval", "start-delay", "stop-delay"}

func (r *root) simulateCommand() *cobra.Command {
	o := &simulateOptions{lab: sim.DefaultLabParams()}
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Replay a workload through the operator's own queue on a virtual clock (what if?)",
		Long: `Replay a workload trace through the operator's own engine and lifecycle (admission, placement,
preemption with --min-runtime and the grace period, requeue, head of the line, idle reclaim) on a
virtual clock, and summarise the waits per user and per GPU ordinal, the preemptions and the work
they wasted, the utilisation and a fairness index. A month of a 30-GPU lab takes about ten seconds.

The trace is CSV with a header row or JSON lines (docs/simulate.md); --generate lab writes a
lab-like one to start from. The nodes are a node file as the local cluster's (default: the lab's
3 x 8 + 1 x 6 GPUs). The settings are the operator's flags, with the operator's defaults;
--compare runs the same trace under several values of one or more of them, side by side.`,
		Example: `  kubectl cvlab simulate --generate lab --days 30 --out lab.csv
  kubectl cvlab simulate --trace lab.csv --compare preemption=FirstGPU,Rank,Never
  kubectl cvlab simulate --trace lab.csv --min-runtime 30m -o html > report.html`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return r.simulate(cmd, o) },
	}
	fs := cmd.Flags()
	fs.StringVar(&o.trace, "trace", "", "The workload: a CSV or JSON lines trace file, - for standard input (docs/simulate.md)")
	fs.BoolVar(&o.fromCluster, "from-cluster", false, "Start from the cluster's queue now: its running jobs (ending at their timeout or cvlab.epfl.ch/expected-runtime), waiting jobs, GPU nodes and the operator's published settings; --trace is then optional and its durations count from now")
	fs.StringVar(&o.nodes, "nodes", "", "A node file: one \"name gpus [cpu] [memory]\" line per node (default: the lab's 3 x 8 + 1 x 6 GPUs, hack/kwok/nodes-lab.txt)")
	fs.StringVar(&o.generate, "generate", "", "Write a generated trace instead of simulating: lab (a lab-like workload, docs/simulate.md)")
	fs.StringVar(&o.out, "out", "", "Where --generate writes the trace (default: standard output)")
	fs.StringVar(&o.start, "start", o.lab.Start.Format(time.RFC3339), "The trace's start: the first day of --generate, and the time its durations count from when a submit time is a duration")
	fs.IntVar(&o.lab.Days, "days", o.lab.Days, "Days of the generated trace")
	fs.Uint64Var(&o.lab.Seed, "seed", o.lab.Seed, "Seed of the generated trace: the same seed gives the same trace")
	fs.IntVar(&o.lab.Users, "users", o.lab.Users, "People of the generated trace")
	fs.Float64Var(&o.lab.JobsPerDay, "jobs-per-day", o.lab.JobsPerDay, "Mean submissions per day of the generated trace")
	fs.StringArrayVar(&o.compare, "compare", nil, "Simulate under each value of a flag, side by side: FLAG=V1,V2,... (repeatable: every combination); FLAG is one of "+strings.Join(compareKeys, ", "))
	fs.StringVarP(&o.output, "output", "o", "table", "table, json, or html (a self-contained report)")
	fs.DurationVar(&o.startDelay, "start-delay", 0, "How long an admitted pod takes to run (scheduling, image pull)")
	fs.DurationVar(&o.stopDelay, "stop-delay", 0, "How long an evicted pod takes to stop, at most its grace period (default: its whole grace period)")
	fs.DurationVar(&o.step, "step", 10*time.Minute, "Sampling interval of the timeline (GPUs per user over time)")
	fs.DurationVar(&o.horizon, "horizon", 0, "Stop the simulation this long after its start (default: when nothing is left to happen)")
	fs.IntVar(&o.topUsers, "top-users", 10, "Users shown in the table, most GPU-hours first")
	r.addSettingsFlags(fs)
	fs.Lookup("operator-namespace").Hidden = true // only the operator's published settings need it
	def := observe.DefaultSettings()
	for name, value := range map[string]string{"preemption": def.Preemption.String(), "gpu-capacity": "none",
		"gpu-node-selector": "", "min-runtime": def.MinRuntime.String(), "max-head-wait": def.MaxHeadWait.String()} {
		fs.Lookup(name).Usage = "The operator's --" + name
		fs.Lookup(name).DefValue = value // the operator's default, which applies when the flag is not given
	}
	d := def.Idle
	fs.Int32Var(&o.idle.threshold, "idle-threshold", d.Threshold, "The operator's --idle-threshold: GPUs below this average percent are idle")
	fs.DurationVar(&o.idle.after, "idle-after", d.After, "The operator's --idle-after: idle this long, a job is warned")
	fs.DurationVar(&o.idle.grace, "idle-grace", d.Grace, "The operator's --idle-grace: after the warning, how long before --idle-action")
	fs.StringVar(&o.idle.action, "idle-action", string(d.Action), "The operator's --idle-action: Reclaim, Warn or Suspend")
	fs.DurationVar(&o.idle.interval, "utilization-interval", d.Interval, "The operator's --utilization-interval: how often GPUs are measured")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion("table", "json", "html"))
	_ = cmd.RegisterFlagCompletionFunc("generate", fixedCompletion("lab"))
	_ = cmd.RegisterFlagCompletionFunc("preemption", fixedCompletion("FirstGPU", "Rank", "Never"))
	_ = cmd.RegisterFlagCompletionFunc("idle-action", fixedCompletion("Reclaim", "Warn", "Suspend"))
	return cmd
}

func (r *root) simulate(cmd *cobra.Command, o *simulateOptions) error {
	start, err := time.Parse(time.RFC3339, o.start)
	if err != nil {
		return fmt.Errorf("--start %q is not an RFC 3339 time (2026-01-05T00:00:00Z)", o.start)
	}
	if o.generate != "" {
		return o.writeGenerated(r.streams.Out, start)
	}
	if o.trace == "" && !o.fromCluster {
		return fmt.Errorf("--trace is required: a trace file, or - for standard input (--generate lab writes one), or --from-cluster")
	}
	if o.fromCluster && o.nodes != "" {
		return fmt.Errorf("--from-cluster simulates the cluster's nodes: leave --nodes out")
	}
	if o.fromCluster && !cmd.Flags().Changed("start") {
		start = r.now()
		o.start = start.Format(time.RFC3339)
	}
	if o.output != "table" && o.output != "json" && o.output != "html" {
		return fmt.Errorf("--output must be table, json or html, not %q", o.output)
	}
	var trace []sim.TraceJob
	if o.trace != "" {
		if trace, err = o.readTrace(r.streams.In, start); err != nil {
			return err
		}
	}
	nodes, err := o.readNodes()
	if err != nil {
		return err
	}
	// The starting point: an empty queue, under the operator's defaults, or the cluster's queue.
	base, initial := observe.DefaultSettings(), sim.State{}
	if o.fromCluster {
		if base, initial, nodes, err = r.fromCluster(cmd); err != nil {
			return err
		}
	}
	configs, err := o.configs(r, cmd, base, nodes)
	if err != nil {
		return err
	}
	// A simulation allocates much short-lived garbage (an observation per decision): collecting
	// less often saves about a third of its time (a month of the lab then peaks at about 200 MB).
	debug.SetGCPercent(400)
	results := make([]*sim.Result, len(configs))
	errs := make([]error, len(configs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, c := range configs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			began := r.now()
			results[i], errs[i] = sim.Run(c, initial, trace)
			if results[i] != nil {
				results[i].WallTime = r.now().Sub(began)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	switch o.output {
	case "json":
		enc := json.NewEncoder(r.streams.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	case "html":
		return report.Write(r.streams.Out, results)
	}
	return writeSimulation(r.streams.Out, results, o.topUsers)
}

func (o *simulateOptions) writeGenerated(stdout io.Writer, start time.Time) error {
	if o.generate != "lab" {
		return fmt.Errorf("--generate %q: the only generator is lab", o.generate)
	}
	o.lab.Start = start
	jobs, err := sim.Generate(o.lab)
	if err != nil {
		return err
	}
	if o.out == "" {
		return sim.WriteTrace(stdout, jobs)
	}
	f, err := os.Create(o.out)
	if err != nil {
		return err
	}
	if err := sim.WriteTrace(f, jobs); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func (o *simulateOptions) readTrace(stdin io.Reader, start time.Time) ([]sim.TraceJob, error) {
	in := stdin
	if o.trace != "-" {
		f, err := os.Open(o.trace)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
		in = f
	}
	trace, err := sim.ReadTrace(in, start)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.trace, err)
	}
	if len(trace) == 0 {
		return nil, fmt.Errorf("%s: no jobs", o.trace)
	}
	return trace, nil
}

func (o *simulateOptions) readNodes() ([]corev1.Node, error) {
	in := io.Reader(strings.NewReader(sim.LabNodes))
	if o.nodes != "" {
		f, err := os.Open(o.nodes)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
		in = f
	}
	nodes, err := sim.ReadNodes(in)
	if err != nil && o.nodes != "" {
		err = fmt.Errorf("%s: %w", o.nodes, err)
	}
	return nodes, err
}

// configs are the simulations to run: one for the flags given, or one per combination of the
// --compare values (each applied as if given as a flag).
func (o *simulateOptions) configs(r *root, cmd *cobra.Command, base observe.Settings, nodes []corev1.Node) ([]sim.Config, error) {
	type variant struct{ flag, value string }
	combos := [][]variant{nil}
	for _, c := range o.compare {
		flag, values, ok := strings.Cut(c, "=")
		if !ok || values == "" || !slices.Contains(compareKeys, flag) {
			return nil, fmt.Errorf("--compare %q: want FLAG=V1,V2,... with FLAG one of %s", c, strings.Join(compareKeys, ", "))
		}
		var next [][]variant
		for _, combo := range combos {
			for _, v := range strings.Split(values, ",") {
				next = append(next, append(slices.Clone(combo), variant{flag, strings.TrimSpace(v)}))
			}
		}
		combos = next
	}
	fs := cmd.Flags()
	var out []sim.Config
	for _, combo := range combos {
		var labels []string
		type saved struct {
			value   string
			changed bool
		}
		restore := map[string]saved{}
		for _, v := range combo {
			f := fs.Lookup(v.flag)
			if _, ok := restore[v.flag]; !ok {
				restore[v.flag] = saved{f.Value.String(), f.Changed}
			}
			if err := fs.Set(v.flag, v.value); err != nil {
				return nil, fmt.Errorf("--compare %s=%s: %w", v.flag, v.value, err)
			}
			labels = append(labels, v.flag+"="+v.value)
		}
		c, err := o.config(r, cmd, base, nodes)
		for name, s := range restore {
			_ = fs.Set(name, s.value)
			fs.Lookup(name).Changed = s.changed
		}
		if err != nil {
			return nil, err
		}
		c.Label = strings.Join(labels, " ")
		if c.Label == "" {
			c.Label = "as given"
		}
		out = append(out, c)
	}
	return out, nil
}

// config is one simulation's setting from the flags as they are: base, the config file's cluster
// section, then the flags.
func (o *simulateOptions) config(r *root, cmd *cobra.Command, base observe.Settings, nodes []corev1.Node) (sim.Config, error) {
	set, err := r.settings(cmd, base)
	if err != nil {
		return sim.Config{}, err
	}
	action, err := observe.ParseIdleAction(o.idle.action)
	if err != nil {
		return sim.Config{}, fmt.Errorf("--%w", err)
	}
	if o.idle.threshold < 0 || o.idle.threshold > 100 {
		return sim.Config{}, fmt.Errorf("--idle-threshold must be 0-100, not %d", o.idle.threshold)
	}
	if o.idle.interval <= 0 || o.idle.after < 0 || o.idle.grace < 0 {
		return sim.Config{}, fmt.Errorf("--utilization-interval must be positive, --idle-after and --idle-grace not negative")
	}
	set.Idle = observe.IdleSettings{Threshold: o.idle.threshold, After: o.idle.after, Grace: o.idle.grace, Action: action, Interval: o.idle.interval}
	c := sim.Config{Settings: set, Nodes: nodes, StartDelay: o.startDelay, StopDelay: o.stopDelay, Step: o.step}
	if o.horizon > 0 {
		start, _ := time.Parse(time.RFC3339, o.start)
		c.Start, c.Until = start, start.Add(o.horizon)
	}
	return c, nil
}

// writeSimulation prints the results side by side: one column per setting.
func writeSimulation(w io.Writer, results []*sim.Result, topUsers int) error {
	t := &table{}
	row := func(name string, cell func(*sim.Result) string) {
		cells := []string{name}
		for _, r := range results {
			cells = append(cells, cell(r))
		}
		t.add(cells...)
	}
	waits := func(s sim.WaitStats) string {
		if s.Count == 0 {
			return "-"
		}
		return fmt.Sprintf("%s / %s / %s", waitText(s.P50), waitText(s.P95), waitText(s.Max))
	}
	row("SETTING", func(r *sim.Result) string { return r.Label })
	first := results[0]
	t.separator(fmt.Sprintf("-- %d jobs, %s, %s to %s (waits: p50 / p95 / max)", len(first.Jobs), gpus(first.Capacity),
		first.Start.UTC().Format("2006-01-02 15:04"), first.End.UTC().Format("2006-01-02 15:04")))
	row("1st-GPU jobs wait", func(r *sim.Result) string { return waits(r.FirstGPUWait) })
	row("all GPU jobs wait", func(r *sim.Result) string { return waits(r.AllWait) })
	row(fmt.Sprintf("jobs of %d+ GPUs wait", sim.BigJob), func(r *sim.Result) string { return waits(r.BigJobWait) })
	var ordinals []int32
	for _, r := range results {
		for _, s := range r.Ordinals {
			if s.Ordinal <= 8 && !slices.Contains(ordinals, s.Ordinal) {
				ordinals = append(ordinals, s.Ordinal)
			}
		}
	}
	slices.Sort(ordinals)
	t.separator("-- wait by the user's GPU ordinal at submission")
	for _, n := range ordinals {
		row("  "+queue.Ordinal(n)+" GPU", func(r *sim.Result) string {
			i := slices.IndexFunc(r.Ordinals, func(s sim.OrdinalStats) bool { return s.Ordinal == n })
			if i < 0 {
				return "-"
			}
			return waits(r.Ordinals[i].Wait)
		})
	}
	t.separator("-- users, most GPU-hours first: GPU-hours, wait")
	for i, u := range first.Users {
		if i == topUsers {
			break
		}
		row("  "+u.User, func(r *sim.Result) string {
			j := slices.IndexFunc(r.Users, func(x sim.UserStats) bool { return x.User == u.User })
			if j < 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f h, %s", r.Users[j].GPUHours, waits(r.Users[j].Wait))
		})
	}
	t.separator("-- the queue")
	row("preemptions", func(r *sim.Result) string { return strconv.Itoa(r.Preemptions) })
	row("idle reclaims", func(r *sim.Result) string { return strconv.Itoa(r.IdleReclaims) })
	row("wasted GPU-hours", func(r *sim.Result) string { return fmt.Sprintf("%.1f", r.WastedGPUHours) })
	row("used GPU-hours", func(r *sim.Result) string { return fmt.Sprintf("%.0f", r.UsedGPUHours) })
	row("utilisation", func(r *sim.Result) string { return fmt.Sprintf("%.1f%%", r.Utilization*100) })
	row("fairness (Jain)", func(r *sim.Result) string { return fmt.Sprintf("%.3f", r.Fairness) })
	for i := range 3 {
		row(fmt.Sprintf("longest big-job wait #%d", i+1), func(r *sim.Result) string {
			if i >= len(r.HeadOfLine) {
				return "-"
			}
			h := r.HeadOfLine[i]
			return fmt.Sprintf("%s (%s) %s", h.Job, gpus(h.GPUs), waitText(h.Wait))
		})
	}
	row("decisions", func(r *sim.Result) string { return strconv.Itoa(r.Decisions) })
	row("simulated in", func(r *sim.Result) string {
		if r.WallTime >= time.Second {
			return r.WallTime.Round(10 * time.Millisecond).String()
		}
		return r.WallTime.Round(100 * time.Microsecond).String()
	})
	return t.write(w)
}

// waitText renders a wait in its two largest units: 0s, 45s, 12m, 3h20m, 2d4h.
func waitText(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 24*time.Hour:
		return shortDuration(d.Truncate(time.Minute))
	}
	days := d / (24 * time.Hour)
	return fmt.Sprintf("%dd%dh", days, (d-days*24*time.Hour)/time.Hour)
}
