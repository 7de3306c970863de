package utilization

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ReaderPodLister lists pods through a controller-runtime reader, typically the manager's cache
// (which must then cover the exporters' namespace and labels: the GPU Operator runs dcgm-exporter
// in its own namespace, e.g. gpu-operator).
func ReaderPodLister(r client.Reader) PodLister {
	return PodListerFunc(func(ctx context.Context, selector labels.Selector) ([]corev1.Pod, error) {
		var l corev1.PodList
		if err := r.List(ctx, &l, client.MatchingLabelsSelector{Selector: selector}); err != nil {
			return nil, err
		}
		return l.Items, nil
	})
}
