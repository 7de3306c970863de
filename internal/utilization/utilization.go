// Package utilization reads what GPUs do from NVIDIA's dcgm-exporter: scraped directly from the
// exporter's pods (Prometheus text format, parsed with github.com/prometheus/common/expfmt), or
// through a Prometheus server that scrapes them (PromQL, github.com/prometheus/client_golang/api).
// It reports, per pod, the average utilisation of the GPUs the pod holds and their memory in use.
// A pod without a sample is absent from the result: no data is never idleness.
package utilization

import (
	"context"
	"time"
)

// PodKey names a pod.
type PodKey struct{ Namespace, Name string }

// Sample is what one pod's GPUs did over a window.
type Sample struct {
	// Utilization is the average utilisation of the pod's GPUs over the window, 0-1
	// (DCGM_FI_PROF_GR_ENGINE_ACTIVE, else DCGM_FI_DEV_GPU_UTIL / 100).
	Utilization float64
	// MemoryUsedMiB is DCGM_FI_DEV_FB_USED summed over the pod's GPUs; -1 when unknown.
	MemoryUsedMiB int64
	// GPUs is how many GPUs had series for the pod.
	GPUs int
	// At is when it was measured.
	At time.Time
}

// Source measures the pods' GPUs.
type Source interface {
	// Collect returns a sample for each pod it has fresh data for, averaged over window. An error
	// means nothing could be read (all pods are then unknown).
	Collect(ctx context.Context, window time.Duration) (map[PodKey]Sample, error)
}
