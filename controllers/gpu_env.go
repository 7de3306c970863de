package controllers

import corev1 "k8s.io/api/core/v1"

const (
	// EnvNVIDIAVisibleDevices is the variable the NVIDIA container runtime reads to decide which
	// GPUs a container sees: "all" (set by CUDA base images), indices or UUIDs, "none" (driver
	// libraries, no device) or "void" (nothing, as plain runc). Where that runtime is the node's
	// default, a container without an nvidia.com/gpu limit sees what its environment names
	// (NVIDIA/k8s-device-plugin#87, #61). The name is case-sensitive, as environment names are.
	EnvNVIDIAVisibleDevices = "NVIDIA_VISIBLE_DEVICES"
	// NVIDIAVisibleDevicesVoid makes the NVIDIA runtime leave the container alone.
	NVIDIAVisibleDevicesVoid = "void"
)

// jobEnv is the container environment of a job: spec.env without NVIDIA_VISIBLE_DEVICES, then,
// for a CPU job (gpus 0), NVIDIA_VISIBLE_DEVICES=void, which overrides the image's (CUDA images
// say "all"): the pod's explicit env wins over the image's ENV and over envFrom. A GPU job gets
// none from the operator: the device plugin sets it to the GPUs the kubelet allocated.
//
// The CRD refuses spec.env naming NVIDIA_VISIBLE_DEVICES (api/v1alpha1); the filter is for jobs
// stored before that rule, which CRD validation ratcheting keeps as they are.
func jobEnv(spec []corev1.EnvVar, gpus int32) []corev1.EnvVar {
	env := make([]corev1.EnvVar, 0, len(spec)+1)
	for _, e := range spec {
		if e.Name != EnvNVIDIAVisibleDevices {
			env = append(env, e)
		}
	}
	if gpus == 0 {
		env = append(env, corev1.EnvVar{Name: EnvNVIDIAVisibleDevices, Value: NVIDIAVisibleDevicesVoid})
	}
	if len(env) == 0 {
		return nil
	}
	return env
}
