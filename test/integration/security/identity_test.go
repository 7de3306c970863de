package security_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

// manifest is a CvlabJob the way kubectl sends it: spec.user absent when user is "".
func manifest(ns, name, user string, priority int) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	doc := fmt.Sprintf("apiVersion: cvlab.epfl.ch/v1alpha1\nkind: CvlabJob\nmetadata: {name: %s, namespace: %s}\n"+
		"spec:\n  image: lab-base:cpu\n  priority: %d\n", name, ns, priority)
	if user != "" {
		doc += "  user: " + user + "\n"
	}
	Expect(yaml.Unmarshal([]byte(doc), &u.Object)).To(Succeed())
	return u
}

// userOf is the spec.user of the job as stored.
func userOf(ctx context.Context, ns, name string) string {
	var j cvlabv1alpha1.CvlabJob
	Expect(admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &j)).To(Succeed())
	return j.Spec.User
}

func patchSpec(ctx context.Context, c client.Client, ns, name, spec string) error {
	j := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	return c.Patch(ctx, j, client.RawPatch(types.MergePatchType, []byte(`{"spec":`+spec+`}`)))
}

func deleteJob(ctx context.Context, c client.Client, ns, name string) error {
	return c.Delete(ctx, &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
}

// setParam changes one key of the policies' params for the rest of the spec, and waits until
// probe (a request that depends on it) passes; at the end it restores the key and waits until
// restored passes, so that no other spec sees the change.
func setParam(ctx context.Context, key, value string, probe, restored func(Gomega)) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: validation.ParamsName}}
	patch := func(ctx context.Context, v string) error {
		return admin.Patch(ctx, cm, client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"data":{%q:%q}}`, key, v))))
	}
	var old corev1.ConfigMap
	Expect(admin.Get(ctx, client.ObjectKeyFromObject(cm), &old)).To(Succeed())
	Expect(patch(ctx, value)).To(Succeed())
	DeferCleanup(func(ctx context.Context) {
		Expect(patch(ctx, old.Data[key])).To(Succeed())
		Eventually(restored).Should(Succeed())
	}, context.Background())
	Eventually(probe).Should(Succeed())
}

var _ = Describe("spec.user is the requester", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx, false) })

	It("is set from the requester when omitted, for kubectl and Go clients alike", func(ctx SpecContext) {
		Expect(as(alice).Create(ctx, manifest(ns, "from-kubectl", "", 0))).To(Succeed())
		Expect(userOf(ctx, ns, "from-kubectl")).To(Equal("alice"))

		j := job(ns, "from-go", "", 1) // the typed client sends "user": ""
		Expect(as(alice).Create(ctx, j)).To(Succeed())
		Expect(j.Spec.User).To(Equal("alice"))
	})

	It("is kept on update when a manifest leaves it out (apply, server-side apply, GitOps)", func(ctx SpecContext) {
		m := manifest(ns, "gitops", "", 0)
		apply := func(m *unstructured.Unstructured) error {
			return as(alice).Apply(ctx, client.ApplyConfigurationFromUnstructured(m.DeepCopy()), client.FieldOwner("argocd"))
		}
		Expect(apply(m)).To(Succeed())
		Expect(userOf(ctx, ns, "gitops")).To(Equal("alice"))
		Expect(apply(m)).To(Succeed(), "applying the same manifest again")
		Expect(apply(manifest(ns, "gitops", "", 5))).To(Succeed(), "changing the priority")
		Expect(userOf(ctx, ns, "gitops")).To(Equal("alice"))
	})

	DescribeTable("is the username mapped by the rule of docs/security.md",
		func(ctx SpecContext, username, want string) {
			username = strings.ReplaceAll(username, "NS", ns)
			j := job(ns, "mapped", "", 0)
			Expect(as(person{username, []string{usersGroup}}).Create(ctx, j)).To(Succeed())
			Expect(j.Spec.User).To(Equal(strings.ReplaceAll(want, "NS", ns)))
		},
		Entry("OIDC users lose the oidc: prefix", "oidc:alice", "alice"),
		Entry("a name without a configured prefix is kept", "frank", "frank"),
		Entry("a service account keeps its namespace and name", "system:serviceaccount:NS:ci-bot", "system.serviceaccount.NS.ci-bot"),
		Entry("characters a label value cannot hold become dots", "oidc:erin@epfl.ch", "erin.epfl.ch"),
		Entry("and are dropped at the ends", "oidc:_grace_", "grace"),
	)

	It("maps a client certificate's common name, and strips configured suffixes", func(ctx SpecContext) {
		dave, err := env.AddUser(envtest.User{Name: "dave", Groups: []string{usersGroup}}, adminCfg)
		Expect(err).NotTo(HaveOccurred())
		c, err := client.New(dave.Config(), client.Options{Scheme: framework.Scheme})
		Expect(err).NotTo(HaveOccurred())
		j := job(ns, "cert", "", 0)
		Expect(c.Create(ctx, j)).To(Succeed())
		Expect(j.Spec.User).To(Equal("dave"))

		erin := person{"oidc:erin@epfl.ch", []string{usersGroup}}
		mapsTo := func(want string) func(Gomega) {
			return func(g Gomega) {
				j := job(ns, "suffix-probe", "", 0)
				g.Expect(as(erin).Create(context.Background(), j, client.DryRunAll)).To(Succeed())
				g.Expect(j.Spec.User).To(Equal(want))
			}
		}
		setParam(ctx, "stripSuffixes", "@epfl.ch, @epfl.org", mapsTo("erin"), mapsTo("erin.epfl.ch"))
		Expect(as(erin).Create(ctx, job(ns, "suffix", "erin", 0))).To(Succeed(), "erin may name herself")
		Expect(as(erin).Create(ctx, job(ns, "suffix-2", "erin.epfl.ch", 0))).To(
			forbidden(ownerPolicy, `spec.user is "erin.epfl.ch" but you are "erin" (username "oidc:erin@epfl.ch")`))
	})

	DescribeTable("refuses a username that gives no valid user name, and says why",
		func(ctx SpecContext, username, user string, parts ...string) {
			err := as(person{username, []string{usersGroup}}).Create(ctx, job(ns, "bad-name", user, 0))
			Expect(err).To(forbidden(ownerPolicy, append(parts,
				"ask a queue admin (groups cvlab-admins) to adjust stripPrefixes/stripSuffixes in ConfigMap cvlab-queue-system/cvlab-queue-admission-params")...))
		},
		Entry("a stripped prefix cannot reveal a Kubernetes identity",
			"oidc:system:serviceaccount:kube-system:default", "system.serviceaccount.kube-system.default",
			`your username "oidc:system:serviceaccount:kube-system:default" gives no valid user name`, `cannot start with "system:"`),
		Entry("more than 63 characters", "oidc:"+strings.Repeat("x", 64), strings.Repeat("x", 63),
			`gives no valid user name (got "`+strings.Repeat("x", 64)+`"; a user name is 1 to 63 letters`),
		Entry("nothing left", "oidc:", "a", `your username "oidc:" gives no valid user name (got ""`),
	)

	It("refuses an omitted spec.user when the username gives no valid user name", func(ctx SpecContext) {
		err := as(person{"oidc:" + strings.Repeat("y", 64), []string{usersGroup}}).Create(ctx, manifest(ns, "unnamed", "", 0))
		// job-owner-default leaves it out, so the CRD's schema (spec.user is required) refuses it
		// before job-owner can; were spec.user optional in the schema, job-owner would say why.
		Expect(err).To(Or(
			SatisfyAll(WithTransform(apierrors.IsInvalid, BeTrue()), MatchError(ContainSubstring("spec.user: Required value"))),
			forbidden(ownerPolicy, "gives no valid user name")))
	})
})

var _ = Describe("a user changes only their own jobs", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx, false)
		Expect(as(bob).Create(ctx, manifest(ns, "bob-train", "", 0))).To(Succeed())
		Expect(as(alice).Create(ctx, manifest(ns, "alice-train", "", 0))).To(Succeed())
	})

	It("alice cannot submit a job as bob", func(ctx SpecContext) {
		Expect(as(alice).Create(ctx, manifest(ns, "as-bob", "bob", 0))).To(forbidden(ownerPolicy,
			`spec.user is "bob" but you are "alice" (username "oidc:alice"): you can only submit jobs as yourself; `+
				`leave spec.user out and it is set for you, or ask a queue admin (groups cvlab-admins)`))
	})

	It("alice cannot change bob's job", func(ctx SpecContext) {
		Expect(patchSpec(ctx, as(alice), ns, "bob-train", `{"priority":1000}`)).To(forbidden(ownerPolicy,
			`CvlabJob `+ns+`/bob-train belongs to "bob", not to you ("alice"): only its owner or a queue admin (groups cvlab-admins) can change or suspend it`))
		Expect(patchSpec(ctx, as(alice), ns, "bob-train", `{"user":"alice"}`)).To(MatchError(ContainSubstring("user is immutable")))
	})

	It("alice cannot suspend bob's job", func(ctx SpecContext) {
		Expect(patchSpec(ctx, as(alice), ns, "bob-train", `{"suspend":true}`)).To(forbidden(ownerPolicy,
			`belongs to "bob", not to you ("alice")`, "can change or suspend it"))
	})

	It("alice cannot delete bob's job, one at a time or all at once", func(ctx SpecContext) {
		Expect(deleteJob(ctx, as(alice), ns, "bob-train")).To(forbidden(ownerPolicy,
			`CvlabJob `+ns+`/bob-train belongs to "bob", not to you ("alice"): only its owner or a queue admin (groups cvlab-admins) can delete it`))
		// cvlab-user has no deletecollection; a role that has it is still held by the policy.
		Expect(as(alice).DeleteAllOf(ctx, &cvlabv1alpha1.CvlabJob{}, client.InNamespace(ns))).To(
			WithTransform(apierrors.IsForbidden, BeTrue()))
		create(ctx, admin, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bulk-delete"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{cvlabv1alpha1.GroupVersion.Group}, Resources: []string{"cvlabjobs"}, Verbs: []string{"deletecollection", "list"}}}})
		create(ctx, admin, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bulk-delete"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "bulk-delete"},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: alice.username}}})
		Eventually(func() error {
			return as(alice).DeleteAllOf(ctx, &cvlabv1alpha1.CvlabJob{}, client.InNamespace(ns))
		}).Should(forbidden(ownerPolicy, `bob-train belongs to "bob"`, "can delete it"))
		Expect(userOf(ctx, ns, "bob-train")).To(Equal("bob"), "bob's job is still there")
	})

	It("alice changes, suspends and deletes her own job", func(ctx SpecContext) {
		Expect(patchSpec(ctx, as(alice), ns, "alice-train", `{"priority":7}`)).To(Succeed())
		Expect(patchSpec(ctx, as(alice), ns, "alice-train", `{"suspend":true}`)).To(Succeed())
		Expect(patchSpec(ctx, as(alice), ns, "alice-train", `{"suspend":false}`)).To(Succeed())
		Expect(deleteJob(ctx, as(alice), ns, "alice-train")).To(Succeed())
	})

	It("a queue admin submits for bob, changes, suspends and deletes bob's jobs", func(ctx SpecContext) {
		Expect(as(carol).Create(ctx, manifest(ns, "for-bob", "bob", 0))).To(Succeed())
		Expect(userOf(ctx, ns, "for-bob")).To(Equal("bob"))
		Expect(as(carol).Create(ctx, manifest(ns, "carol-own", "", 0))).To(Succeed())
		Expect(userOf(ctx, ns, "carol-own")).To(Equal("carol"), "an admin's omitted spec.user is the admin's")
		Expect(patchSpec(ctx, as(carol), ns, "bob-train", `{"priority":-5}`)).To(Succeed())
		Expect(patchSpec(ctx, as(carol), ns, "bob-train", `{"suspend":true}`)).To(Succeed())
		Expect(deleteJob(ctx, as(carol), ns, "bob-train")).To(Succeed())
		Expect(as(carol).DeleteAllOf(ctx, &cvlabv1alpha1.CvlabJob{}, client.InNamespace(ns))).To(Succeed())
	})

	It("lets the control plane delete anyone's jobs (namespace deletion, garbage collection)", func(ctx SpecContext) {
		nsController := person{"system:serviceaccount:kube-system:namespace-controller",
			[]string{"system:serviceaccounts", "system:serviceaccounts:kube-system"}}
		Expect(deleteJob(ctx, as(nsController), ns, "bob-train")).To(Succeed())
	})
})

var _ = Describe("a job whose pod would be invalid", func() {
	DescribeTable("is refused at create time, naming the field",
		func(ctx SpecContext, mutate func(*cvlabv1alpha1.CvlabJob), want string) {
			ns := newNamespace(ctx, false)
			j := job(ns, "bad", "", 1)
			mutate(j)
			Expect(as(alice).Create(ctx, j)).To(invalid(specPolicy, want))
		},
		Entry("a label key", func(j *cvlabv1alpha1.CvlabJob) { j.Spec.PodLabels = map[string]string{"team name": "x"} },
			`spec.podLabels: "team name" is not a label key`),
		Entry("a label value", func(j *cvlabv1alpha1.CvlabJob) { j.Spec.PodLabels = map[string]string{"team": "vision lab"} },
			`spec.podLabels["team"]: "vision lab" is not a label value`),
		Entry("an annotation key", func(j *cvlabv1alpha1.CvlabJob) { j.Spec.PodAnnotations = map[string]string{"note!": "x"} },
			`spec.podAnnotations: "note!" is not an annotation key`),
		Entry("an environment variable name", func(j *cvlabv1alpha1.CvlabJob) { j.Spec.Env = []corev1.EnvVar{{Name: "A=B"}} },
			`spec.env: "A=B" is not an environment variable name`),
		Entry("a secret key", func(j *cvlabv1alpha1.CvlabJob) {
			j.Spec.Env = []corev1.EnvVar{{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "wandb"}, Key: "api/key"}}}}
		}, `spec.env["TOKEN"].valueFrom: configMapKeyRef and secretKeyRef need a name and a key`),
		Entry("a port name", func(j *cvlabv1alpha1.CvlabJob) {
			j.Spec.Ports = []corev1.ContainerPort{{Name: "Jupyter_Lab", ContainerPort: 8888}}
		}, `spec.ports: name "Jupyter_Lab" is not a port name`),
		Entry("requests over limits", func(j *cvlabv1alpha1.CvlabJob) {
			j.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("16Gi")}
			j.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("8Gi")}
		}, `spec.resources.requests.memory: 16Gi is more than the limit 8Gi`),
		Entry("a timeout beyond activeDeadlineSeconds", func(j *cvlabv1alpha1.CvlabJob) {
			j.Spec.Timeout = &metav1.Duration{Duration: 600000 * time.Hour}
		}, `spec.timeout: 600000h0m0s is more than 596523h`),
		Entry("a name too long for its pods", func(j *cvlabv1alpha1.CvlabJob) { j.Name = strings.Repeat("a", 250) + ".bc" },
			`metadata.name: at most 242 characters (it has 253)`),
	)

	It("is refused before a huge quantity is compared (seconds of API server CPU each)", func(ctx SpecContext) {
		m := manifest(newNamespace(ctx, false), "huge", "", 0)
		Expect(unstructured.SetNestedField(m.Object, "1e999999999", "spec", "resources", "requests", "cpu")).To(Succeed())
		Expect(as(alice).Create(ctx, m)).To(invalid(specPolicy,
			`spec.resources.requests.cpu: at most 32 characters, with an exponent of at most 2 digits`))
	})
})
