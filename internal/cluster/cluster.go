// Package cluster reads what the queue needs from pods and nodes, the same way for the operator
// and for the kubectl plugin: the GPUs a pod holds, where it runs, whether a node can take jobs.
package cluster

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// Labels and annotations the operator puts on its pods.
const (
	// LabelJob names the pod's CvlabJob.
	LabelJob = "cvlab.epfl.ch/job"
	// LabelAdmission numbers the job's admissions; its n-th pod is <job>-<n>.
	LabelAdmission = "cvlab.epfl.ch/admission"
	// AnnotationNode is the node the queue placed the pod on (also a required node affinity).
	AnnotationNode = "cvlab.epfl.ch/node"
	// ResourceGPU is the extended resource of NVIDIA's device plugin.
	ResourceGPU corev1.ResourceName = "nvidia.com/gpu"
	// DefaultTerminationGracePeriodSeconds is the grace period of the operator's pods when the job
	// sets none: it lets training checkpoint on SIGTERM.
	DefaultTerminationGracePeriodSeconds int64 = 60
	// ContainerName is the name of a job pod's only container.
	ContainerName = "job"
)

// PodGPUs is the nvidia.com/gpu a pod holds: the larger of its containers' sum and its init
// containers' maximum, counting limits or, failing them, requests.
func PodGPUs(p *corev1.Pod) int32 {
	get := func(c *corev1.Container) int64 {
		if q, ok := c.Resources.Limits[ResourceGPU]; ok {
			return q.Value()
		}
		q := c.Resources.Requests[ResourceGPU]
		return q.Value()
	}
	var sum, initMax int64
	for i := range p.Spec.Containers {
		sum += get(&p.Spec.Containers[i])
	}
	for i := range p.Spec.InitContainers {
		initMax = max(initMax, get(&p.Spec.InitContainers[i]))
	}
	return int32(max(sum, initMax))
}

// PodNode is the node a pod runs on, or the node the queue assigned it to.
func PodNode(p *corev1.Pod) string {
	if p.Spec.NodeName != "" {
		return p.Spec.NodeName
	}
	return p.Annotations[AnnotationNode]
}

// PodFinished tells whether a pod has ended (and so holds nothing).
func PodFinished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// PodAdmission is the admission number of one of the operator's pods (0 if none).
func PodAdmission(p *corev1.Pod) int32 {
	n, _ := strconv.ParseInt(p.Labels[LabelAdmission], 10, 32)
	return int32(n)
}

// NodeSchedulable tells whether a node can take jobs: Ready and not cordoned.
func NodeSchedulable(n *corev1.Node) bool {
	if n.Spec.Unschedulable {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
