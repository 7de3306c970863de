package utilization

import (
	"math"
)

// The dcgm-exporter series this package reads.
const (
	// MetricEngineActive is the ratio (0-1) of time the graphics engine was active (profiling
	// metric; also per MIG instance). Preferred when present for a GPU.
	MetricEngineActive = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
	// MetricGPUUtil is the GPU utilisation in percent (0-100), the fallback.
	MetricGPUUtil = "DCGM_FI_DEV_GPU_UTIL"
	// MetricFBUsed is the frame buffer memory in use, in MiB.
	MetricFBUsed = "DCGM_FI_DEV_FB_USED"
)

// labelSet reads one label of a series.
type labelSet func(name string) string

// podOf returns the pod a series belongs to. Behind Prometheus (without honor_labels), the
// exporter's own `pod`/`namespace` labels are renamed `exported_pod`/`exported_namespace` and
// `pod`/`namespace` name the scraped exporter pod, so the exported_ labels win when present. ok is
// false for a GPU no pod holds.
func podOf(l labelSet) (PodKey, bool) {
	if p := l("exported_pod"); p != "" {
		return PodKey{Namespace: l("exported_namespace"), Name: p}, true
	}
	if p := l("pod"); p != "" {
		return PodKey{Namespace: l("namespace"), Name: p}, true
	}
	return PodKey{}, false
}

// gpuOf names a GPU (or a MIG instance of it) within one exporter's series.
func gpuOf(l labelSet) string {
	id := l("UUID")
	if id == "" {
		id = l("gpu")
	}
	if id == "" {
		id = l("device")
	}
	if mig := l("GPU_I_ID"); mig != "" {
		id += "/" + mig
	}
	return id
}

// gpuKey identifies one GPU's series for one pod.
type gpuKey struct {
	pod PodKey
	gpu string
}

// gpuReading is what one GPU reported; has* tell which values are known.
type gpuReading struct {
	active, util, fb          float64
	hasActive, hasUtil, hasFB bool
}

// add records the value of one series for a GPU; NaN and infinities are unknown.
func (r *gpuReading) add(metric string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	switch metric {
	case MetricEngineActive:
		r.active, r.hasActive = v, true
	case MetricGPUUtil:
		r.util, r.hasUtil = v, true
	case MetricFBUsed:
		r.fb, r.hasFB = v, true
	}
}

// utilization is the GPU's utilisation 0-1: the profiling metric when present, else the percent.
func (r gpuReading) utilization() (float64, bool) {
	switch {
	case r.hasActive:
		return clamp01(r.active), true
	case r.hasUtil:
		return clamp01(r.util / 100), true
	}
	return 0, false
}

func clamp01(v float64) float64 { return math.Max(0, math.Min(1, v)) }

// podReadings turns per-GPU readings into one reading per pod: the mean utilisation over the GPUs
// that report one, memory summed over the GPUs that report it (-1 when none does). A pod whose GPUs
// report no utilisation is absent.
func podReadings(gpus map[gpuKey]gpuReading) map[PodKey]reading {
	type acc struct {
		sum     float64
		n       int
		fb      float64
		fbKnown bool
	}
	accs := map[PodKey]*acc{}
	for k, r := range gpus {
		u, ok := r.utilization()
		if !ok {
			continue
		}
		a := accs[k.pod]
		if a == nil {
			a = &acc{}
			accs[k.pod] = a
		}
		a.sum += u
		a.n++
		if r.hasFB {
			a.fb += r.fb
			a.fbKnown = true
		}
	}
	out := make(map[PodKey]reading, len(accs))
	for p, a := range accs {
		mem := int64(-1)
		if a.fbKnown {
			mem = int64(math.Round(a.fb))
		}
		out[p] = reading{utilization: a.sum / float64(a.n), memoryMiB: mem, gpus: a.n}
	}
	return out
}

// reading is one pod's instantaneous measurement.
type reading struct {
	utilization float64
	memoryMiB   int64
	gpus        int
}

// wanted reports whether a metric family is one this package reads.
func wanted(name string) bool {
	return name == MetricEngineActive || name == MetricGPUUtil || name == MetricFBUsed
}
