package controllers

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"

	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// CacheOptions are the manager's informer cache settings. The queue watches every pod (other
// people's GPU pods take capacity too), so managed fields, which the queue never reads, are
// dropped from cached objects to keep memory low.
//
// Its informers keep trying every second while the API server is unreachable, rather than backing
// off for up to a minute (see patientListWatch), so that decisions resume soon after an outage.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		NewInformer: func(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
			return toolscache.NewSharedIndexInformer(patientListWatch(lw), obj, resync, indexers)
		},
	}
}

// ParsePreemption reads a --preemption value: FirstGPU, Rank or Never (queue.ParsePolicy).
func ParsePreemption(s string) (queue.Policy, error) {
	p, err := queue.ParsePolicy(s)
	if err != nil {
		return 0, fmt.Errorf("--%w", err)
	}
	return p, nil
}
