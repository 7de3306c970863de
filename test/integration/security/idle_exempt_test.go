package security_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

const idleExemptPolicy = "'cvlab-queue-job-idle-exempt'"

func patchAnnotation(ctx context.Context, c client.Client, ns, name, value string) error {
	v := `"` + value + `"`
	if value == "" {
		v = "null"
	}
	j := &cvlabv1alpha1.CvlabJob{}
	j.Namespace, j.Name = ns, name
	return c.Patch(ctx, j, client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"`+observe.AnnotationIdleExempt+`":`+v+`}}}`)))
}

var _ = Describe("the idle-exempt annotation", func() {
	var ns string
	BeforeEach(func(ctx SpecContext) {
		ns = newNamespace(ctx, false)
		Expect(as(alice).Create(ctx, manifest(ns, "alice-train", "", 0))).To(Succeed())
	})

	It("only a queue admin sets, changes or removes it", func(ctx SpecContext) {
		Eventually(func() error { return patchAnnotation(ctx, as(alice), ns, "alice-train", "true") }).Should(
			forbidden(idleExemptPolicy, "only a queue admin (groups cvlab-admins) may set, change or remove the annotation cvlab.epfl.ch/idle-exempt"))
		j := manifest(ns, "alice-exempt", "", 0)
		j.SetAnnotations(map[string]string{observe.AnnotationIdleExempt: "true"})
		Expect(as(alice).Create(ctx, j)).To(forbidden(idleExemptPolicy, "only a queue admin"))

		Expect(patchAnnotation(ctx, as(carol), ns, "alice-train", "true")).To(Succeed())
		// alice still edits her job, leaving the annotation alone; she cannot remove it.
		Expect(patchSpec(ctx, as(alice), ns, "alice-train", `{"priority":3}`)).To(Succeed())
		Expect(patchAnnotation(ctx, as(alice), ns, "alice-train", "")).To(forbidden(idleExemptPolicy, "only a queue admin"))
		Expect(patchAnnotation(ctx, as(carol), ns, "alice-train", "")).To(Succeed())
	})
})
