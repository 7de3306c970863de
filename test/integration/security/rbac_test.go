package security_test

import (
	"context"
	"strings"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/notify"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// can asks the API server whether c may do verb on resource ("pods", "pods/log", "apps/deployments")
// in ns ("" for the cluster), optionally on one named object.
func can(ctx context.Context, c client.Client, verb, resource, ns string, name ...string) bool {
	GinkgoHelper()
	group, res, _ := strings.Cut(resource, "/")
	if !strings.Contains(group, ".") && group != "apps" && group != "batch" {
		group, res = "", resource // core: "pods" or "pods/log"
	}
	res, sub, _ := strings.Cut(res, "/")
	attrs := &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group, Resource: res, Subresource: sub}
	if len(name) > 0 {
		attrs.Name = name[0]
	}
	r := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attrs}}
	Expect(c.Create(ctx, r)).To(Succeed())
	return r.Status.Allowed
}

const jobs = "cvlab.epfl.ch/cvlabjobs"

var _ = Describe("the shipped roles are enough, and no more", func() {
	var ns, other string
	BeforeEach(func(ctx SpecContext) { ns, other = newNamespace(ctx, true), newNamespace(ctx, false) })

	DescribeTable("cvlab-user, bound in a namespace",
		func(ctx SpecContext, verb, resource string, want bool) {
			Expect(can(ctx, as(alice), verb, resource, ns)).To(Equal(want))
		},
		Entry(nil, "create", jobs, true), Entry(nil, "get", jobs, true), Entry(nil, "list", jobs, true),
		Entry(nil, "watch", jobs, true), Entry(nil, "update", jobs, true), Entry(nil, "patch", jobs, true),
		Entry(nil, "delete", jobs, true),
		Entry(nil, "get", jobs+"/status", true),
		Entry(nil, "get", "pods", true), Entry(nil, "list", "pods", true), Entry(nil, "watch", "pods", true),
		Entry(nil, "get", "pods/log", true),
		Entry(nil, "create", "pods/exec", true), Entry(nil, "create", "pods/portforward", true),
		Entry(nil, "list", "events", true), Entry(nil, "list", "events.k8s.io/events", true),
		// GPUs only through the queue; nobody stops another's pod or job in bulk.
		Entry(nil, "create", "pods", false), Entry(nil, "delete", "pods", false),
		Entry(nil, "create", "pods/eviction", false), Entry(nil, "create", "pods/attach", false),
		Entry(nil, "deletecollection", jobs, false),
		Entry(nil, "update", jobs+"/status", false), Entry(nil, "patch", jobs+"/status", false),
		Entry(nil, "create", "apps/deployments", false), Entry(nil, "create", "batch/jobs", false),
		Entry(nil, "get", "secrets", false), Entry(nil, "get", "configmaps", false),
	)

	It("cvlab-user gives nothing outside its namespace", func(ctx SpecContext) {
		Expect(can(ctx, as(person{"oidc:zoe", []string{"others"}}), "create", jobs, ns)).To(BeFalse())
		Expect(can(ctx, as(alice), "list", jobs, "")).To(BeFalse(), "no cluster-wide list")
		Expect(can(ctx, as(alice), "patch", "namespaces", "", ns)).To(BeFalse(), "cannot lift the enforcement")
		Expect(can(ctx, as(alice), "create", jobs, other)).To(BeTrue())
	})

	DescribeTable("cvlab-admin, bound to the admin group",
		func(ctx SpecContext, verb, resource, ns string, want bool) {
			Expect(can(ctx, as(carol), verb, resource, ns)).To(Equal(want))
		},
		Entry(nil, "create", jobs, "lab", true), Entry(nil, "deletecollection", jobs, "lab", true),
		Entry(nil, "create", "pods", "lab", true), Entry(nil, "delete", "pods", "lab", true),
		Entry(nil, "create", "pods/exec", "lab", true), Entry(nil, "list", "nodes", "", true),
		Entry(nil, "update", jobs+"/status", "lab", false),
		Entry(nil, "patch", "namespaces", "", false),
		Entry(nil, "get", "secrets", "lab", false),
		Entry(nil, "patch", "configmaps", operatorNS, false),
		Entry(nil, "update", "admissionregistration.k8s.io/validatingadmissionpolicies", "", false),
	)

	DescribeTable("the manager's service account (manager-role and its namespaced roles)",
		func(ctx SpecContext, verb, resource, ns, name string, want bool) {
			operator := as(person{operatorUser, []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNS}})
			if name == "" {
				Expect(can(ctx, operator, verb, resource, ns)).To(Equal(want))
			} else {
				Expect(can(ctx, operator, verb, resource, ns, name)).To(Equal(want))
			}
		},
		Entry(nil, "create", "pods", "lab", "", true), Entry(nil, "delete", "pods", "lab", "", true),
		Entry(nil, "list", "nodes", "", "", true), Entry(nil, "watch", jobs, "", "", true),
		Entry(nil, "patch", jobs+"/status", "lab", "", true),
		Entry(nil, "get", "configmaps", operatorNS, "cvlab-queue-admission-params", true),
		Entry(nil, "patch", "configmaps", operatorNS, "cvlab-queue-admission-params", true),
		Entry(nil, "create", "authentication.k8s.io/tokenreviews", "", "", true),
		Entry(nil, "create", "authorization.k8s.io/subjectaccessreviews", "", "", true),
		// It never writes a job's spec, nor touches what it does not own.
		Entry(nil, "update", jobs, "lab", "", false), Entry(nil, "patch", jobs, "lab", "", false),
		Entry(nil, "delete", jobs, "lab", "", false), Entry(nil, "create", jobs, "lab", "", false),
		Entry(nil, "update", "pods", "lab", "", false), Entry(nil, "patch", "pods", "lab", "", false),
		Entry(nil, "get", "secrets", "lab", "", false),
		Entry(nil, "patch", "configmaps", operatorNS, "another", false),
		Entry(nil, "patch", "configmaps", "lab", "cvlab-queue-admission-params", false),
		Entry(nil, "patch", "namespaces", "", "", false),
		Entry(nil, "update", "admissionregistration.k8s.io/validatingadmissionpolicies", "", "", false),
		Entry(nil, "update", "nodes", "", "", false),
	)
})

