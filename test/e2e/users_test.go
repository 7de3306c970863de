//go:build e2e

package e2e_test

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// The demo's people of make run-local, used as the README shows them: the kubeconfig's contexts
// alice and bob (client certificates of group cvlab-users, which has cvlab-user in namespace
// default) and root (group cvlab-admins, a queue admin), with the samples, which live in default.
var _ = Describe("The demo's people", Ordered, func() {
	const (
		ns        = "default"
		aliceJob  = "config/samples/gpu-job.yaml"          // alice-train, spec.user alice
		bobJob    = "config/samples/jupyter-2gpu-job.yaml" // bob-jupyter, spec.user bob
		ownerRule = "ValidatingAdmissionPolicy 'cvlab-queue-job-owner'"
	)

	// as runs kubectl with one of the kubeconfig's contexts.
	as := func(who string, args ...string) (string, error) {
		return kubectl(append([]string{"--context", who}, args...)...)
	}

	AfterAll(func(ctx SpecContext) {
		// Whatever a failed spec left, so that the other specs find all GPUs free.
		for _, name := range []string{"alice-train", "bob-jupyter"} {
			j := &cvlabv1alpha1.CvlabJob{}
			j.Namespace, j.Name = ns, name
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, j))).To(Succeed())
			gone(ctx, ns, name)
		}
		waitNoPods(ctx, ns)
	})

	It("are contexts of the kubeconfig, next to the cluster admin's default one", func() {
		out, err := kubectl("config", "get-contexts", "-o", "name")
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.Fields(out)).To(ConsistOf("cvlab-local", "alice", "bob", "root"))
		out, err = kubectl("config", "current-context")
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.TrimSpace(out)).To(Equal("cvlab-local"))

		// Who the API server says each one is (SelfSubjectReview): a client certificate's CN and O.
		for who, want := range map[string][]string{
			"alice": {"alice", "cvlab-users"},
			"bob":   {"bob", "cvlab-users"},
			"root":  {"root", "cvlab-admins"},
		} {
			out, err := as(who, "auth", "whoami", "-o", "json")
			Expect(err).NotTo(HaveOccurred())
			var review authenticationv1.SelfSubjectReview
			Expect(json.Unmarshal([]byte(out), &review)).To(Succeed(), out)
			Expect(review.Status.UserInfo.Username).To(Equal(want[0]), who)
			Expect(review.Status.UserInfo.Groups).To(ConsistOf(want[1], "system:authenticated"), who)
		}
	})

	It("refuse alice a job as bob, saying why and what to do instead", func(ctx SpecContext) {
		out, err := as("alice", "apply", "-f", bobJob)
		Expect(err).To(HaveOccurred())
		Expect(out).To(And(
			ContainSubstring(`cvlabjobs.cvlab.epfl.ch "bob-jupyter" is forbidden`),
			ContainSubstring(ownerRule),
			ContainSubstring(`spec.user is "bob" but you are "alice" (username "alice"): you can only submit jobs as yourself; `+
				`leave spec.user out and it is set for you, or ask a queue admin (groups cvlab-admins)`),
		))
		err = k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "bob-jupyter"}, &cvlabv1alpha1.CvlabJob{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "bob-jupyter must not exist: %v", err)
	})

	It("run alice's own job, which only she can delete", func(ctx SpecContext) {
		out, err := as("alice", "apply", "-f", aliceJob)
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("cvlabjob.cvlab.epfl.ch/alice-train created"))
		pod := runningPod(ctx, ns, "alice-train")
		Expect(pod.Spec.NodeName).To(HavePrefix("gpu-node-"))
		Expect(getJob(ctx, ns, "alice-train").Spec.User).To(Equal("alice"))

		out, err = as("bob", "delete", "cvlabjob", "alice-train")
		Expect(err).To(HaveOccurred())
		Expect(out).To(And(ContainSubstring(ownerRule), ContainSubstring(
			`CvlabJob default/alice-train belongs to "alice", not to you ("bob"): only its owner or a queue admin (groups cvlab-admins) can delete it`)))

		_, err = as("alice", "delete", "-f", aliceJob, "--wait=false")
		Expect(err).NotTo(HaveOccurred())
		gone(ctx, ns, "alice-train")
		waitNoPods(ctx, ns)
	})

	It("let root, a queue admin, submit and delete a job for bob", func(ctx SpecContext) {
		out, err := as("root", "apply", "-f", bobJob)
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("cvlabjob.cvlab.epfl.ch/bob-jupyter created"))
		Expect(getJob(ctx, ns, "bob-jupyter").Spec.User).To(Equal("bob"))
		runningPod(ctx, ns, "bob-jupyter")

		_, err = as("root", "delete", "-f", bobJob, "--wait=false")
		Expect(err).NotTo(HaveOccurred())
		gone(ctx, ns, "bob-jupyter")
		waitNoPods(ctx, ns)
	})
})

// gone waits until a job no longer exists.
func gone(ctx context.Context, ns, name string) {
	GinkgoHelper()
	Eventually(func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cvlabv1alpha1.CvlabJob{})
	}).WithContext(ctx).WithTimeout(30*time.Second).Should(Satisfy(apierrors.IsNotFound), "job %s/%s deleted", ns, name)
}
