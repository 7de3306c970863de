package fakedcgm

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func node(name string, gpus int64) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if gpus >= 0 {
		n.Status.Allocatable = corev1.ResourceList{ResourceGPU: *resource.NewQuantity(gpus, resource.DecimalSI)}
	}
	return n
}

func pod(ns, name, nodeName string, gpus int64, started time.Time, annotation string) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(started)},
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "main",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{ResourceGPU: *resource.NewQuantity(gpus, resource.DecimalSI)}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &metav1.Time{Time: started}},
	}
	if annotation != "" {
		p.Annotations = map[string]string{AnnotationUtilization: annotation}
	}
	return p
}

// series parses the output back with expfmt, the operator's parser, into
// "metric pod=ns/name gpu=N node=X" → value, and checks every metric's HELP and TYPE.
func series(t *testing.T, out string) map[string]float64 {
	t.Helper()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		t.Fatalf("expfmt cannot parse the output: %v\n%s", err, out)
	}
	help := map[string]string{
		MetricGPUUtil:        "GPU utilization (in %).",
		MetricGREngineActive: "Ratio of time the graphics engine is active.",
		MetricFBUsed:         "Framebuffer memory used (in MiB).",
	}
	got := map[string]float64{}
	for name, f := range families {
		if help[name] == "" {
			t.Errorf("unexpected metric %s", name)
			continue
		}
		if f.GetHelp() != help[name] || f.GetType() != dto.MetricType_GAUGE {
			t.Errorf("%s: HELP %q TYPE %v, want %q gauge", name, f.GetHelp(), f.GetType(), help[name])
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			want := []string{"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION", "container", "namespace", "pod"}
			if len(l) != len(want) {
				t.Errorf("%s: labels %v, want exactly %v", name, l, want)
			}
			if l["UUID"] != UUID(l["Hostname"], atoi(l["gpu"])) || l["device"] != "nvidia"+l["gpu"] || l["modelName"] == "" {
				t.Errorf("%s: inconsistent GPU labels %v", name, l)
			}
			key := name + " pod=" + l["namespace"] + "/" + l["pod"] + " container=" + l["container"] + " gpu=" + l["gpu"] + " node=" + l["Hostname"]
			got[key] = m.GetGauge().GetValue()
		}
	}
	return got
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestWrite(t *testing.T) {
	opts := Options{Step: time.Minute, DefaultUtilization: 70, MemoryMiB: 10752}
	for name, tc := range map[string]struct {
		nodes []corev1.Node
		pods  []corev1.Pod
		now   time.Time
		want  map[string]float64
	}{
		"a single percent, free GPUs with empty pod labels": {
			nodes: []corev1.Node{node("n1", 2)},
			pods:  []corev1.Pod{pod("default", "idle", "n1", 1, t0, "0")},
			now:   t0.Add(time.Hour),
			want: map[string]float64{
				"DCGM_FI_DEV_GPU_UTIL pod=default/idle container=main gpu=0 node=n1":          0,
				"DCGM_FI_PROF_GR_ENGINE_ACTIVE pod=default/idle container=main gpu=0 node=n1": 0,
				"DCGM_FI_DEV_FB_USED pod=default/idle container=main gpu=0 node=n1":           512,
				"DCGM_FI_DEV_GPU_UTIL pod=/ container= gpu=1 node=n1":                         0,
				"DCGM_FI_PROF_GR_ENGINE_ACTIVE pod=/ container= gpu=1 node=n1":                0,
				"DCGM_FI_DEV_FB_USED pod=/ container= gpu=1 node=n1":                          0,
			},
		},
		"no annotation: the default; two GPUs of one pod": {
			nodes: []corev1.Node{node("n1", 2)},
			pods:  []corev1.Pod{pod("ns", "busy", "n1", 2, t0, "")},
			now:   t0,
			want: map[string]float64{
				"DCGM_FI_DEV_GPU_UTIL pod=ns/busy container=main gpu=0 node=n1":          70,
				"DCGM_FI_PROF_GR_ENGINE_ACTIVE pod=ns/busy container=main gpu=0 node=n1": 0.7,
				"DCGM_FI_DEV_FB_USED pod=ns/busy container=main gpu=0 node=n1":           512 + 7168,
				"DCGM_FI_DEV_GPU_UTIL pod=ns/busy container=main gpu=1 node=n1":          70,
				"DCGM_FI_PROF_GR_ENGINE_ACTIVE pod=ns/busy container=main gpu=1 node=n1": 0.7,
				"DCGM_FI_DEV_FB_USED pod=ns/busy container=main gpu=1 node=n1":           512 + 7168,
			},
		},
		"a profile in its second step": {
			nodes: []corev1.Node{node("n1", 1)},
			pods:  []corev1.Pod{pod("ns", "p", "n1", 1, t0, "80,40,0")},
			now:   t0.Add(90 * time.Second),
			want: map[string]float64{
				"DCGM_FI_DEV_GPU_UTIL pod=ns/p container=main gpu=0 node=n1":          40,
				"DCGM_FI_PROF_GR_ENGINE_ACTIVE pod=ns/p container=main gpu=0 node=n1": 0.4,
				"DCGM_FI_DEV_FB_USED pod=ns/p container=main gpu=0 node=n1":           512 + 4096,
			},
		},
		"a profile past its end holds its last value": {
			nodes: []corev1.Node{node("n1", 1)},
			pods:  []corev1.Pod{pod("ns", "p", "n1", 1, t0, "80,40,0")},
			now:   t0.Add(time.Hour),
			want: map[string]float64{
				"DCGM_FI_DEV_GPU_UTIL pod=ns/p container=main gpu=0 node=n1":          0,
				"DCGM_FI_PROF_GR_ENGINE_ACTIVE pod=ns/p container=main gpu=0 node=n1": 0,
				"DCGM_FI_DEV_FB_USED pod=ns/p container=main gpu=0 node=n1":           512,
			},
		},
		"'-' and an invalid annotation: no series for the pod, the others stay": {
			nodes: []corev1.Node{node("n1", 3)},
			pods: []corev1.Pod{
				pod("ns", "a", "n1", 1, t0, "-"),
				pod("ns", "b", "n1", 1, t0.Add(time.Second), "lots"),
				pod("ns", "c", "n1", 1, t0.Add(2*time.Second), "100"),
			},
			now: t0,
			want: map[string]float64{
				"DCGM_FI_DEV_GPU_UTIL pod=ns/c container=main gpu=2 node=n1":          100,
				"DCGM_FI_PROF_GR_ENGINE_ACTIVE pod=ns/c container=main gpu=2 node=n1": 1,
				"DCGM_FI_DEV_FB_USED pod=ns/c container=main gpu=2 node=n1":           10752,
			},
		},
		"pods ordered by start on their own node; CPU nodes, pending and CPU pods ignored": {
			nodes: []corev1.Node{node("n2", 1), node("n1", 1), node("cpu", -1)},
			pods: func() []corev1.Pod {
				pending := pod("ns", "pending", "n1", 1, t0, "5")
				pending.Status.Phase = corev1.PodPending
				return []corev1.Pod{
					pod("ns", "late", "n1", 1, t0.Add(time.Minute), "20"),
					pod("ns", "early", "n1", 1, t0, "10"),
					pending,
					pod("ns", "cpu", "n1", 0, t0, "50"),
					pod("ns", "other", "n2", 1, t0, "30"),
					pod("ns", "oncpu", "cpu", 1, t0, "30"),
				}
			}(),
			now: t0.Add(2 * time.Minute),
			want: map[string]float64{
				"DCGM_FI_DEV_GPU_UTIL pod=ns/early container=main gpu=0 node=n1":          10,
				"DCGM_FI_PROF_GR_ENGINE_ACTIVE pod=ns/early container=main gpu=0 node=n1": 0.1,
				"DCGM_FI_DEV_FB_USED pod=ns/early container=main gpu=0 node=n1":           512 + 1024,
				"DCGM_FI_DEV_GPU_UTIL pod=ns/other container=main gpu=0 node=n2":          30,
				"DCGM_FI_PROF_GR_ENGINE_ACTIVE pod=ns/other container=main gpu=0 node=n2": 0.3,
				"DCGM_FI_DEV_FB_USED pod=ns/other container=main gpu=0 node=n2":           512 + 3072,
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Write(&b, GPUs(tc.nodes, tc.pods, tc.now, opts), opts); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, series(t, b.String())); diff != "" {
				t.Errorf("series (-want +got):\n%s\n%s", diff, b.String())
			}
		})
	}
}

