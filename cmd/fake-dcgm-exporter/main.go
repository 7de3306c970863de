// Command fake-dcgm-exporter serves, for the local cluster's fake GPU nodes (hack/local-cluster.sh),
// what NVIDIA's dcgm-exporter with DCGM_EXPORTER_KUBERNETES=true would serve on /metrics: one
// series per GPU of DCGM_FI_DEV_GPU_UTIL, DCGM_FI_PROF_GR_ENGINE_ACTIVE and DCGM_FI_DEV_FB_USED,
// labelled with the pod holding the GPU. What a pod's GPUs do comes from its annotation
// cvlab.epfl.ch/simulated-utilization (see internal/fakedcgm and docs/local-cluster.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"github.com/epfl-cvlab/cvlab-queue/internal/fakedcgm"
)

func main() {
	var (
		kubeconfig = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster (default $KUBECONFIG)")
		bind       = flag.String("bind-address", "127.0.0.1:9400", "address of /metrics")
		opts       fakedcgm.Options
	)
	flag.DurationVar(&opts.Step, "step", time.Minute, "how long each value of a utilisation profile (\"80,80,0\") lasts")
	flag.Float64Var(&opts.DefaultUtilization, "default-utilization", fakedcgm.DefaultUtilization,
		"utilisation percent of the GPUs of a pod without the annotation "+fakedcgm.AnnotationUtilization)
	flag.StringVar(&opts.ModelName, "model-name", "NVIDIA GeForce RTX 3090", "the GPUs' modelName label")
	flag.Int64Var(&opts.MemoryMiB, "memory-mib", 24576, "a GPU's framebuffer size in MiB")
	flag.Parse()
	if err := run(*kubeconfig, *bind, opts); err != nil {
		log.Fatal(err)
	}
}

func run(kubeconfig, bind string, opts fakedcgm.Options) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	factory := informers.NewSharedInformerFactory(cs, 0)
	pods := factory.Core().V1().Pods().Lister()
	nodes := factory.Core().V1().Nodes().Lister()
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync", typ)
		}
	}

	clk := clock.RealClock{}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		ns, err := nodes.List(labels.Everything())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		ps, err := pods.List(labels.Everything())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		nodeList := make([]corev1.Node, 0, len(ns))
		for _, n := range ns {
			nodeList = append(nodeList, *n)
		}
		podList := make([]corev1.Pod, 0, len(ps))
		for _, p := range ps {
			podList = append(podList, *p)
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_ = fakedcgm.Write(w, fakedcgm.GPUs(nodeList, podList, clk.Now(), opts), opts)
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Addr: bind, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("serving dcgm-exporter's format for the pods of %s on http://%s/metrics", cfg.Host, bind)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
