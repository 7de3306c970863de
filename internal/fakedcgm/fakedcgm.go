// Package fakedcgm renders what NVIDIA's dcgm-exporter would serve on the local cluster's fake GPU
// nodes, for the pods that hold their GPUs: the Prometheus text exposition format of dcgm-exporter
// run with DCGM_EXPORTER_KUBERNETES=true (one series per GPU, labelled with the GPU's index, UUID,
// device, model, node, and the container, namespace and pod holding it; free GPUs carry empty pod
// labels, as the real exporter's do).
//
// A pod's GPUs do what its annotation cvlab.epfl.ch/simulated-utilization says: a percent ("0",
// "80") or a profile of percents ("80,80,0") that advances one value every Options.Step from the
// pod's start and then holds its last value. Without the annotation the pod's GPUs are busy at
// Options.DefaultUtilization. A value "-" (alone or in a profile) means no series at all for the
// pod's GPUs at that time, as when dcgm-exporter misses a pod's labels: the operator must show
// "unknown", never idle.
//
// Only the three series the operator reads are served: DCGM_FI_DEV_GPU_UTIL (percent),
// DCGM_FI_PROF_GR_ENGINE_ACTIVE (ratio 0-1) and DCGM_FI_DEV_FB_USED (MiB).
package fakedcgm

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// AnnotationUtilization is the pod annotation (set through a CvlabJob's spec.podAnnotations) that
// drives the fake GPUs: "P" or "P1,P2,...", percents 0-100, or "-" for no series.
const AnnotationUtilization = "cvlab.epfl.ch/simulated-utilization"

// ResourceGPU is the extended resource of the GPUs.
const ResourceGPU corev1.ResourceName = "nvidia.com/gpu"

// Metric names and their HELP text, as dcgm-exporter's counters CSV has them.
const (
	MetricGPUUtil        = "DCGM_FI_DEV_GPU_UTIL"
	MetricGREngineActive = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
	MetricFBUsed         = "DCGM_FI_DEV_FB_USED"
)

// Options of the rendering.
type Options struct {
	// Step is how long each value of a profile lasts (default 1m).
	Step time.Duration
	// DefaultUtilization is the percent of a pod's GPUs without the annotation (default 70).
	DefaultUtilization float64
	// ModelName is the modelName label (default "NVIDIA GeForce RTX 3090").
	ModelName string
	// MemoryMiB is a GPU's framebuffer size (default 24576): a pod's GPU uses 512 MiB plus the
	// utilisation's share of the rest; a free GPU 0.
	MemoryMiB int64
	// DriverVersion is the DCGM_FI_DRIVER_VERSION label (default "550.54.15").
	DriverVersion string
}

func (o Options) withDefaults() Options {
	if o.Step <= 0 {
		o.Step = time.Minute
	}
	if o.ModelName == "" {
		o.ModelName = "NVIDIA GeForce RTX 3090"
	}
	if o.MemoryMiB <= 0 {
		o.MemoryMiB = 24576
	}
	if o.DriverVersion == "" {
		o.DriverVersion = "550.54.15"
	}
	return o
}

// DefaultUtilization is Options.DefaultUtilization's default (what --default-utilization defaults to).
const DefaultUtilization = 70

// ParseProfile parses an annotation value: comma-separated percents 0-100, or "-" (no data).
// A missing value is -1 in the result.
func ParseProfile(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "-" {
			out = append(out, -1)
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(f, "%"), 64)
		if err != nil || math.IsNaN(v) || v < 0 || v > 100 {
			return nil, fmt.Errorf("%s: %q is not a percent 0-100 or '-'", AnnotationUtilization, f)
		}
		out = append(out, v)
	}
	return out, nil
}

// ValueAt is a profile's value at now for a pod started at start: the i-th value during the i-th
// step, the last one afterwards (the first one before start).
func ValueAt(profile []float64, start, now time.Time, step time.Duration) float64 {
	if len(profile) == 0 {
		return -1
	}
	i := 0
	if d := now.Sub(start); d > 0 && step > 0 {
		i = int(d / step)
	}
	if i >= len(profile) {
		i = len(profile) - 1
	}
	return profile[i]
}

// GPU is one fake GPU and what it does now.
type GPU struct {
	Node  string
	Index int
	// Namespace, Pod, Container hold the GPU; empty when free.
	Namespace, Pod, Container string
	// Percent is its utilisation, -1 when it has no series.
	Percent float64
}

// UUID is a GPU's stable fake UUID, derived from its node and index.
func UUID(node string, index int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("cvlab-fake-gpu/%s/%d", node, index)))
	x := fmt.Sprintf("%x", h[:16])
	return fmt.Sprintf("GPU-%s-%s-%s-%s-%s", x[0:8], x[8:12], x[12:16], x[16:20], x[20:32])
}

