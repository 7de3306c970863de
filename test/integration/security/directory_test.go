package security_test

import (
	"context"
	"encoding/json"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

const (
	clusterUserPolicy = "'cvlab-queue-job-cluster-user'"
	directoryEditor   = "cvlab-queue-lab-directory-editor"
	aliceDirEntry     = "name=alice uid=123456 groupName=cvlab gid=11166"
	bobDirEntry       = "name=bob uid=123457 groupName=cvlab gid=11166"
)

var (
	aliceAccount = &cvlabv1alpha1.ClusterUser{Name: "alice", UID: 123456, GroupName: "cvlab", GID: 11166}
	bobAccount   = &cvlabv1alpha1.ClusterUser{Name: "bob", UID: 123457, GroupName: "cvlab", GID: 11166}
	newcomer     = person{"oidc:dave", []string{usersGroup}} // a lab member the directory does not list
)

// jobWithAccount is a CPU job (it starts at once) of user with clusterUser cu (nil: left out).
func jobWithAccount(ns, name, user string, cu *cvlabv1alpha1.ClusterUser) *cvlabv1alpha1.CvlabJob {
	j := job(ns, name, user, 0)
	j.Spec.ClusterUser = cu
	return j
}

func directoryData(ctx context.Context) map[string]string {
	GinkgoHelper()
	var cm corev1.ConfigMap
	Expect(admin.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: validation.DirectoryName}, &cm)).To(Succeed())
	return cm.Data
}

// editDirectory makes carol, a queue admin with the editor Role, replace the directory's data as
// `kubectl edit` does (an update). The spec then restores the shipped (empty) directory and waits
// until the policy no longer checks anyone, so that no other spec sees the change; the caller waits
// until the policy sees the new data (the API server's params informer takes a moment).
func editDirectory(ctx context.Context, data map[string]string) {
	GinkgoHelper()
	update := func(ctx context.Context, data map[string]string) {
		Eventually(func() error {
			var cm corev1.ConfigMap
			if err := as(carol).Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: validation.DirectoryName}, &cm); err != nil {
				return err
			}
			cm.Data = data
			return as(carol).Update(ctx, &cm)
		}).Should(Succeed())
	}
	update(ctx, data)
	DeferCleanup(func(ctx context.Context) {
		update(ctx, nil)
		ns := newNamespace(ctx, false)
		Eventually(func() error { // every edit of these specs lists alice
			return as(alice).Create(ctx, jobWithAccount(ns, "probe", "", bobAccount), client.DryRunAll)
		}).Should(Succeed())
	}, context.Background())
}

// firstPodOf waits for the operator to create the pod of the job's first admission.
func firstPodOf(ctx context.Context, ns, name string) *corev1.Pod {
	GinkgoHelper()
	var p corev1.Pod
	Eventually(func() error {
		return admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: name + "-1"}, &p)
	}).Should(Succeed())
	return &p
}

// podAccount is the account the pod's container acts as: the last definition of each CLUSTER_*
// variable, as the kubelet takes them.
func podAccount(p *corev1.Pod) map[string]string {
	env := map[string]string{}
	for _, e := range p.Spec.Containers[0].Env {
		if strings.HasPrefix(e.Name, "CLUSTER_") {
			env[e.Name] = e.Value
		}
	}
	return env
}

var aliceAccountEnv = map[string]string{"CLUSTER_USER": "alice", "CLUSTER_USER_ID": "123456", "CLUSTER_GROUP_NAME": "cvlab", "CLUSTER_GROUP_ID": "11166"}

// kubectlApply applies u as `kubectl apply` without --server-side does for a built-in kind: a
// strategic merge patch from the last-applied-configuration annotation (what was applied last
// time), the file (with that annotation set to itself) and the live object, computed with the
// library kubectl uses.
func kubectlApply(ctx context.Context, u *unstructured.Unstructured) {
	GinkgoHelper()
	file, err := json.Marshal(u.Object)
	Expect(err).NotTo(HaveOccurred())
	modified := u.DeepCopy()
	modified.SetAnnotations(map[string]string{corev1.LastAppliedConfigAnnotation: string(file)})
	modifiedJSON, err := json.Marshal(modified.Object)
	Expect(err).NotTo(HaveOccurred())
	var live corev1.ConfigMap
	Expect(admin.Get(ctx, client.ObjectKey{Namespace: u.GetNamespace(), Name: u.GetName()}, &live)).To(Succeed())
	current, err := json.Marshal(&live)
	Expect(err).NotTo(HaveOccurred())
	meta, err := strategicpatch.NewPatchMetaFromStruct(&corev1.ConfigMap{})
	Expect(err).NotTo(HaveOccurred())
	patch, err := strategicpatch.CreateThreeWayMergePatch([]byte(live.Annotations[corev1.LastAppliedConfigAnnotation]), modifiedJSON, current, meta, true)
	Expect(err).NotTo(HaveOccurred())
	Expect(admin.Patch(ctx, &live, client.RawPatch(types.StrategicMergePatchType, patch))).To(Succeed())
}

