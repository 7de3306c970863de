package cli

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// TestJobPod: shell and port-forward reach the job's current pod (renamed at each admission) while
// the job runs, and otherwise say where the job stands and what to do.
func TestJobPod(t *testing.T) {
	pos := int32(3)
	cases := map[string]struct {
		status  cvlabv1alpha1.CvlabJobStatus
		pod     string
		wantErr string
	}{
		"running: the pod of its latest admission": {
			status: cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseRunning, PodName: "train-2", Admissions: 2},
			pod:    "train-2",
		},
		"admitted, not started yet": {
			status:  cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseAdmitted, PodName: "train-1", Admissions: 1},
			wantErr: `cvlabjob "train" is admitted but its pod train-1 has not started yet: try again once kubectl cvlab queue shows it Running`,
		},
		"waiting, with its position": {
			status:  cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseQueued, QueuePosition: &pos, PodName: "train-1", Admissions: 1},
			wantErr: `cvlabjob "train" has no pod yet (waiting in the queue, position 3): see kubectl cvlab why train`,
		},
		"new, no status yet": {
			wantErr: `cvlabjob "train" has no pod yet (waiting in the queue): see kubectl cvlab why train`,
		},
		"finished: nothing runs, the logs stay": {
			status:  cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseFailed, PodName: "train-1", Admissions: 1},
			wantErr: `cvlabjob "train" has finished (Failed): nothing runs in its pod any more; read its logs with kubectl cvlab logs train`,
		},
		"suspended": {
			status:  cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseSuspended},
			wantErr: `cvlabjob "train" is suspended and has no pod: set spec.suspend to false to queue it again`,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			j := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Namespace: "lab", Name: "train"}, Status: tc.status}
			pod, err := jobPod(j)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || pod != tc.pod {
				t.Fatalf("jobPod = %q, %v; want %q", pod, err, tc.pod)
			}
		})
	}
}

// TestForwardedPorts: [LOCAL:]PORT with PORT a number or the name of one of the job's ports.
func TestForwardedPorts(t *testing.T) {
	j := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Name: "nb"}, Spec: cvlabv1alpha1.CvlabJobSpec{
		Ports: []corev1.ContainerPort{{Name: "jupyter", ContainerPort: 8888}, {ContainerPort: 6006}}}}
	cases := map[string]struct {
		args    []string
		want    []string
		wantErr string
	}{
		"the same local port":            {args: []string{"8888"}, want: []string{"8888:8888"}},
		"another local port":             {args: []string{"9999:8888"}, want: []string{"9999:8888"}},
		"any free local port":            {args: []string{":8888", "0:6006"}, want: []string{":8888", "0:6006"}},
		"a port not declared by the job": {args: []string{"5000"}, want: []string{"5000:5000"}},
		"a port by its name":             {args: []string{"jupyter", "9000:jupyter"}, want: []string{"8888:8888", "9000:8888"}},
		"an unknown name":                {args: []string{"tensorboard"}, wantErr: `is neither a port number nor the name of one of cvlabjob "nb"'s ports (jupyter=8888)`},
		"a port out of range":            {args: []string{"70000"}, wantErr: "the pod's port must be between 1 and 65535"},
		"port 0 in the pod":              {args: []string{"0"}, wantErr: "the pod's port must be between 1 and 65535"},
		"a bad local port":               {args: []string{"x:8888"}, wantErr: "the local port must be a number between 0 and 65535"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := forwardedPorts(j, tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("forwardedPorts(%q) = %q, %v; want %q", tc.args, got, err, tc.want)
			}
		})
	}
}
