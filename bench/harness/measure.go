package harness

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
)

// point is the counters at one moment.
type point struct {
	system    map[string]float64 // the system's rest_client_requests_total by method
	apiserver map[string]float64 // apiserver_request_total by verb|resource|subresource
	driver    map[string]float64 // the driver's own requests, the same way
	// statusWrites is cvlab-queue's cvlab_status_writes_total by kind (phase, position).
	statusWrites map[string]float64
	proc         ProcStats // the system's process
	apiCPU       float64   // kube-apiserver's CPU seconds
	// decisions and decisionSeconds: cvlab_decision_duration_seconds' count and sum.
	decisions, decisionSeconds float64
}

func measurePoint(ctx context.Context, scr *Scraper, cp *ControlPlane, pid int, driver *RequestCounter) (point, error) {
	var p point
	fams, err := scr.Scrape(ctx)
	if err != nil {
		return p, err
	}
	p.system = Counts(fams, "rest_client_requests_total", "method")
	p.statusWrites = Counts(fams, "cvlab_status_writes_total", "kind")
	if h := fams["cvlab_decision_duration_seconds"]; h != nil && len(h.GetMetric()) > 0 {
		p.decisions = float64(h.GetMetric()[0].GetHistogram().GetSampleCount())
		p.decisionSeconds = h.GetMetric()[0].GetHistogram().GetSampleSum()
	}
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		return p, err
	}
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return p, err
	}
	afams, err := ParseMetrics(bytes.NewReader(raw))
	if err != nil {
		return p, err
	}
	p.apiserver = Counts(afams, "apiserver_request_total", "verb", "resource", "subresource")
	p.driver = driver.Snapshot()
	if p.proc, err = ReadProcStats(pid); err != nil {
		return p, err
	}
	if cp.APIServerPID > 0 {
		if st, err := ReadProcStats(cp.APIServerPID); err == nil {
			p.apiCPU = st.CPUSeconds
		}
	}
	return p, nil
}

// kind of a request, for the per-admission split.
type kind int

const (
	kindRead kind = iota
	kindPod
	kindStatus
	kindEvent
	kindOther
)

func isWrite(verb string) bool {
	switch verb {
	case "GET", "LIST", "WATCH", "CONNECT", "":
		return false
	}
	return true
}

// cvlabClassify: pods, CvlabJob statuses, events.
func cvlabClassify(verb, res, sub string) kind {
	switch {
	case !isWrite(verb):
		return kindRead
	case res == "pods":
		return kindPod
	case res == "cvlabjobs":
		return kindStatus
	case res == "events":
		return kindEvent
	}
	return kindOther
}

// kueueClassify: Workloads (Kueue's job status), events, the rest (Job updates, queue status).
func kueueClassify(verb, res, sub string) kind {
	switch {
	case !isWrite(verb):
		return kindRead
	case res == "pods":
		return kindPod
	case res == "workloads":
		return kindStatus
	case res == "events":
		return kindEvent
	}
	return kindOther
}

// finishPoint fills the request figures of a drain between two points.
func finishPoint(res *Result, before, after point, admissions int, seconds float64, classify func(verb, res, sub string) kind) {
	sys := Sub(after.apiserver, before.apiserver)
	drv := Sub(after.driver, before.driver)
	var allWrites float64
	for k, v := range sys {
		if verb, _, _ := strings.Cut(k, "|"); isWrite(verb) {
			allWrites += v
		}
	}
	for k, v := range drv {
		sys[k] -= v
		if sys[k] <= 0 {
			delete(sys, k)
		}
	}
	res.Requests.ByMethod = Sub(after.system, before.system)
	res.Requests.ByResource = sys
	a := float64(max(admissions, 1))
	var writes float64
	for k, v := range sys {
		parts := strings.SplitN(k, "|", 3)
		for len(parts) < 3 {
			parts = append(parts, "")
		}
		switch classify(parts[0], parts[1], parts[2]) {
		case kindRead:
			res.Requests.Reads += v / a
			continue
		case kindPod:
			res.Requests.PodWrites += v / a
		case kindStatus:
			res.Requests.StatusWrites += v / a
		case kindEvent:
			res.Requests.EventWrites += v / a
		case kindOther:
			res.Requests.OtherWrites += v / a
		}
		writes += v
	}
	res.Requests.Writes = writes / a
	res.Requests.PositionWrites = Sub(after.statusWrites, before.statusWrites)["position"] / a
	res.Requests.WritesBesidesPositions = res.Requests.Writes - res.Requests.PositionWrites
	if seconds > 0 {
		res.APIServerWritesPerSecond = allWrites / seconds
		res.SystemWritesPerSecond = writes / seconds
	}
	res.CPUSecondsDrain = after.proc.CPUSeconds - before.proc.CPUSeconds
	res.CPUMsPerAdmission = res.CPUSecondsDrain * 1000 / a
	res.APIServerCPUSeconds = after.apiCPU - before.apiCPU
	if n := after.decisions - before.decisions; n > 0 {
		res.Decisions = int(n)
		res.DecisionMeanMs = (after.decisionSeconds - before.decisionSeconds) * 1000 / n
	}
}

// drainRun is what drain needs of a run: the driver, the system's process and counters, and
// the point measured before the drain.
type drainRun struct {
	tl  *Timeline
	kub *Kubelet
	// total pods must be created and run within wait.
	total    int
	wait     time.Duration
	scr      *Scraper
	cp       *ControlPlane
	pid      int
	counter  *RequestCounter
	before   point
	rss      *Sampler
	classify func(verb, res, sub string) kind
}

// drain releases the held pods, waits until every pod was created and ran, and fills res with
// the drain's figures: admissions/s, free → next, requests, CPU and memory.
func drain(ctx context.Context, res *Result, d drainRun) error {
	createdBefore, _ := d.tl.createdCount()
	d.tl.startMatching()
	drainStart := time.Now()
	d.kub.Release(ctx)
	if err := waitFor(ctx, d.wait, func() bool {
		n, _ := d.tl.createdCount()
		return n >= d.total && d.kub.done.Load() >= int64(d.total)
	}); err != nil {
		n, _ := d.tl.createdCount()
		return fmt.Errorf("drain: %d of %d pods created, %d done", n, d.total, d.kub.done.Load())
	}
	after, err := measurePoint(ctx, d.scr, d.cp, d.pid, d.counter)
	if err != nil {
		return err
	}
	n, last := d.tl.createdCount()
	res.DrainAdmissions = n - createdBefore
	res.DrainSeconds = last.Sub(drainStart).Seconds()
	if res.DrainSeconds > 0 {
		res.AdmissionsPerSecond = float64(res.DrainAdmissions) / res.DrainSeconds
	}
	d.tl.mu.Lock()
	res.FreeToNextSamples = len(d.tl.FreeToNext)
	res.FreeToNextP50ms = percentile(d.tl.FreeToNext, 0.50)
	res.FreeToNextP99ms = percentile(d.tl.FreeToNext, 0.99)
	res.FreeToNextMaxms = percentile(d.tl.FreeToNext, 1)
	d.tl.mu.Unlock()
	finishPoint(res, d.before, after, res.DrainAdmissions, time.Since(drainStart).Seconds(), d.classify)
	res.PeakRSSMiB = max(after.proc.PeakRSSMiB, d.rss.Stop())
	res.CPUSeconds = after.proc.CPUSeconds
	res.DriverErrors, res.DriverLastError = d.kub.Errors()
	res.Machine.LoadEnd = LoadAvg()
	return nil
}
