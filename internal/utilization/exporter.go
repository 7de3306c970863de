package utilization

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/clock"
)

// DefaultExporterPort is dcgm-exporter's metrics port.
const DefaultExporterPort = 9400

// DefaultScrapeTimeout bounds one scrape of one exporter when ExporterOptions.Client is nil.
const DefaultScrapeTimeout = 5 * time.Second

// maxHistory bounds the scrapes kept per pod (a scrape every 10s keeps ~10 minutes).
const maxHistory = 64

// maxBodyBytes bounds what is read from one exporter (a node of 8 GPUs serves ~100 KiB).
const maxBodyBytes = 16 << 20

// PodLister lists the pods matching a selector in all namespaces. Controllers pass their cache
// (e.g. a controller-runtime client.Reader's List); tests pass a func.
type PodLister interface {
	ListPods(ctx context.Context, selector labels.Selector) ([]corev1.Pod, error)
}

// PodListerFunc adapts a func to PodLister.
type PodListerFunc func(ctx context.Context, selector labels.Selector) ([]corev1.Pod, error)

// ListPods calls f.
func (f PodListerFunc) ListPods(ctx context.Context, selector labels.Selector) ([]corev1.Pod, error) {
	return f(ctx, selector)
}

// ExporterOptions configure an ExporterSource.
type ExporterOptions struct {
	// Selector finds the dcgm-exporter pods (--dcgm-exporter-selector), in all namespaces; each
	// running pod with an IP is scraped at http://<podIP>:<Port>/metrics. Nil or empty: no pods.
	Selector labels.Selector
	// Pods lists them; required with Selector.
	Pods PodLister
	// Port is the exporters' metrics port; 0 means DefaultExporterPort.
	Port int
	// URLs are scraped as they are (--dcgm-exporter-url): the local cluster's fake exporter, or an
	// exporter exposed otherwise.
	URLs []string
	// Client does the scrapes; nil means one with DefaultScrapeTimeout. Give it a timeout.
	Client *http.Client
	// Clock stamps the scrapes; nil means the real clock.
	Clock clock.PassiveClock
	// OnError, when set, is told of each exporter that could not be read while others could (the
	// pods it serves are then unknown, or fall back to their recent history). When no exporter
	// could be read, Collect returns the error instead.
	OnError func(error)
}

// ExporterSource scrapes dcgm-exporter directly (Prometheus text format, parsed with
// github.com/prometheus/common/expfmt).
//
// A direct scrape is an instantaneous gauge, not an average: to honour the window, the source keeps
// a small in-memory history of its past scrapes per pod (at most 64 scrapes, and none older than
// two windows) and reports the mean of the samples taken within the window. A pod with no sample in
// the window falls back to its latest sample if that is at most two windows old (dcgm-exporter can
// drop a pod's labels for a scrape or two); older, it is absent (unknown, never idle). The history
// starts empty: right after a restart, the average covers only the scrapes made since. Call
// Collect regularly (every few seconds to a minute): the average is over the scrapes Collect made.
// It is safe for concurrent use.
//
// The exporters are scraped concurrently (at most 8 at a time). When some cannot be read, the pods
// they served are absent (unknown) and ExporterOptions.OnError is told; when none can be read,
// Collect returns an error.
type ExporterSource struct {
	opts   ExporterOptions
	client *http.Client
	clock  clock.PassiveClock

	mu      sync.Mutex
	history map[PodKey][]point
}

// point is one scrape's reading of one pod.
type point struct {
	at  time.Time
	url string // the exporter it came from
	reading
}

// NewExporterSource returns a source scraping the exporters opts name.
func NewExporterSource(opts ExporterOptions) (*ExporterSource, error) {
	if opts.Selector != nil && !opts.Selector.Empty() && opts.Pods == nil {
		return nil, errors.New("utilization: an exporter selector needs a pod lister")
	}
	if (opts.Selector == nil || opts.Selector.Empty()) && len(opts.URLs) == 0 {
		return nil, errors.New("utilization: no dcgm-exporter to scrape (give a selector or URLs)")
	}
	if opts.Port == 0 {
		opts.Port = DefaultExporterPort
	}
	s := &ExporterSource{opts: opts, client: opts.Client, clock: opts.Clock, history: map[PodKey][]point{}}
	if s.client == nil {
		s.client = &http.Client{Timeout: DefaultScrapeTimeout}
	}
	if s.clock == nil {
		s.clock = clock.RealClock{}
	}
	return s, nil
}

// target is one exporter to scrape; self names the exporter's own pod, if known.
type target struct {
	url  string
	self PodKey
}

// targets lists the exporters to scrape now.
func (s *ExporterSource) targets(ctx context.Context) ([]target, error) {
	var ts []target
	for _, u := range s.opts.URLs {
		ts = append(ts, target{url: u})
	}
	if s.opts.Selector == nil || s.opts.Selector.Empty() {
		return ts, nil
	}
	pods, err := s.opts.Pods.ListPods(ctx, s.opts.Selector)
	if err != nil {
		return ts, fmt.Errorf("listing dcgm-exporter pods: %w", err)
	}
	for i := range pods {
		p := &pods[i]
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		u := "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(s.opts.Port)) + "/metrics"
		ts = append(ts, target{url: u, self: PodKey{Namespace: p.Namespace, Name: p.Name}})
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].url < ts[j].url })
	return ts, nil
}

