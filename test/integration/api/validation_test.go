package api_test

import (
	"context"
	"encoding/json"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// apply creates a CvlabJob from YAML the way `kubectl apply` sends it: strict field validation.
func apply(ctx context.Context, ns, doc string) error {
	u := &unstructured.Unstructured{}
	Expect(yaml.Unmarshal([]byte(doc), &u.Object)).To(Succeed())
	u.SetNamespace(ns)
	return fw.Client.Create(ctx, u, client.FieldValidation("Strict"))
}

const valid = `
apiVersion: cvlab.epfl.ch/v1alpha1
kind: CvlabJob
metadata: {name: ok}
spec:
  user: alice
  image: lab-base:cpu
`

var _ = Describe("CvlabJob validation at apply time", func() {
	const ns = "default"
	ctx := context.Background()

	It("accepts a minimal job and defaults priority and gpus to 0", func() {
		Expect(apply(ctx, ns, valid)).To(Succeed())
		var j cvlabv1alpha1.CvlabJob
		Expect(fw.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "ok"}, &j)).To(Succeed())
		Expect(j.Spec.Priority).To(BeZero())
		Expect(j.Spec.GPUs).To(BeZero())
		Expect(fw.Client.Delete(ctx, &j)).To(Succeed())
	})

	DescribeTable("rejects bad input with a message that names the field",
		func(spec string, wantField, wantMsg string) {
			doc := "apiVersion: cvlab.epfl.ch/v1alpha1\nkind: CvlabJob\nmetadata: {name: bad}\nspec:\n" + spec
			err := apply(ctx, ns, doc)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(wantField))
			Expect(err.Error()).To(ContainSubstring(wantMsg))
		},
		Entry("empty image", "  user: alice\n  image: \"\"\n", "spec.image", "at least 1"),
		Entry("missing image", "  user: alice\n", "spec.image", "Required value"),
		Entry("missing user", "  image: x\n", "spec.user", "Required value"),
		Entry("user that is no label value", "  user: \"-alice\"\n  image: x\n", "spec.user", "should match"),
		Entry("negative gpus", "  user: alice\n  image: x\n  gpus: -1\n", "spec.gpus", "greater than or equal to 0"),
		Entry("priority above range", "  user: alice\n  image: x\n  priority: 1001\n", "spec.priority", "less than or equal to 1000"),
		Entry("priority below range", "  user: alice\n  image: x\n  priority: -1001\n", "spec.priority", "greater than or equal to -1000"),
		Entry("duplicate mountPath", "  user: alice\n  image: x\n  cvlabdata:\n  - {claimName: pv-cvlabdata1, mountPath: /data}\n  - {claimName: pv-cvlabdata2, mountPath: /data}\n",
			"spec.cvlabdata[1]", "Duplicate value"),
		Entry("relative mountPath", "  user: alice\n  image: x\n  cvlabdata:\n  - {claimName: pv-cvlabdata1, mountPath: data}\n", "spec.cvlabdata[0].mountPath", "should match"),
		Entry("port out of range", "  user: alice\n  image: x\n  ports:\n  - {containerPort: 70000}\n", "spec.ports", "containerPort must be between 1 and 65535"),
		Entry("port zero", "  user: alice\n  image: x\n  ports:\n  - {containerPort: 0}\n", "spec.ports", "containerPort must be between 1 and 65535"),
		Entry("unknown field", "  user: alice\n  image: x\n  gpu: 2\n", "spec.gpu", "unknown field"),
		Entry("bad timeout", "  user: alice\n  image: x\n  timeout: 12 hours\n", "spec.timeout", "should match"),
		Entry("GPUs asked in resources", "  user: alice\n  image: x\n  resources:\n    limits: {nvidia.com/gpu: 1}\n", "spec.resources", "ask for GPUs with spec.gpus"),
		Entry("reserved pod label", "  user: alice\n  image: x\n  podLabels: {user: bob}\n", "spec.podLabels", "the operator sets them"),
		Entry("unknown notification kind", "  user: alice\n  image: x\n  notify: [Failed, Done]\n", "spec.notify[1]", "supported values"),
		Entry("None with other kinds", "  user: alice\n  image: x\n  notify: [None, Failed]\n", "spec.notify", "None means no message and cannot be combined"),
		Entry("a kind twice", "  user: alice\n  image: x\n  notify: [Failed, Failed]\n", "spec.notify[1]", "Duplicate value"),
	)

	It("keeps the spec immutable except priority, suspend and notify", func() {
		j := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "immutable"},
			Spec: cvlabv1alpha1.CvlabJobSpec{User: "alice", Image: "a", GPUs: 1}}
		Expect(fw.Client.Create(ctx, j)).To(Succeed())
		DeferCleanup(func() { Expect(fw.Client.Delete(ctx, j)).To(Succeed()) })

		patch := func(p string) error {
			return fw.Client.Patch(ctx, j.DeepCopy(), client.RawPatch("application/merge-patch+json", []byte(p)))
		}
		Expect(patch(`{"spec":{"priority":5,"suspend":true}}`)).To(Succeed())
		// notify decides who is told, never what the queue does: changed at any time, and removed.
		Expect(patch(`{"spec":{"notify":["Failed","Succeeded"]}}`)).To(Succeed())
		Expect(patch(`{"spec":{"notify":["None"]}}`)).To(Succeed())
		Expect(patch(`{"spec":{"notify":null}}`)).To(Succeed())
		err := patch(`{"spec":{"image":"b"}}`)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("image is immutable"))
		err = patch(`{"spec":{"gpus":4}}`)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("gpus is immutable"))
		err = patch(`{"spec":{"command":["sh"]}}`)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("spec is immutable after creation except priority, suspend and notify"))
	})

	It("serves the kubectl get columns, and -o wide adds rank, pod and message", func() {
		j := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "columns"},
			Spec: cvlabv1alpha1.CvlabJobSpec{User: "alice", Image: "a", GPUs: 2, Priority: 3}}
		Expect(fw.Client.Create(ctx, j)).To(Succeed())
		DeferCleanup(func() { Expect(fw.Client.Delete(ctx, j)).To(Succeed()) })

		// Ask for a Table, as kubectl get does.
		cs, err := kubernetes.NewForConfig(fw.Config)
		Expect(err).NotTo(HaveOccurred())
		raw, err := cs.RESTClient().Get().AbsPath("/apis/cvlab.epfl.ch/v1alpha1/namespaces", ns, "cvlabjobs", "columns").
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
		Expect(err).NotTo(HaveOccurred())
		var table metav1.Table
		Expect(json.Unmarshal(raw, &table)).To(Succeed())
		var names, wide []string
		for _, c := range table.ColumnDefinitions {
			if c.Priority == 0 {
				names = append(names, c.Name)
			} else {
				wide = append(wide, c.Name)
			}
		}
		Expect(names).To(Equal([]string{"Name", "User", "GPUs", "Priority", "Phase", "Position", "GPU#", "Age"}))
		Expect(wide).To(Equal([]string{"Util", "Rank", "Pod", "Message"}))
		Expect(table.Rows).To(HaveLen(1))
		Expect(table.Rows[0].Cells[:4]).To(Equal([]interface{}{"columns", "alice", float64(2), float64(3)}))
		util := len(names) // the first wide column
		Expect(table.Rows[0].Cells[util]).To(BeNil(), "an unmeasured job's Util is empty, never 0")

		By("showing the measured utilisation in the Util column (kubectl get cvj -o wide)")
		j.Status.Phase = cvlabv1alpha1.PhaseRunning
		j.Status.GPUUtilization = &cvlabv1alpha1.GPUUtilization{Percent: 87, MemoryUsedMiB: 1024,
			Window: metav1.Duration{Duration: time.Minute}, MeasuredAt: metav1.Now()}
		Expect(fw.Client.Status().Update(ctx, j)).To(Succeed())
		raw, err = cs.RESTClient().Get().AbsPath("/apis/cvlab.epfl.ch/v1alpha1/namespaces", ns, "cvlabjobs", "columns").
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
		Expect(err).NotTo(HaveOccurred())
		table = metav1.Table{}
		Expect(json.Unmarshal(raw, &table)).To(Succeed())
		Expect(table.Rows[0].Cells[util]).To(Equal(float64(87)))
	})
})
