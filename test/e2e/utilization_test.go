//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

const annotationUtilization = "cvlab.epfl.ch/simulated-utilization"

// The local cluster's fake dcgm-exporter (cmd/fake-dcgm-exporter) serves, for each pod holding a
// fake GPU, what its annotation cvlab.epfl.ch/simulated-utilization says; the operator reads it
// through --dcgm-exporter-url and writes status.gpuUtilization and status.idleSince.
var _ = Describe("GPU utilisation from the fake dcgm-exporter", Ordered, func() {
	var ns string

	BeforeAll(func(ctx SpecContext) {
		ns = newNamespace(ctx, "e2e-util")
		idle := job(ns, "idle", "ursula", 1, "")
		idle.Spec.PodAnnotations[annotationUtilization] = "0"
		busy := job(ns, "busy", "victor", 1, "")
		busy.Spec.PodAnnotations[annotationUtilization] = "80"
		create(ctx, idle)
		create(ctx, busy)
		runningPod(ctx, ns, "idle")
		runningPod(ctx, ns, "busy")
		DeferCleanup(func(ctx SpecContext) {
			Expect(client.IgnoreNotFound(k8s.DeleteAllOf(ctx, &cvlabv1alpha1.CvlabJob{}, client.InNamespace(ns)))).To(Succeed())
			waitNoPods(ctx, ns)
		})
	})

	It("serves dcgm-exporter's series for the jobs' pods, as their annotation says", func(ctx SpecContext) {
		Eventually(func(g Gomega) {
			util := scrapeGPUUtil(ctx, g)
			g.Expect(util).To(HaveKeyWithValue(ns+"/idle-1", 0.0))
			g.Expect(util).To(HaveKeyWithValue(ns+"/busy-1", 80.0))
		}).WithContext(ctx).WithTimeout(15 * time.Second).Should(Succeed())
	})

	It("writes the jobs' utilisation, and idleSince for the idle one", func(ctx SpecContext) {
		// The local cluster's operator measures every 15 s (--utilization-interval=15s).
		Eventually(get(ctx, ns, "idle")).WithTimeout(90 * time.Second).WithPolling(time.Second).Should(And(
			HaveField("Status.GPUUtilization", HaveValue(HaveField("Percent", BeEquivalentTo(0)))),
			HaveField("Status.IdleSince", Not(BeNil())),
		))
		Eventually(get(ctx, ns, "busy")).WithTimeout(90 * time.Second).WithPolling(time.Second).Should(And(
			HaveField("Status.GPUUtilization", HaveValue(HaveField("Percent", BeEquivalentTo(80)))),
			HaveField("Status.IdleSince", BeNil()),
		))
		out, err := kubectl("get", "cvlabjobs", "-n", ns, "-o", "wide")
		Expect(err).NotTo(HaveOccurred())
		Expect(row(out, "busy")).To(ContainElement(ContainSubstring("80")), out)
	})
})

// scrapeGPUUtil reads the fake dcgm-exporter's DCGM_FI_DEV_GPU_UTIL, parsed with expfmt (as the
// operator does), keyed by "namespace/pod".
func scrapeGPUUtil(ctx context.Context, g Gomega) map[string]float64 {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fakeDCGM, nil)
	g.Expect(err).NotTo(HaveOccurred())
	resp, err := http.DefaultClient.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	f := families["DCGM_FI_DEV_GPU_UTIL"]
	g.Expect(f).NotTo(BeNil(), "DCGM_FI_DEV_GPU_UTIL served")
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		if l["pod"] != "" {
			out[fmt.Sprintf("%s/%s", l["namespace"], l["pod"])] = m.GetGauge().GetValue()
		}
	}
	return out
}
