// The cvlab-queue manager: runs the fair-share queue of CvlabJobs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/dashboard"
	"github.com/epfl-cvlab/cvlab-queue/internal/memlimit"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

// config is what the flags set.
type config struct {
	metricsAddr, probeAddr string
	pprofAddr              string
	metricsSecure          bool
	adminGroups            string
	dashboardAddr          string
	leaderElect            bool
	leaderElection         leaderElectionFlags
	gpuCapacity            int
	gpuNodeSelector        string
	maxHeadWait            time.Duration
	unschedulableTimeout   time.Duration
	preemption             string
	minRuntime             time.Duration
	notify                 notifyFlags
	qps                    float64
	burst                  int
	statusQPS              float64
	idle                   idleFlags
}

func main() {
	var c config
	flag.StringVar(&c.metricsAddr, "metrics-bind-address", "0", "Address of the metrics endpoint (:8080 for HTTP); 0 disables it.")
	flag.BoolVar(&c.metricsSecure, "metrics-secure", false,
		"Serve the metrics endpoint over HTTPS, to clients with a Kubernetes token allowed to GET /metrics (TokenReview and SubjectAccessReview; see config/rbac/metrics_auth_role.yaml).")
	flag.StringVar(&c.adminGroups, "admin-groups", validation.DefaultAdminGroups,
		"Comma-separated groups whose members may submit, change and delete anyone's CvlabJobs and run GPU pods outside the queue; written into the admission policies' params (ConfigMap "+
			validation.ParamsName+", key "+validation.KeyAdminGroups+"; docs/security.md). Empty: no admin group.")
	flag.StringVar(&c.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints; 0 disables it.")
	flag.StringVar(&c.pprofAddr, "pprof-bind-address", "0", "Address of Go's profiling endpoints (/debug/pprof/), for measuring the manager (docs/performance.md); 0 disables them. Bind it to localhost: they are not authenticated.")
	flag.StringVar(&c.dashboardAddr, "dashboard-bind-address", dashboard.DefaultAddress,
		"Address of the read-only queue dashboard (HTML page and JSON API under /api/v1/); served by every replica; 0 disables it.")
	flag.BoolVar(&c.leaderElect, "leader-elect", false, "Elect a leader, so that only one manager runs the queue at a time.")
	c.leaderElection.bind(flag.CommandLine)
	flag.IntVar(&c.gpuCapacity, "gpu-capacity", observe.DefaultGPUCapacity,
		"Most GPUs the queue hands out (the lab's share of a bigger cluster). Without it, the nvidia.com/gpu allocatable of Ready nodes; without GPU nodes, the size of the pool.")
	flag.StringVar(&c.gpuNodeSelector, "gpu-node-selector", "", "Label selector of the nodes whose GPUs the queue hands out (default: all nodes), e.g. cvlab.epfl.ch/gpu=true.")
	flag.DurationVar(&c.maxHeadWait, "max-head-wait", observe.DefaultMaxHeadWait,
		"How long the first waiting job may be passed by smaller jobs behind it before it holds them back; a negative value never holds them.")
	flag.DurationVar(&c.unschedulableTimeout, "unschedulable-timeout", observe.DefaultUnschedulableTimeout,
		"How long an admitted pod may stay unschedulable before it is deleted and its job requeued with backoff.")
	flag.StringVar(&c.preemption, "preemption", observe.DefaultPreemption.String(),
		"Which waiting jobs may evict running jobs ranked below them: FirstGPU (jobs on their user's 1st GPU, the lab's rule), Rank (any), Never.")
	flag.DurationVar(&c.minRuntime, "min-runtime", observe.DefaultMinRuntime, "Jobs running for less than this are never evicted.")
	flag.Float64Var(&c.qps, "kube-api-qps", 200, "Queries per second to the API server (client-side rate limit).")
	flag.IntVar(&c.burst, "kube-api-burst", 400, "Burst of queries to the API server (client-side rate limit).")
	flag.Float64Var(&c.statusQPS, "status-qps", controllers.DefaultStatusQPS,
		"Most status writes per second for waiting jobs whose place in the queue changed (queuePosition, rank), written in the background, front of the queue first; within --kube-api-qps.")
	c.idle.bind(flag.CommandLine)
	c.notify.bind(flag.CommandLine)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if soft := memlimit.Set("/sys/fs/cgroup"); soft > 0 {
		ctrl.Log.WithName("setup").Info("Go memory limit set from the container's", "softLimitMiB", soft>>20, "fraction", memlimit.Fraction)
	}

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
	selector, err := observe.ParseNodeSelector(c.gpuNodeSelector)
	if err != nil {
		return fmt.Errorf("--gpu-node-selector: %w", err)
	}
	if c.leaderElect {
		if err := c.leaderElection.validate(); err != nil {
			return err
		}
	}
	idle, err := c.idle.settings()
	if err != nil {
		return err
	}
	adminGroups, err := validation.ParseAdminGroups(c.adminGroups)
	if err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(c.qps), c.burst

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(cvlabv1alpha1.AddToScheme(scheme))

	metrics := metricsserver.Options{BindAddress: c.metricsAddr}
	if c.metricsSecure {
		// HTTPS (a self-signed certificate unless one is mounted) and Kubernetes authn/authz.
		metrics.SecureServing = true
		metrics.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metrics,
		HealthProbeBindAddress: c.probeAddr,
		PprofBindAddress:       c.pprofAddr,
		LeaderElection:         c.leaderElect,
		LeaderElectionID:       "cvlab-queue.cvlab.epfl.ch",
		// Lease settings from the flags; a graceful stop (SIGTERM) hands the lease over at once
		// instead of making the other replicas wait for it to expire (docs/reliability.md).
		LeaderElectionNamespace:       c.leaderElection.namespace,
		LeaseDuration:                 &c.leaderElection.leaseDuration,
		RenewDeadline:                 &c.leaderElection.renewDeadline,
		RetryPeriod:                   &c.leaderElection.retryPeriod,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(),
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
		Idle:                 idle,
		StatusQPS:            c.statusQPS,
		Clock:                clock.RealClock{},
		PublishNamespace:     validation.OperatorNamespace(),
		PodOwnersNamespace:   validation.OperatorNamespace(),
		DirectoryNamespace:   validation.OperatorNamespace(),
	}
	if opts.Utilization, err = c.idle.source(mgr.GetClient()); err != nil {
		return err
	}
	ncfg, due, enabled, err := c.notify.config(context.Background(), mgr.GetAPIReader(), validation.OperatorNamespace(), idle)
	if err != nil {
		return err
	}
	if enabled {
		ncfg.Log = ctrl.Log.WithName("notify")
		if opts.Notifications, err = controllers.SetupNotifications(mgr, validation.OperatorNamespace(), ncfg, due); err != nil {
			return fmt.Errorf("notifications: %w", err)
		}
	}
	if c.dashboardAddr != "0" {
		store := &queueview.Store{}
		opts.View = store
		if err := mgr.Add(dashboard.NewServer(c.dashboardAddr, dashboard.New(store), ctrl.Log.WithName("dashboard"))); err != nil {
			return err
		}
	}
	if err := mgr.Add(&validation.ParamsWriter{
		Client: mgr.GetClient(), Namespace: validation.OperatorNamespace(), Name: validation.ParamsName,
		AdminGroups: adminGroups, Log: ctrl.Log.WithName("admission-params"),
	}); err != nil {
		return err
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
		"dashboard", c.dashboardAddr, "metricsSecure", c.metricsSecure, "adminGroups", adminGroups,
		"idle", idle, "measured", opts.Utilization != nil, "notifications", enabled)
	return mgr.Start(ctrl.SetupSignalHandler())
}
