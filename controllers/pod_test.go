package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

func TestPriorityLabelValue(t *testing.T) {
	cases := map[string]struct {
		priority int32
		want     string
	}{
		"default":      {0, "0"},
		"positive":     {7, "7"},
		"max":          {1000, "1000"},
		"negative":     {-5, "neg-5"},
		"min negative": {-1000, "neg-1000"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := PriorityLabelValue(tc.priority)
			if got != tc.want {
				t.Errorf("PriorityLabelValue(%d) = %q, want %q", tc.priority, got, tc.want)
			}
			if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
				t.Errorf("%q is no valid label value: %v", got, errs)
			}
		})
	}
}

func TestPodNamesAndLabelsStayValid(t *testing.T) {
	cases := map[string]struct {
		name      string
		admission int32
		wantName  string
	}{
		"short":                 {"alice-train", 1, "alice-train-1"},
		"second admission":      {"alice-train", 2, "alice-train-2"},
		"253-character job":     {strings.Repeat("a", 253), 12, strings.Repeat("a", 250) + "-12"},
		"cut right after a dot": {strings.Repeat("a", 249) + ".bcd", 12, strings.Repeat("a", 249) + "-12"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			job := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Name: tc.name, Namespace: "lab"},
				Spec: cvlabv1alpha1.CvlabJobSpec{User: "alice", Image: "img"}}
			pod := BuildPod(job, tc.admission, "", "")
			if pod.Name != tc.wantName {
				t.Errorf("pod name = %q, want %q", pod.Name, tc.wantName)
			}
			if errs := validation.IsDNS1123Subdomain(pod.Name); len(errs) > 0 {
				t.Errorf("pod name %q is invalid: %v", pod.Name, errs)
			}
			for k, v := range pod.Labels {
				if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
					t.Errorf("label %s=%q is invalid: %v", k, v, errs)
				}
			}
		})
	}
}

func TestBuildPodContainer(t *testing.T) {
	base := func() *cvlabv1alpha1.CvlabJob {
		return &cvlabv1alpha1.CvlabJob{
			ObjectMeta: metav1.ObjectMeta{Name: "j", Namespace: "lab", UID: "uid-1"},
			Spec:       cvlabv1alpha1.CvlabJobSpec{User: "alice", Image: "img"},
		}
	}
	cases := map[string]struct {
		mutate    func(*cvlabv1alpha1.CvlabJob)
		wantLimit corev1.ResourceList
		wantEnv   []corev1.EnvVar
		deadline  *int64
	}{
		"cpu job has no GPU limit": {
			mutate:  func(*cvlabv1alpha1.CvlabJob) {},
			wantEnv: []corev1.EnvVar{{Name: "NVIDIA_VISIBLE_DEVICES", Value: "void"}},
		},
		"gpus become nvidia.com/gpu limits next to memory": {
			mutate: func(j *cvlabv1alpha1.CvlabJob) {
				j.Spec.GPUs = 3
				j.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("8Gi")}
			},
			wantLimit: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("8Gi"), ResourceGPU: resource.MustParse("3")},
		},
		"cluster user becomes env after the job's own": {
			mutate: func(j *cvlabv1alpha1.CvlabJob) {
				j.Spec.Env = []corev1.EnvVar{{Name: "A", Value: "1"}}
				j.Spec.ClusterUser = &cvlabv1alpha1.ClusterUser{Name: "alice", UID: 10, GroupName: "cvlab", GID: 20}
			},
			wantEnv: []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "NVIDIA_VISIBLE_DEVICES", Value: "void"}, {Name: "CLUSTER_USER", Value: "alice"}, {Name: "CLUSTER_USER_ID", Value: "10"},
				{Name: "CLUSTER_GROUP_NAME", Value: "cvlab"}, {Name: "CLUSTER_GROUP_ID", Value: "20"}},
		},
		"timeout rounds up to whole seconds": {
			mutate:   func(j *cvlabv1alpha1.CvlabJob) { j.Spec.Timeout = &metav1.Duration{Duration: 1500 * time.Millisecond} },
			wantEnv:  []corev1.EnvVar{{Name: "NVIDIA_VISIBLE_DEVICES", Value: "void"}},
			deadline: ptrInt64(2),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			j := base()
			tc.mutate(j)
			pod := BuildPod(j, 1, "", "")
			c := pod.Spec.Containers[0]
			if diff := cmp.Diff(tc.wantLimit, c.Resources.Limits, cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })); diff != "" {
				t.Errorf("limits (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantEnv, c.Env); diff != "" {
				t.Errorf("env (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.deadline, pod.Spec.ActiveDeadlineSeconds); diff != "" {
				t.Errorf("activeDeadlineSeconds (-want +got):\n%s", diff)
			}
			if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("restartPolicy = %q", pod.Spec.RestartPolicy)
			}
			if ref := metav1.GetControllerOf(pod); ref == nil || ref.UID != "uid-1" {
				t.Errorf("controller reference = %+v, want the job", ref)
			}
		})
	}
}

