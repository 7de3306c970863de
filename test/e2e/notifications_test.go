//go:build e2e

package e2e_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/mailcatcher"
)

// The demo's mail: make run-local points the operator at its mail catcher, and alice's lab
// directory entry has email=alice@cvlab.local.
var _ = Describe("Email notifications on the local cluster", func() {
	It("tell alice, in the mail catcher's inbox, that her job failed, with its exit code", func(ctx SpecContext) {
		const ns, name = "default", "e2e-mail-fail"
		j := &cvlabv1alpha1.CvlabJob{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: cvlabv1alpha1.CvlabJobSpec{User: "alice", Image: "busybox", GPUs: 1, PodAnnotations: map[string]string{
				"cvlab.epfl.ch/simulated-runtime": "2s", "cvlab.epfl.ch/simulated-result": "Failed", "cvlab.epfl.ch/simulated-exit-code": "3"}},
		}
		Expect(k8s.Create(ctx, j)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) {
			Expect(k8s.Delete(ctx, j)).To(Succeed())
			gone(ctx, ns, name)
		})
		inbox := func() []mailcatcher.Message {
			resp, err := http.Get(mailInbox + "/api/messages")
			Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			var msgs []mailcatcher.Message
			Expect(json.NewDecoder(resp.Body).Decode(&msgs)).To(Succeed())
			var out []mailcatcher.Message
			for _, m := range msgs {
				if strings.Contains(m.Text, ns+"/"+name) {
					out = append(out, m)
				}
			}
			return out
		}
		Eventually(inbox, 90*time.Second, time.Second).Should(HaveLen(1))
		m := inbox()[0]
		Expect(m.To).To(Equal([]string{"alice@cvlab.local"}))
		Expect(m.Text).To(ContainSubstring("exit code 3"))
		Expect(m.HTML).To(ContainSubstring("exit code 3"))
	})
})
