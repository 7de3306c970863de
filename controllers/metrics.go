package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The queue's Prometheus metrics, served on the manager's metrics endpoint.
var (
	metricCapacity = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cvlab_gpu_capacity", Help: "GPUs the queue may hand out now: Ready GPU nodes (or the pool), bounded by --gpu-capacity.",
	})
	metricGPUsInUse = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cvlab_gpus_in_use", Help: "GPUs held by each user's admitted and running jobs.",
	}, []string{"user"})
	metricJobs = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cvlab_jobs", Help: "CvlabJobs by phase.",
	}, []string{"phase"})
	metricWaiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cvlab_queue_waiting_jobs", Help: "GPU jobs waiting in the queue (with a queue position).",
	})
	metricWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cvlab_job_wait_seconds", Help: "Time from a job's submission to the start of its pod.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 18), // 1 s .. ~36 h
	})
	metricAdmissions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cvlab_admissions_total", Help: "Jobs admitted (pods created).",
	})
	metricPreemptions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cvlab_preemptions_total", Help: "Jobs evicted for a higher-ranked job, by the policy that allowed it (FirstGPU, Rank).",
	}, []string{"policy"})
	metricStatusWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cvlab_status_writes_total", Help: "CvlabJob status writes that landed, by kind: phase (admitted, running, finished...) or position (a waiting job's new place in the queue).",
	}, []string{"kind"})
	metricDecision = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "cvlab_decision_duration_seconds", Help: "Duration of one decision of the queue: observe, decide, act and record.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms .. 16 s
	})
	metricJobUtilization = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cvlab_job_gpu_utilization", Help: "Average utilisation (0-100) of a running job's GPUs over the last measuring window; only jobs measured recently.",
	}, []string{"namespace", "job", "user"})
	metricIdleGPUs = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cvlab_idle_gpus", Help: "GPUs of running jobs idle (below --idle-threshold) for --idle-after or longer.",
	})
	metricIdleGPUSeconds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cvlab_idle_gpu_seconds_total", Help: "GPU-seconds measured below --idle-threshold, by the job's user.",
	}, []string{"user"})
)

func init() {
	metrics.Registry.MustRegister(metricCapacity, metricGPUsInUse, metricJobs, metricWaiting, metricWait,
		metricAdmissions, metricPreemptions, metricStatusWrites, metricDecision,
		metricJobUtilization, metricIdleGPUs, metricIdleGPUSeconds)
}