// GPUs lays the running pods out on their nodes' GPUs: on each node that has nvidia.com/gpu, the
// pods ordered by start time then namespace/name take consecutive GPUs, container by container;
// the rest are free. Pods on other nodes, not running, or without GPUs are ignored.
func GPUs(nodes []corev1.Node, pods []corev1.Pod, now time.Time, opts Options) []GPU {
	opts = opts.withDefaults()
	byNode := map[string][]corev1.Pod{}
	for _, p := range pods {
		if p.Spec.NodeName != "" && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p)
		}
	}
	sorted := append([]corev1.Node(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var out []GPU
	for _, n := range sorted {
		q, ok := n.Status.Allocatable[ResourceGPU]
		if !ok || q.Value() <= 0 {
			continue
		}
		total := int(q.Value())
		ps := byNode[n.Name]
		sort.Slice(ps, func(i, j int) bool {
			si, sj := startOf(&ps[i]), startOf(&ps[j])
			if !si.Equal(sj) {
				return si.Before(sj)
			}
			if ps[i].Namespace != ps[j].Namespace {
				return ps[i].Namespace < ps[j].Namespace
			}
			return ps[i].Name < ps[j].Name
		})
		next := 0
		for i := range ps {
			p := &ps[i]
			pct := percentOf(p, now, opts)
			for _, c := range p.Spec.Containers {
				g := gpusOf(c)
				for k := int64(0); k < g && next < total; k++ {
					out = append(out, GPU{Node: n.Name, Index: next, Namespace: p.Namespace, Pod: p.Name, Container: c.Name, Percent: pct})
					next++
				}
			}
		}
		for ; next < total; next++ {
			out = append(out, GPU{Node: n.Name, Index: next})
		}
	}
	return out
}

func gpusOf(c corev1.Container) int64 {
	if q, ok := c.Resources.Limits[ResourceGPU]; ok {
		return q.Value()
	}
	if q, ok := c.Resources.Requests[ResourceGPU]; ok {
		return q.Value()
	}
	return 0
}

func startOf(p *corev1.Pod) time.Time {
	if p.Status.StartTime != nil {
		return p.Status.StartTime.Time
	}
	return p.CreationTimestamp.Time
}

// percentOf is what the pod's GPUs do now; an unparsable annotation gives no series (-1).
func percentOf(p *corev1.Pod, now time.Time, opts Options) float64 {
	s, ok := p.Annotations[AnnotationUtilization]
	if !ok {
		return opts.DefaultUtilization
	}
	profile, err := ParseProfile(s)
	if err != nil {
		return -1
	}
	return ValueAt(profile, startOf(p), now, opts.Step)
}

// Write renders the GPUs in dcgm-exporter's format: for each metric its HELP and TYPE lines, then
// one series per GPU.
func Write(w io.Writer, gpus []GPU, opts Options) error {
	opts = opts.withDefaults()
	metrics := []struct {
		name, help string
		value      func(g GPU) string
	}{
		{MetricGPUUtil, "GPU utilization (in %).", func(g GPU) string {
			return strconv.FormatInt(int64(math.Round(g.Percent)), 10)
		}},
		{MetricFBUsed, "Framebuffer memory used (in MiB).", func(g GPU) string {
			if g.Pod == "" {
				return "0"
			}
			return strconv.FormatInt(512+int64(math.Round(float64(opts.MemoryMiB-512)*g.Percent/100)), 10)
		}},
		{MetricGREngineActive, "Ratio of time the graphics engine is active.", func(g GPU) string {
			return strconv.FormatFloat(g.Percent/100, 'f', 6, 64)
		}},
	}
	var b strings.Builder
	for _, m := range metrics {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", m.name, m.help, m.name)
		for _, g := range gpus {
			if g.Pod != "" && g.Percent < 0 {
				continue
			}
			if g.Pod == "" {
				g.Percent = 0
			}
			fmt.Fprintf(&b, "%s{gpu=\"%d\",UUID=\"%s\",pci_bus_id=\"%s\",device=\"nvidia%d\",modelName=%q,Hostname=%q,DCGM_FI_DRIVER_VERSION=%q,container=%q,namespace=%q,pod=%q} %s\n",
				m.name, g.Index, UUID(g.Node, g.Index), fmt.Sprintf("00000000:%02X:00.0", 0x18+g.Index), g.Index,
				opts.ModelName, g.Node, opts.DriverVersion, g.Container, g.Namespace, g.Pod, m.value(g))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