// Collect scrapes every exporter, adds the readings to the history, and returns each pod's mean
// over window (see ExporterSource). It returns an error when no exporter could be read.
func (s *ExporterSource) Collect(ctx context.Context, window time.Duration) (map[PodKey]Sample, error) {
	if window <= 0 {
		return nil, fmt.Errorf("utilization: window must be positive, got %v", window)
	}
	ts, listErr := s.targets(ctx)
	now := s.clock.Now()

	type result struct {
		gpus map[gpuKey]gpuReading
		err  error
	}
	results := make([]result, len(ts))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, t := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			g, err := s.scrape(ctx, t)
			results[i] = result{g, err}
		}()
	}
	wg.Wait()

	var errs []error
	if listErr != nil {
		errs = append(errs, listErr)
	}
	readings := map[PodKey]point{}
	failed := map[string]bool{}
	ok := 0
	for i, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
			failed[ts[i].url] = true
			continue
		}
		ok++
		for p, rd := range podReadings(r.gpus) {
			readings[p] = point{at: now, url: ts[i].url, reading: rd}
		}
	}
	if ok == 0 {
		if len(errs) == 0 {
			errs = append(errs, errors.New("no dcgm-exporter found"))
		}
		// Nothing read now: the history is kept for the next call, but nothing is reported.
		return nil, fmt.Errorf("utilization: no dcgm-exporter could be read: %w", errors.Join(errs...))
	}
	if len(errs) > 0 && s.opts.OnError != nil {
		s.opts.OnError(errors.Join(errs...))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for p, pt := range readings {
		h := append(s.history[p], pt)
		if len(h) > maxHistory {
			h = append(h[:0:0], h[len(h)-maxHistory:]...)
		}
		s.history[p] = h
	}
	return s.summarise(now, window, readings, failed), nil
}

// summarise averages each pod's history over window and forgets what is older than two windows. A
// pod not read now whose exporter failed now is absent. s.mu is held.
func (s *ExporterSource) summarise(now time.Time, window time.Duration, current map[PodKey]point, failed map[string]bool) map[PodKey]Sample {
	out := map[PodKey]Sample{}
	stale := now.Add(-2 * window)
	from := now.Add(-window)
	for p, h := range s.history {
		// Drop what is older than two windows (and anything from the future, e.g. a clock step back).
		kept := h[:0]
		for _, pt := range h {
			if !pt.at.Before(stale) && !pt.at.After(now) {
				kept = append(kept, pt)
			}
		}
		if len(kept) == 0 {
			delete(s.history, p)
			continue
		}
		s.history[p] = kept
		last := kept[len(kept)-1]
		if _, read := current[p]; !read && failed[last.url] {
			continue // its exporter is down: unknown
		}
		var sum, mem float64
		n, memN := 0, 0
		for _, pt := range kept {
			if pt.at.Before(from) {
				continue
			}
			sum += pt.utilization
			n++
			if pt.memoryMiB >= 0 {
				mem += float64(pt.memoryMiB)
				memN++
			}
		}
		if n == 0 { // nothing in the window, but a sample at most two windows old
			out[p] = Sample{Utilization: last.utilization, MemoryUsedMiB: last.memoryMiB, GPUs: last.gpus, At: last.at}
			continue
		}
		m := int64(-1)
		if memN > 0 {
			m = int64(math.Round(mem / float64(memN)))
		}
		out[p] = Sample{Utilization: sum / float64(n), MemoryUsedMiB: m, GPUs: last.gpus, At: last.at}
	}
	return out
}

// scrape reads one exporter's GPU series.
func (s *ExporterSource) scrape(ctx context.Context, t target) (map[gpuKey]gpuReading, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", t.url, err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", t.url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("scraping %s: %s", t.url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(io.LimitReader(resp.Body, maxBodyBytes))
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", t.url, err)
	}
	gpus := map[gpuKey]gpuReading{}
	for name, fam := range fams {
		if !wanted(name) {
			continue
		}
		for _, m := range fam.GetMetric() {
			v, ok := value(m)
			if !ok {
				continue
			}
			l := dtoLabels(m)
			pod, ok := podOf(l)
			if !ok || pod == t.self {
				continue
			}
			k := gpuKey{pod: pod, gpu: gpuOf(l)}
			r := gpus[k]
			r.add(name, v)
			gpus[k] = r
		}
	}
	return gpus, nil
}

// value reads a gauge's or an untyped metric's value.
func value(m *dto.Metric) (float64, bool) {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue(), true
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue(), true
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue(), true
	}
	return 0, false
}

// dtoLabels reads a parsed metric's labels.
func dtoLabels(m *dto.Metric) labelSet {
	ls := map[string]string{}
	for _, lp := range m.GetLabel() {
		ls[lp.GetName()] = lp.GetValue()
	}
	return func(n string) string { return ls[n] }
}