var _ = Describe("the policies", func() {
	// kube-controller-manager type-checks policies into their status; envtest has none, so the
	// suite runs the same type checker against the API server's OpenAPI.
	It("type-check against every kind they match without a warning", func(ctx SpecContext) {
		dc, err := discovery.NewDiscoveryClientForConfig(adminCfg)
		Expect(err).NotTo(HaveOccurred())
		checker := &validating.TypeChecker{SchemaResolver: &resolver.ClientDiscoveryResolver{Discovery: dc}, RestMapper: admin.RESTMapper()}
		for _, name := range []string{"cvlab-queue-job-owner", "cvlab-queue-job-spec", "cvlab-queue-no-gpu-pods", "cvlab-queue-no-gpu-workloads", "cvlab-queue-operator-pods"} {
			var p admissionregistrationv1.ValidatingAdmissionPolicy
			Expect(admin.Get(ctx, client.ObjectKey{Name: name}, &p)).To(Succeed())
			Expect(checker.Check(&p)).To(BeEmpty(), name)
		}
	})
})

// expectPublished waits for the manager to publish the settings it decides with
// (--gpu-capacity=8) and returns the ConfigMap.
func expectPublished(ctx context.Context) *corev1.ConfigMap {
	By("the manager publishing the settings it decides with (--gpu-capacity=8)")
	var cm corev1.ConfigMap
	Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: observe.PublishedName}, &cm)).To(Succeed())
		pub, err := observe.ParsePublished(cm.Data)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(pub.Settings.GPUCapacity).To(Equal(int32(8)))
		g.Expect(pub.Settings.Preemption).To(Equal(observe.DefaultPreemption))
	}).Should(Succeed())
	return &cm
}

var _ = Describe("the operator's published settings", func() {
	It("are written by the manager with its shipped role, and readable by every lab member, read-only", func(ctx SpecContext) {
		cm := expectPublished(ctx)

		By("alice, a cvlab-user elsewhere, reading it with her own rights, and nothing else there")
		var read corev1.ConfigMap
		Expect(as(alice).Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: observe.PublishedName}, &read)).To(Succeed())
		Expect(read.Data).To(Equal(cm.Data))
		Expect(can(ctx, as(alice), "update", "configmaps", operatorNS, observe.PublishedName)).To(BeFalse())
		Expect(can(ctx, as(alice), "patch", "configmaps", operatorNS, observe.PublishedName)).To(BeFalse())
		Expect(can(ctx, as(alice), "delete", "configmaps", operatorNS, observe.PublishedName)).To(BeFalse())
		Expect(can(ctx, as(alice), "get", "configmaps", operatorNS, validation.ParamsName)).To(BeFalse())
		Expect(can(ctx, as(alice), "list", "configmaps", operatorNS)).To(BeFalse())
	})
})

var _ = Describe("the notifications' record and credentials", func() {
	It("are the manager's alone: it keeps its record and reads its one Secret with its shipped role; lab members read neither", func(ctx SpecContext) {
		operator := as(person{operatorUser, []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNS}})
		By("the record of what was sent, created, read and written by the manager")
		store := &notify.ConfigMapStore{Client: operator, Namespace: operatorNS}
		first, err := store.Load(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(first.Since.IsZero()).To(BeFalse())
		Expect(store.Record(ctx, []string{"uid-1.Failed.final"}, time.Now())).To(Succeed())
		again, err := store.Load(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(again.Sent).To(HaveKey("uid-1.Failed.final"))
		Expect(again.Since.Equal(first.Since)).To(BeTrue())

		By("its credentials: that one Secret, no other")
		for _, name := range []string{"cvlab-queue-notify", "someone-elses"} {
			create(ctx, admin, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: name},
				StringData: map[string]string{"password": "hunter2"}})
		}
		var s corev1.Secret
		Expect(operator.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: "cvlab-queue-notify"}, &s)).To(Succeed())
		Expect(string(s.Data["password"])).To(Equal("hunter2"))
		err = operator.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: "someone-elses"}, &s)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(can(ctx, operator, "list", "secrets", operatorNS)).To(BeFalse())
		Expect(can(ctx, operator, "update", "secrets", operatorNS, "cvlab-queue-notify")).To(BeFalse())

		By("alice reads neither")
		Expect(can(ctx, as(alice), "get", "secrets", operatorNS, "cvlab-queue-notify")).To(BeFalse())
		Expect(can(ctx, as(alice), "get", "configmaps", operatorNS, notify.DefaultStoreName)).To(BeFalse())
	})
})
