// The cvlab-queue manager: runs the fair-share queue of CvlabJobs.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/dashboard"
	"github.com/epfl-cvlab/cvlab-queue/internal/notify"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

// config is what the flags set.
type config struct {
	metricsAddr, probeAddr string
	dashboardAddr          string
	leaderElect            bool
	gpuCapacity            int
	gpuNodeSelector        string
	maxHeadWait            time.Duration
	unschedulableTimeout   time.Duration
	preemption             string
	minRuntime             time.Duration
	notifyWebhook          string
	qps                    float64
	burst                  int
}

func main() {
	var c config
	flag.StringVar(&c.metricsAddr, "metrics-bind-address", "0", "Address of the metrics endpoint (:8080 for HTTP); 0 disables it.")
	flag.StringVar(&c.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints; 0 disables it.")
	flag.StringVar(&c.dashboardAddr, "dashboard-bind-address", dashboard.DefaultAddress,
		"Address of the read-only queue dashboard (HTML page and JSON API under /api/v1/); served by every replica; 0 disables it.")
	flag.BoolVar(&c.leaderElect, "leader-elect", false, "Elect a leader, so that only one manager runs the queue at a time.")
	flag.IntVar(&c.gpuCapacity, "gpu-capacity", -1,
		"Most GPUs the queue hands out (the lab's share of a bigger cluster). Without it, the nvidia.com/gpu allocatable of Ready nodes; without GPU nodes, the size of the pool.")
	flag.StringVar(&c.gpuNodeSelector, "gpu-node-selector", "", "Label selector of the nodes whose GPUs the queue hands out (default: all nodes), e.g. cvlab.epfl.ch/gpu=true.")
	flag.DurationVar(&c.maxHeadWait, "max-head-wait", 30*time.Minute,
		"How long the first waiting job may be passed by smaller jobs behind it before it holds them back; a negative value never holds them.")
	flag.DurationVar(&c.unschedulableTimeout, "unschedulable-timeout", 5*time.Minute,
		"How long an admitted pod may stay unschedulable before it is deleted and its job requeued with backoff.")
	flag.StringVar(&c.preemption, "preemption", "FirstGPU",
		"Which waiting jobs may evict running jobs ranked below them: FirstGPU (jobs on their user's 1st GPU, the lab's rule), Rank (any), Never.")
	flag.DurationVar(&c.minRuntime, "min-runtime", 10*time.Minute, "Jobs running for less than this are never evicted.")
	flag.StringVar(&c.notifyWebhook, "notify-webhook", "", "URL that receives a JSON POST (Slack-compatible `text` plus structured fields) for each preemption.")
	flag.Float64Var(&c.qps, "kube-api-qps", 200, "Queries per second to the API server (client-side rate limit).")
	flag.IntVar(&c.burst, "kube-api-burst", 400, "Burst of queries to the API server (client-side rate limit).")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(c); err != nil {
		ctrl.Log.WithName("setup").Error(err, "manager stopped")
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	policy, err := controllers.ParsePreemption(c.preemption)
	if err != nil {
		return err
	}
	selector, err := labels.Parse(c.gpuNodeSelector)
	if err != nil {
		return fmt.Errorf("--gpu-node-selector: %w", err)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(c.qps), c.burst

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(cvlabv1alpha1.AddToScheme(scheme))

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: c.metricsAddr},
		HealthProbeBindAddress: c.probeAddr,
		LeaderElection:         c.leaderElect,
		LeaderElectionID:       "cvlab-queue.cvlab.epfl.ch",
		Cache:                  controllers.CacheOptions(),
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	opts := controllers.Options{
		GPUCapacity:          int32(c.gpuCapacity),
		NodeSelector:         selector,
		MaxHeadWait:          c.maxHeadWait,
		UnschedulableTimeout: c.unschedulableTimeout,
		Preemption:           policy,
		MinRuntime:           c.minRuntime,
		Clock:                clock.RealClock{},
	}
	if c.notifyWebhook != "" {
		w := notify.NewWebhook(c.notifyWebhook, ctrl.Log.WithName("notify"))
		if err := mgr.Add(w); err != nil {
			return err
		}
		opts.Notifier = w
	}
	if c.dashboardAddr != "0" {
		store := &queueview.Store{}
		opts.View = store
		if err := mgr.Add(dashboard.NewServer(c.dashboardAddr, dashboard.New(store), ctrl.Log.WithName("dashboard"))); err != nil {
			return err
		}
	}
	r := controllers.NewQueueReconciler(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder("cvlab-queue"), opts)
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the queue: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("starting", "gpuCapacity", c.gpuCapacity, "gpuNodeSelector", c.gpuNodeSelector,
		"preemption", c.preemption, "minRuntime", c.minRuntime, "maxHeadWait", c.maxHeadWait, "qps", c.qps, "burst", c.burst,
		"dashboard", c.dashboardAddr)
	return mgr.Start(ctrl.SetupSignalHandler())
}