func TestValueAt(t *testing.T) {
	p := []float64{80, 80, 0}
	for name, tc := range map[string]struct {
		at   time.Duration
		want float64
	}{
		"before the start": {-time.Minute, 80},
		"first step":       {59 * time.Second, 80},
		"second step":      {time.Minute, 80},
		"third step":       {2 * time.Minute, 0},
		"long after":       {24 * time.Hour, 0},
	} {
		if got := ValueAt(p, t0, t0.Add(tc.at), time.Minute); got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

func TestParseProfile(t *testing.T) {
	for in, want := range map[string][]float64{
		"0":         {0},
		"80, 80 ,0": {80, 80, 0},
		"12.5%":     {12.5},
		"-":         {-1},
		"50,-,50":   {50, -1, 50},
		"101":       nil,
		"-3":        nil,
		"":          nil,
		"80,,0":     nil,
		"NaN":       nil,
		"eighty":    nil,
	} {
		got, err := ParseProfile(in)
		if (err != nil) != (want == nil) {
			t.Errorf("%q: error %v", in, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", in, diff)
		}
	}
}

func TestUUIDStable(t *testing.T) {
	a, b := UUID("gpu-node-1", 0), UUID("gpu-node-1", 1)
	if a != UUID("gpu-node-1", 0) || a == b || len(a) != len("GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52") || !strings.HasPrefix(a, "GPU-") {
		t.Errorf("UUIDs %s %s", a, b)
	}
}
