package scheduling_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

// scrape reads the manager's /metrics endpoint as Prometheus would.
func scrape(addr string) map[string]*dto.MetricFamily {
	resp, err := http.Get("http://" + addr + "/metrics")
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	Expect(resp.StatusCode).To(Equal(http.StatusOK))
	body, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	return families
}

// value returns the value of the sample of a family whose labels include want.
func value(f map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	fam, ok := f[name]
	if !ok {
		return 0
	}
	for _, m := range fam.GetMetric() {
		match := true
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

var _ = Describe("Prometheus metrics", func() {
	It("reports capacity, use per user, phases, waiting jobs, admissions, waits, preemptions and decision time", func() {
		ctx := context.Background()
		ns := fw.NewNamespace(ctx)
		DeferCleanup(func() { fw.Cleanup(ctx, ns) })
		node := ns + "-n"
		fw.CreateGPUNode(ctx, node, 2)

		l, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		addr := l.Addr().String()
		Expect(l.Close()).To(Succeed())
		stop := fw.StartManager(controllers.Options{GPUCapacity: -1, MaxHeadWait: time.Hour}, addr)
		DeferCleanup(stop)
		Eventually(func() error { _, err := http.Get("http://" + addr + "/metrics"); return err }, timeout).Should(Succeed())
		before := scrape(addr)

		get := fw.Get
		for i := 1; i <= 2; i++ {
			Expect(fw.Client.Create(ctx, framework.Job(ns, fmt.Sprintf("bob-%d", i), "bob", 1))).To(Succeed())
		}
		for i := 1; i <= 2; i++ {
			name := fmt.Sprintf("bob-%d", i)
			Eventually(func() string { j, _ := get(ctx, ns, name)(); return j.Status.PodName }, timeout).ShouldNot(BeEmpty())
			j, _ := get(ctx, ns, name)()
			fw.BindPod(ctx, ns, j.Status.PodName, node)
			fw.SetPodPhase(ctx, ns, j.Status.PodName, corev1.PodRunning, "")
			Eventually(func() cvlabv1alpha1.JobPhase { j, _ := get(ctx, ns, name)(); return j.Status.Phase }, timeout).Should(Equal(cvlabv1alpha1.PhaseRunning))
		}
		Expect(fw.Client.Create(ctx, framework.Job(ns, "carol-1", "carol", 1))).To(Succeed()) // evicts bob-2
		Expect(fw.Client.Create(ctx, framework.Job(ns, "bob-3", "bob", 1))).To(Succeed())     // waits
		Eventually(func() cvlabv1alpha1.JobPhase { j, _ := get(ctx, ns, "bob-2")(); return j.Status.Phase }, timeout).Should(Equal(cvlabv1alpha1.PhaseQueued))
		fw.FinishDeletion(ctx, ns, "bob-2-1")
		Eventually(func() cvlabv1alpha1.JobPhase { j, _ := get(ctx, ns, "carol-1")(); return j.Status.Phase }, timeout).Should(Equal(cvlabv1alpha1.PhaseAdmitted))

		Eventually(func(g Gomega) {
			after := scrape(addr)
			g.Expect(value(after, "cvlab_gpu_capacity", nil)).To(Equal(2.0))
			g.Expect(value(after, "cvlab_gpus_in_use", map[string]string{"user": "bob"})).To(Equal(1.0))
			g.Expect(value(after, "cvlab_gpus_in_use", map[string]string{"user": "carol"})).To(Equal(1.0))
			g.Expect(value(after, "cvlab_jobs", map[string]string{"phase": "Running"})).To(Equal(1.0))
			g.Expect(value(after, "cvlab_jobs", map[string]string{"phase": "Admitted"})).To(Equal(1.0))
			g.Expect(value(after, "cvlab_jobs", map[string]string{"phase": "Queued"})).To(Equal(2.0))
			g.Expect(value(after, "cvlab_queue_waiting_jobs", nil)).To(Equal(2.0))
			g.Expect(value(after, "cvlab_admissions_total", nil) - value(before, "cvlab_admissions_total", nil)).To(Equal(3.0))
			g.Expect(value(after, "cvlab_preemptions_total", map[string]string{"policy": "FirstGPU"}) -
				value(before, "cvlab_preemptions_total", map[string]string{"policy": "FirstGPU"})).To(Equal(1.0))
			g.Expect(value(after, "cvlab_job_wait_seconds", nil) - value(before, "cvlab_job_wait_seconds", nil)).To(Equal(2.0))
			g.Expect(value(after, "cvlab_decision_duration_seconds", nil)).To(BeNumerically(">", value(before, "cvlab_decision_duration_seconds", nil)))
			// bob-1 and bob-2 admitted and started, bob-2 evicted, carol-1 admitted: phase writes.
			g.Expect(value(after, "cvlab_status_writes_total", map[string]string{"kind": "phase"}) -
				value(before, "cvlab_status_writes_total", map[string]string{"kind": "phase"})).To(BeNumerically(">=", 3))
			for _, name := range []string{"cvlab_gpu_capacity", "cvlab_jobs", "cvlab_job_wait_seconds", "cvlab_decision_duration_seconds", "cvlab_status_writes_total"} {
				g.Expect(after[name].GetHelp()).NotTo(BeEmpty(), name)
			}
		}, timeout).Should(Succeed())
	})
})
