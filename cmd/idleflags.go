package main

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/utilization"
)

// idleFlags are the flags of GPU utilisation and the idle policy (issue 15).
type idleFlags struct {
	threshold     int
	after, grace  time.Duration
	action        string
	interval      time.Duration
	prometheusURL string
	selector      string
	exporterURLs  stringList
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

func (f *idleFlags) bind(fs *flag.FlagSet) {
	d := observe.DefaultSettings().Idle
	fs.IntVar(&f.threshold, "idle-threshold", int(d.Threshold),
		"A running job whose GPUs average below this percent over a measuring window is idle. Low (5%) on purpose: data loading, evaluation and checkpointing dip a busy job's GPUs, an open notebook or a sleeping container sits near 0.")
	fs.DurationVar(&f.after, "idle-after", d.After,
		"A job idle this long gets the GPUIdle condition and a Warning event (its owner is told). Long enough (1h) that a pause for a meeting or a long data preparation is not flagged.")
	fs.DurationVar(&f.grace, "idle-grace", d.Grace,
		"After the warning, how long the owner has to use the GPUs again before --idle-action applies (30m: time to read the warning and react).")
	fs.StringVar(&f.action, "idle-action", string(d.Action),
		"What happens after --idle-after plus --idle-grace of idleness: Reclaim (its GPUs count as free: it ranks last for preemption and any waiting job that fits may evict it, with the usual grace period and requeue; with --preemption=Never no one evicts), Warn (only the warning), Suspend (the operator stops its pod at once and requeues it, held back for --idle-after before it may start again; the operator never writes spec, so this is not spec.suspend: GitOps stays the owner of the spec). Activity resets everything; a job annotated cvlab.epfl.ch/idle-exempt=\"true\" (admins only) is never acted on.")
	fs.DurationVar(&f.interval, "utilization-interval", d.Interval,
		"How often the GPUs are measured, over a window of this length; a job's utilisation is written at most this often, and only on a meaningful change (5 points, the idle state, or 10 intervals old): status writes are the queue's bottleneck.")
	fs.StringVar(&f.prometheusURL, "prometheus-url", "",
		"Read GPU utilisation from this Prometheus, which scrapes NVIDIA's dcgm-exporter (avg_over_time over the window). Without it and without exporters, nothing is measured and the idle policy never acts.")
	fs.StringVar(&f.selector, "dcgm-exporter-selector", "",
		"Label selector of dcgm-exporter pods to scrape directly on :9400/metrics (e.g. app.kubernetes.io/name=dcgm-exporter), when there is no Prometheus.")
	fs.Var(&f.exporterURLs, "dcgm-exporter-url", "A dcgm-exporter metrics URL to scrape directly (repeatable), e.g. the local cluster's fake exporter.")
}

func (f *idleFlags) settings() (observe.IdleSettings, error) {
	action, err := observe.ParseIdleAction(f.action)
	if err != nil {
		return observe.IdleSettings{}, fmt.Errorf("--%w", err)
	}
	if f.threshold < 0 || f.threshold > 100 {
		return observe.IdleSettings{}, fmt.Errorf("--idle-threshold must be 0-100, not %d", f.threshold)
	}
	if f.interval <= 0 || f.after < 0 || f.grace < 0 {
		return observe.IdleSettings{}, fmt.Errorf("--utilization-interval must be positive, --idle-after and --idle-grace not negative")
	}
	return observe.IdleSettings{Threshold: int32(f.threshold), After: f.after, Grace: f.grace, Action: action, Interval: f.interval}, nil
}

// source is where the GPUs are measured: Prometheus when --prometheus-url is set, else the
// exporters; nil when neither is.
func (f *idleFlags) source(c client.Reader) (utilization.Source, error) {
	if f.prometheusURL != "" {
		if f.selector != "" || len(f.exporterURLs) > 0 {
			return nil, fmt.Errorf("--prometheus-url and --dcgm-exporter-selector/--dcgm-exporter-url exclude each other")
		}
		return utilization.NewPrometheusSource(utilization.PrometheusOptions{URL: f.prometheusURL})
	}
	if f.selector == "" && len(f.exporterURLs) == 0 {
		return nil, nil
	}
	opts := utilization.ExporterOptions{URLs: f.exporterURLs}
	if f.selector != "" {
		sel, err := labels.Parse(f.selector)
		if err != nil {
			return nil, fmt.Errorf("--dcgm-exporter-selector: %w", err)
		}
		opts.Selector, opts.Pods = sel, utilization.ReaderPodLister(c)
	}
	return utilization.NewExporterSource(opts)
}
