package security_test

import (
	"context"
	"net/http"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

func restartDefaultManager(ctx context.Context) {
	mgr.stop()
	mgr = startManager()
	Eventually(func(g Gomega) {
		var cm corev1.ConfigMap
		g.Expect(admin.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: validation.ParamsName}, &cm)).To(Succeed())
		g.Expect(cm.Data).To(HaveKeyWithValue(validation.KeyAdminGroups, adminsGroup))
	}).Should(Succeed())
}

var _ = Describe("the manager's --admin-groups", Serial, func() {
	var ns string
	BeforeEach(func(ctx SpecContext) { ns = newNamespace(ctx, true) })

	params := func(ctx context.Context) *corev1.ConfigMap {
		var cm corev1.ConfigMap
		Expect(admin.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: validation.ParamsName}, &cm)).To(Succeed())
		return &cm
	}

	It("is written into the policies' params, owned by the manager alone, and survives re-applying config/policies", func(ctx SpecContext) {
		cm := params(ctx)
		Expect(cm.Data).To(HaveKeyWithValue(validation.KeyAdminGroups, "cvlab-admins"))
		var owners []string
		for _, f := range cm.ManagedFields {
			if f.Manager == validation.FieldManager {
				Expect(string(f.FieldsV1.Raw)).To(Equal(`{"f:data":{"f:adminGroups":{}}}`), "the manager owns adminGroups only")
			} else {
				Expect(string(f.FieldsV1.Raw)).NotTo(ContainSubstring("adminGroups"), "%s owns adminGroups", f.Manager)
			}
			owners = append(owners, f.Manager)
		}
		Expect(owners).To(ContainElements("kubectl", validation.FieldManager))

		applyObject(ctx, installedObject("ConfigMap", validation.ParamsName), "kubectl")
		Expect(params(ctx).Data).To(HaveKeyWithValue(validation.KeyAdminGroups, "cvlab-admins"))
	})

	It("moves the admin rights when the manager restarts with other groups", func(ctx SpecContext) {
		frank := person{"oidc:frank", []string{usersGroup, "lab-heads"}}
		grantUser(ctx, ns, workloadsRole)
		mgr.stop()
		mgr = startManager("--admin-groups=lab-heads, it-staff")
		DeferCleanup(restartDefaultManager)
		Eventually(func() map[string]string { return params(ctx).Data }).Should(HaveKeyWithValue(validation.KeyAdminGroups, "lab-heads,it-staff"))

		// frank (lab-heads) is now an admin; carol (cvlab-admins) no longer is.
		Eventually(func() error { return as(frank).Create(ctx, job(ns, "for-bob", "bob", 1), client.DryRunAll) }).Should(Succeed())
		Eventually(func() error {
			return as(carol).Create(ctx, job(ns, "for-bob", "bob", 1), client.DryRunAll)
		}).Should(forbidden(ownerPolicy, `you can only submit jobs as yourself`, "ask a queue admin (groups lab-heads, it-staff)"))
		Expect(as(frank).Create(ctx, gpuPod(ns, "frank-debug", 1), client.DryRunAll)).To(Succeed())
		Expect(as(carol).Create(ctx, gpuPod(ns, "carol-debug", 1), client.DryRunAll)).To(forbidden(podsPolicy))
	})

	It("with an empty value, makes nobody an admin", func(ctx SpecContext) {
		mgr.stop()
		mgr = startManager("--admin-groups=")
		DeferCleanup(restartDefaultManager)
		Eventually(func() map[string]string { return params(ctx).Data }).Should(HaveKeyWithValue(validation.KeyAdminGroups, ""))
		Eventually(func() error {
			return as(carol).Create(ctx, job(ns, "for-bob", "bob", 1), client.DryRunAll)
		}).Should(forbidden(ownerPolicy, "ask a queue admin (no admin group is configured)"))
	})
})

var _ = Describe("the manager's metrics with --metrics-secure", func() {
	It("answer only to a token allowed to GET /metrics", func(ctx SpecContext) {
		ns := newNamespace(ctx, false)
		cs, err := kubernetes.NewForConfig(adminCfg)
		Expect(err).NotTo(HaveOccurred())
		token := func(sa string) string {
			create(ctx, admin, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})
			tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
				Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())
			return tr.Status.Token
		}
		prometheus, stranger := token("prometheus"), token("stranger")
		create(ctx, admin, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "prometheus-" + ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: readerRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "prometheus"}},
		})

		Eventually(func() (int, error) { code, _, err := mgr.metricsGet(""); return code, err }).Should(Equal(http.StatusUnauthorized))
		// controller-runtime's filter answers 500 "Authentication failed" when the TokenReview says no.
		Eventually(func() (string, error) { _, body, err := mgr.metricsGet("not-a-token"); return body, err }).Should(
			HavePrefix("Authentication failed"))
		Eventually(func() (int, error) { code, _, err := mgr.metricsGet(stranger); return code, err }).Should(Equal(http.StatusForbidden))
		Eventually(func(g Gomega) {
			code, body, err := mgr.metricsGet(prometheus)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(code).To(Equal(http.StatusOK))
			g.Expect(body).To(ContainSubstring("# TYPE cvlab_admissions_total counter"))
		}).Should(Succeed())
	})
})