// runCvlab runs `kubectl cvlab ARGS` in-process as p with an empty config file (kubectlCvlab), and
// returns what it printed.
func runCvlab(p person, args ...string) (string, error) {
	return kubectlCvlab(context.Background(), p, args...)
}

var _ = Describe("the lab directory ties spec.clusterUser to the requester", Ordered, Serial, func() {
	var ns string
	BeforeAll(func(ctx SpecContext) {
		ns = newNamespace(ctx, false)
		// The queue admins maintain the directory, bound as docs/security.md says.
		binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: "cvlab-admins-lab-directory"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: directoryEditor},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: adminsGroup}}}
		create(ctx, admin, binding)
		DeferCleanup(func(ctx context.Context) { Expect(admin.Delete(ctx, binding)).To(Succeed()) }, context.Background())
	})

	It("is installed empty, readable by everyone, written by the admins it is granted to: nothing is checked yet", func(ctx SpecContext) {
		Expect(directoryData(ctx)).To(BeEmpty())
		Expect(as(alice).Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: validation.DirectoryName}, &corev1.ConfigMap{})).To(Succeed())
		Expect(can(ctx, as(alice), "update", "configmaps", operatorNS, validation.DirectoryName)).To(BeFalse())
		Expect(can(ctx, as(alice), "patch", "configmaps", operatorNS, validation.DirectoryName)).To(BeFalse())
		Expect(can(ctx, as(carol), "update", "configmaps", operatorNS, validation.DirectoryName)).To(BeTrue())
		Expect(can(ctx, as(carol), "get", "configmaps", operatorNS, validation.ParamsName)).To(BeFalse(), "the editor Role is for the directory only")
		operator := as(person{operatorUser, []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNS}})
		Expect(can(ctx, operator, "get", "configmaps", operatorNS, validation.DirectoryName)).To(BeTrue())
		Expect(can(ctx, operator, "update", "configmaps", operatorNS, validation.DirectoryName)).To(BeFalse())

		By("the policy type-checking against CvlabJobs and its ConfigMap params")
		dc, err := discovery.NewDiscoveryClientForConfig(adminCfg)
		Expect(err).NotTo(HaveOccurred())
		var p admissionregistrationv1.ValidatingAdmissionPolicy
		Expect(admin.Get(ctx, client.ObjectKey{Name: "cvlab-queue-job-cluster-user"}, &p)).To(Succeed())
		Expect((&validating.TypeChecker{SchemaResolver: &resolver.ClientDiscoveryResolver{Discovery: dc}, RestMapper: admin.RESTMapper()}).Check(&p)).To(BeEmpty())

		By("alice naming bob's account, as before the directory")
		Expect(as(alice).Create(ctx, jobWithAccount(ns, "as-bob-before", "", bobAccount))).To(Succeed())
	})

	It("refuses alice's job with bob's account, naming the rule, the difference and the way out", func(ctx SpecContext) {
		editDirectory(ctx, map[string]string{"alice": aliceDirEntry, "bob": bobDirEntry})
		Eventually(func() error {
			return as(alice).Create(ctx, jobWithAccount(ns, "as-bob", "", bobAccount))
		}).Should(forbidden(clusterUserPolicy,
			`spec.clusterUser does not match the lab directory entry for "alice": name "bob" (the directory says "alice"), uid 123457 (the directory says 123456); `+
				`you can only run as your own cluster account: leave clusterUser out and the queue fills it from the directory, `+
				`or ask a queue admin (cvlab-admin) to correct ConfigMap cvlab-queue-system/cvlab-queue-lab-directory`))

		By("nor through spec.env")
		j := jobWithAccount(ns, "env-as-bob", "", nil)
		j.Spec.Env = []corev1.EnvVar{{Name: "CLUSTER_USER_ID", Value: "123457"}}
		Expect(as(alice).Create(ctx, j)).To(forbidden(clusterUserPolicy,
			`spec.env sets CLUSTER_USER_ID, the variables of spec.clusterUser, and the lab directory has an entry for "alice": leave them out`))

		By("her own account is accepted, and her pod acts as it")
		Expect(as(alice).Create(ctx, jobWithAccount(ns, "as-alice", "", aliceAccount))).To(Succeed())
		Expect(podAccount(firstPodOf(ctx, ns, "as-alice"))).To(Equal(aliceAccountEnv))

		By("a queue admin may still name any account (submitting for bob, fixing a mistake)")
		Expect(as(carol).Create(ctx, jobWithAccount(ns, "carol-for-bob", "bob", aliceAccount))).To(Succeed())
	})

	It("fills an omitted clusterUser from the directory when the pod is created, leaving the spec as written", func(ctx SpecContext) {
		editDirectory(ctx, map[string]string{"alice": aliceDirEntry})
		Eventually(func() error {
			return as(alice).Create(ctx, jobWithAccount(ns, "probe", "", bobAccount), client.DryRunAll)
		}).Should(forbidden(clusterUserPolicy))

		By("alice submitting with kubectl cvlab, without --cluster-user")
		out, err := runCvlab(alice, "submit", "omitted", "-n", ns, "--user", "alice", "--image", "lab-base:cpu", "--", "sleep", "1")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring(`cvlabjob "omitted" submitted to namespace "` + ns + `": alice, 0 GPUs.`))
		Expect(out).To(ContainSubstring("Files: as alice (uid 123456), group cvlab (gid 11166), alice's entry in the lab directory (ConfigMap cvlab-queue-system/cvlab-queue-lab-directory)."))

		Expect(podAccount(firstPodOf(ctx, ns, "omitted"))).To(Equal(aliceAccountEnv))
		var j cvlabv1alpha1.CvlabJob
		Expect(admin.Get(ctx, types.NamespacedName{Namespace: ns, Name: "omitted"}, &j)).To(Succeed())
		Expect(j.Spec.ClusterUser).To(BeNil(), "the spec stays as written (GitOps sees no drift)")

		By("a user without an entry keeps today's behaviour: no account, and the CLI says why")
		out, err = runCvlab(newcomer, "submit", "dave-omitted", "-n", ns, "--user", "dave", "--image", "lab-base:cpu")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("Files: as the image's default user: the lab directory (ConfigMap cvlab-queue-system/cvlab-queue-lab-directory) has no entry for dave"))
		Expect(podAccount(firstPodOf(ctx, ns, "dave-omitted"))).To(BeEmpty())
		Expect(as(newcomer).Create(ctx, jobWithAccount(ns, "dave-as-bob", "", bobAccount))).To(Succeed(), "bob has no entry now: nothing to check")
		Expect(as(newcomer).Create(ctx, jobWithAccount(ns, "dave-as-alice", "", aliceAccount))).To(forbidden(clusterUserPolicy,
			`spec.clusterUser (name "alice", uid 123456) is the account of alice in the lab directory, which has no entry for "dave": `+
				`you cannot run as someone else; ask a queue admin (cvlab-admin) to add your entry to ConfigMap cvlab-queue-system/cvlab-queue-lab-directory, `+
				`or leave clusterUser out`))
	})

	It(`with enforce: "true", refuses a user without an entry and says how to get one`, func(ctx SpecContext) {
		editDirectory(ctx, map[string]string{"alice": aliceDirEntry, "enforce": "true"})
		Eventually(func() error {
			return as(newcomer).Create(ctx, jobWithAccount(ns, "dave-enforced", "", nil))
		}).Should(forbidden(clusterUserPolicy, `no lab directory entry for dave; ask an admin to add you (ConfigMap cvlab-queue-system/cvlab-queue-lab-directory has enforce: "true"`))
		Expect(as(alice).Create(ctx, jobWithAccount(ns, "alice-enforced", "", nil))).To(Succeed())
		Expect(as(carol).Create(ctx, jobWithAccount(ns, "carol-for-dave", "dave", nil))).To(Succeed(), "admins are exempt")
	})

	It("keeps its entries when config/default is applied again, server-side and client-side", func(ctx SpecContext) {
		data := map[string]string{"alice": aliceDirEntry, "enforce": "true"}
		editDirectory(ctx, data)
		shipped := installedObject("ConfigMap", validation.DirectoryName)

		By("kubectl apply --server-side (field manager kubectl, forcing conflicts as GitOps tools do)")
		applyObject(ctx, shipped, "kubectl")
		Expect(directoryData(ctx)).To(Equal(data))

		By("kubectl apply (client-side, its last-applied-configuration annotation), then an edit, then apply again")
		kubectlApply(ctx, shipped)
		Expect(directoryData(ctx)).To(Equal(data))
		data["bob"] = bobDirEntry
		editDirectory(ctx, data)
		kubectlApply(ctx, shipped)
		Expect(directoryData(ctx)).To(Equal(data))
	})
})
