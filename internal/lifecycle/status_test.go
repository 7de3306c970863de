package lifecycle

import (
	"testing"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// TestWaitingReasons: every reason the engine gives is a waitingReason of the API, under the same
// name (status.waitingReason is the engine's word, documented in the CRD's enum).
func TestWaitingReasons(t *testing.T) {
	api := map[cvlabv1alpha1.WaitingReason]bool{
		cvlabv1alpha1.WaitingNoGPUsFree: true, cvlabv1alpha1.WaitingNoNodeFits: true, cvlabv1alpha1.WaitingNeverFits: true,
		cvlabv1alpha1.WaitingHeadOfLine: true, cvlabv1alpha1.WaitingReserved: true, cvlabv1alpha1.WaitingBackingOff: true,
		cvlabv1alpha1.WaitingQuotaExceeded: true, cvlabv1alpha1.WaitingSuspended: true,
	}
	engine := map[queue.WaitReason]bool{queue.NoGPUsFree: true, queue.NoNodeFits: true, queue.NeverFits: true,
		queue.HeadOfLine: true, queue.Reserved: true, queue.BackingOff: true, queue.QuotaExceeded: true}
	for w := range engine {
		if !api[waitingReason(w)] {
			t.Errorf("the engine's %q is not a waitingReason of the API", w)
		}
	}
	if got := waitingReason(queue.WaitNone); got != "" {
		t.Errorf("no reason became %q", got)
	}
}