// TestBuildPodNoGPUThroughTheEnvironment: what the NVIDIA runtime will read in the job's container.
// A CPU job is blind (void overrides the image's "all"); a GPU job leaves the variable to the
// device plugin; a spec.env entry of the variable (a job stored before the CRD refused it) never
// reaches the pod.
func TestBuildPodNoGPUThroughTheEnvironment(t *testing.T) {
	cases := map[string]struct {
		gpus int32
		env  []corev1.EnvVar
		// want is the last NVIDIA_VISIBLE_DEVICES of the container ("" for none), and wantCount
		// how many entries carry the name.
		want      string
		wantCount int
		wantKept  []string // other names, in order
	}{
		"cpu job":                         {gpus: 0, want: "void", wantCount: 1},
		"cpu job with env":                {gpus: 0, env: []corev1.EnvVar{{Name: "A", Value: "1"}}, want: "void", wantCount: 1, wantKept: []string{"A"}},
		"gpu job":                         {gpus: 2},
		"cpu job with a stored all":       {gpus: 0, env: []corev1.EnvVar{{Name: "NVIDIA_VISIBLE_DEVICES", Value: "all"}, {Name: "B", Value: "2"}}, want: "void", wantCount: 1, wantKept: []string{"B"}},
		"gpu job with a stored all":       {gpus: 1, env: []corev1.EnvVar{{Name: "NVIDIA_VISIBLE_DEVICES", Value: "all"}}},
		"gpu job with a stored valueFrom": {gpus: 1, env: []corev1.EnvVar{{Name: "NVIDIA_VISIBLE_DEVICES", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "gpus"}, Key: "all"}}}}},
		// Another name to the runtime (environment names are case-sensitive): kept as it is.
		"other case is another variable": {gpus: 0, env: []corev1.EnvVar{{Name: "nvidia_visible_devices", Value: "all"}}, want: "void", wantCount: 1, wantKept: []string{"nvidia_visible_devices"}},
		"CUDA_VISIBLE_DEVICES is kept":   {gpus: 1, env: []corev1.EnvVar{{Name: "CUDA_VISIBLE_DEVICES", Value: "0"}}, wantKept: []string{"CUDA_VISIBLE_DEVICES"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			j := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Name: "j", Namespace: "lab"},
				Spec: cvlabv1alpha1.CvlabJobSpec{User: "alice", Image: "pytorch/pytorch", GPUs: tc.gpus, Env: tc.env}}
			c := BuildPod(j, 1, "", "").Spec.Containers[0]
			var got string
			var count int
			var kept []string
			for _, e := range c.Env {
				if e.Name == "NVIDIA_VISIBLE_DEVICES" {
					got, count = e.Value, count+1
					if e.ValueFrom != nil {
						t.Errorf("NVIDIA_VISIBLE_DEVICES comes from %+v", e.ValueFrom)
					}
				} else {
					kept = append(kept, e.Name)
				}
			}
			if got != tc.want || count != tc.wantCount {
				t.Errorf("NVIDIA_VISIBLE_DEVICES = %q in %d entries, want %q in %d", got, count, tc.want, tc.wantCount)
			}
			if diff := cmp.Diff(tc.wantKept, kept); diff != "" {
				t.Errorf("other env (-want +got):\n%s", diff)
			}
			if len(tc.env) > 0 && tc.env[0].Name == "NVIDIA_VISIBLE_DEVICES" && j.Spec.Env[0].Name != "NVIDIA_VISIBLE_DEVICES" {
				t.Errorf("the job's spec.env was changed")
			}
		})
	}
}

func ptrInt64(n int64) *int64 { return &n }
