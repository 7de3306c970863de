package utilization

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestReaderPodLister(t *testing.T) {
	pod := func(ns, name string, l map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l}}
	}
	exp := map[string]string{"app.kubernetes.io/name": "dcgm-exporter"}
	c := fake.NewClientBuilder().WithObjects(
		pod("gpu-operator", "nvidia-dcgm-exporter-a", exp),
		pod("monitoring", "dcgm-exporter-b", exp),
		pod("lab", "alice-train-1", map[string]string{"app": "train"}),
	).Build()
	pods, err := ReaderPodLister(c).ListPods(context.Background(), labels.SelectorFromSet(exp))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, p := range pods {
		got[p.Namespace+"/"+p.Name] = true
	}
	want := map[string]bool{"gpu-operator/nvidia-dcgm-exporter-a": true, "monitoring/dcgm-exporter-b": true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pods (-want +got):\n%s", diff)
	}
}
