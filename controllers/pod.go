package controllers

import (
	"fmt"
	"math"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
)

// Labels and annotations the operator puts on pods. `user` and `priority` are the lab's
// historical labels, kept so that existing tooling still reads them.
const (
	LabelUser      = "user"
	LabelPriority  = "priority"
	LabelJob       = cluster.LabelJob
	LabelAdmission = cluster.LabelAdmission
	// AnnotationPriority carries the exact priority, negative values included.
	AnnotationPriority = "cvlab.epfl.ch/priority"
	// AnnotationNode is the node the queue placed the pod on (also a required node affinity).
	AnnotationNode = cluster.AnnotationNode
	// DefaultTerminationGracePeriodSeconds lets training checkpoint on SIGTERM.
	DefaultTerminationGracePeriodSeconds = cluster.DefaultTerminationGracePeriodSeconds
	// ResourceGPU is the extended resource of NVIDIA's device plugin.
	ResourceGPU = cluster.ResourceGPU
	// ContainerName is the name of the job's only container.
	ContainerName = cluster.ContainerName
)

// PriorityLabelValue renders a priority as a label value. Label values must start with an
// alphanumeric character, so a negative priority -5 is written "neg-5"; 0 and positive values are
// plain decimals as in the lab's guide. The exact value is also in the cvlab.epfl.ch/priority
// annotation.
func PriorityLabelValue(p int32) string {
	if p < 0 {
		return "neg" + strconv.Itoa(int(p))
	}
	return strconv.Itoa(int(p))
}

// BuildPod renders the pod of a job's n-th admission. When node is set, the pod may only run there:
// a required node affinity on its kubernetes.io/hostname label (hostname), so that the scheduler
// cannot place it elsewhere (it still checks cpu and memory). WithDirectoryUser gives a job
// without spec.clusterUser its owner's lab directory account (directory.go).
func BuildPod(job *cvlabv1alpha1.CvlabJob, admission int32, node, hostname string, opts ...PodOption) *corev1.Pod {
	// A copy: the pod must share no slice or pointer with job, which may be the cache's own object
	// (the API server's answer to the create is decoded into the pod).
	spec := job.Spec.DeepCopy()
	labels := map[string]string{}
	for k, v := range spec.PodLabels {
		labels[k] = v
	}
	labels[LabelUser] = spec.User
	labels[LabelPriority] = PriorityLabelValue(spec.Priority)
	labels[LabelJob] = jobLabelValue(job.Name)
	labels[LabelAdmission] = strconv.Itoa(int(admission))

	annotations := map[string]string{}
	for k, v := range spec.PodAnnotations {
		annotations[k] = v
	}
	annotations[AnnotationPriority] = strconv.Itoa(int(spec.Priority))
	if node != "" {
		annotations[AnnotationNode] = node
	}

	env := jobEnv(spec.Env, spec.GPUs) // NVIDIA_VISIBLE_DEVICES=void for CPU jobs (gpu_env.go)
	if cu := clusterUserOf(spec, opts); cu != nil {
		env = append(env,
			corev1.EnvVar{Name: "CLUSTER_USER", Value: cu.Name},
			corev1.EnvVar{Name: "CLUSTER_USER_ID", Value: strconv.FormatInt(cu.UID, 10)},
			corev1.EnvVar{Name: "CLUSTER_GROUP_NAME", Value: cu.GroupName},
			corev1.EnvVar{Name: "CLUSTER_GROUP_ID", Value: strconv.FormatInt(cu.GID, 10)},
		)
	}

	resources := corev1.ResourceRequirements{
		Requests: spec.Resources.Requests.DeepCopy(),
		Limits:   spec.Resources.Limits.DeepCopy(),
	}
	if spec.GPUs > 0 {
		if resources.Limits == nil {
			resources.Limits = corev1.ResourceList{}
		}
		resources.Limits[ResourceGPU] = *resource.NewQuantity(int64(spec.GPUs), resource.DecimalSI)
	}

	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	for i, m := range spec.Cvlabdata {
		name := fmt.Sprintf("cvlabdata-%d", i)
		volumes = append(volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: m.ClaimName, ReadOnly: m.ReadOnly},
		}})
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: m.MountPath, ReadOnly: m.ReadOnly})
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        lifecycle.PodName(job, admission),
			Namespace:   job.Namespace,
			Labels:      labels,
			Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion:         cvlabv1alpha1.GroupVersion.String(),
				Kind:               "CvlabJob",
				Name:               job.Name,
				UID:                job.UID,
				Controller:         ptr.To(true),
				BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To(ptr.Deref(spec.TerminationGracePeriodSeconds, DefaultTerminationGracePeriodSeconds)),
			Containers: []corev1.Container{{
				Name:         ContainerName,
				Image:        spec.Image,
				Command:      spec.Command,
				Args:         spec.Args,
				WorkingDir:   spec.WorkingDir,
				Env:          env,
				Resources:    resources,
				Ports:        spec.Ports,
				VolumeMounts: mounts,
			}},
			Volumes: volumes,
		},
	}
	if hostname != "" {
		pod.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{hostname},
				}},
			}}},
		}}
	}
	if spec.Timeout != nil {
		pod.Spec.ActiveDeadlineSeconds = ptr.To(int64(math.Ceil(spec.Timeout.Seconds())))
	}
	return pod
}

// jobLabelValue fits a job name (up to 253 characters) into a label value (up to 63).
// Pods are matched to jobs by owner reference; the label is for people and selectors.
func jobLabelValue(name string) string {
	if len(name) <= 63 {
		return name
	}
	v := name[:63]
	for len(v) > 0 && !isAlnum(v[len(v)-1]) {
		v = v[:len(v)-1]
	}
	return v
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
