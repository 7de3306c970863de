// The cvlab-queue manager: runs the fair-share queue of CvlabJobs.
package main

import (
	"errors"
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
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
)

func main() {
	var (
		metricsAddr, probeAddr string
		leaderElect            bool
		gpuCapacity            int
		maxHeadWait            time.Duration
		qps                    float64
		burst                  int
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", "Address of the metrics endpoint (:8080 for HTTP); 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints; 0 disables it.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so that only one manager runs the queue at a time.")
	flag.IntVar(&gpuCapacity, "gpu-capacity", -1, "Number of GPUs the queue hands out (required).")
	flag.DurationVar(&maxHeadWait, "max-head-wait", 30*time.Minute,
		"How long the first waiting job may be passed by smaller jobs behind it before it holds them back; a negative value never holds them.")
	flag.Float64Var(&qps, "kube-api-qps", 200, "Queries per second to the API server (client-side rate limit).")
	flag.IntVar(&burst, "kube-api-burst", 400, "Burst of queries to the API server (client-side rate limit).")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	logger := ctrl.Log.WithName("setup")

	if err := run(metricsAddr, probeAddr, leaderElect, gpuCapacity, maxHeadWait, qps, burst); err != nil {
		logger.Error(err, "manager stopped")
		os.Exit(1)
	}
}

func run(metricsAddr, probeAddr string, leaderElect bool, gpuCapacity int, maxHeadWait time.Duration, qps float64, burst int) error {
	if gpuCapacity < 0 {
		return errors.New("--gpu-capacity is required: the number of GPUs the queue hands out")
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(qps), burst

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(cvlabv1alpha1.AddToScheme(scheme))

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         leaderElect,
		LeaderElectionID:       "cvlab-queue.cvlab.epfl.ch",
		Cache:                  controllers.CacheOptions(),
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	r := controllers.NewQueueReconciler(mgr.GetClient(), mgr.GetAPIReader(), mgr.GetEventRecorder("cvlab-queue"), controllers.Options{
		GPUCapacity: int32(gpuCapacity),
		MaxHeadWait: maxHeadWait,
		Clock:       clock.RealClock{},
	})
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the queue: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("starting", "gpuCapacity", gpuCapacity, "maxHeadWait", maxHeadWait, "qps", qps, "burst", burst)
	return mgr.Start(ctrl.SetupSignalHandler())
}
