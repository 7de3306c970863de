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
			mutate: func(*cvlabv1alpha1.CvlabJob) {},
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
			wantEnv: []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "CLUSTER_USER", Value: "alice"}, {Name: "CLUSTER_USER_ID", Value: "10"},
				{Name: "CLUSTER_GROUP_NAME", Value: "cvlab"}, {Name: "CLUSTER_GROUP_ID", Value: "20"}},
		},
		"timeout rounds up to whole seconds": {
			mutate:   func(j *cvlabv1alpha1.CvlabJob) { j.Spec.Timeout = &metav1.Duration{Duration: 1500 * time.Millisecond} },
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

func ptrInt64(n int64) *int64 { return &n }
