package simulate

import (
	corev1 "k8s.io/api/core/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// SimulatedPod is the CvlabJob of a trace job and the pod of its n-th admission on node, as a
// simulation makes them (for the external tests).
func SimulatedPod(t TraceJob, n int32, node string) (*cvlabv1alpha1.CvlabJob, *corev1.Pod, error) {
	s, err := newSim(Config{}, State{}, nil)
	if err != nil {
		return nil, nil, err
	}
	j, err := s.add(t, "")
	if err != nil {
		return nil, nil, err
	}
	return j.job, &s.newPod(j, n, node).Pod, nil
}
