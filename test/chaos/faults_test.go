package chaos_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// TestClusterFaults plays what the rest of the cluster does to the queue's pods: a person deletes
// one, a node is deleted (pod GC), a node goes NotReady (the taint manager evicts), the kubelet
// evicts under node pressure, a pod vanishes with its node without a trace; and a job stored
// invalid under an older CRD. The invariants are checked throughout.
func TestClusterFaults(t *testing.T) {
	e := newEnv(t, false)
	for _, n := range []string{"node-a", "node-b", "node-c"} {
		e.createNode(n, 2)
	}
	k := e.startKubelet(1)
	c := e.startChecker(checkerOptions{capacity: -1, policy: queue.PreemptFirstGPU})
	m := e.startManager("manager")
	defer func() {
		if m.crashed() {
			t.Errorf("the manager exited: %v\n%s", m.exit, m.logTail(30))
		}
		c.assertNone(t)
	}()

	figures := map[string]any{}

	t.Run("a pod deleted by a person fails its job as PodDeleted, once the pod is gone", func(t *testing.T) {
		e := e.with(t)
		p := e.runningJob("deleted-by-person")
		k.holdDeletion(namespace, p.Name) // it checkpoints for a while after SIGTERM
		if err := e.c.Delete(e.ctx, p); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			j, err := e.getJob("deleted-by-person")
			if err != nil {
				t.Fatal(err)
			}
			if controllers.IsFinished(&j.Status) {
				t.Errorf("the job is %s (%s) while its pod is still terminating", j.Status.Phase, j.Status.Message)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		k.releaseDeletion(namespace, p.Name)
		j := e.waitPhase("deleted-by-person", 20*time.Second, cvlabv1alpha1.PhaseFailed)
		if c := meta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionFinished); c == nil || c.Reason != cvlabv1alpha1.ReasonPodDeleted {
			t.Errorf("finished with %+v, want reason PodDeleted", c)
		}
	})

	t.Run("a node deleted: pod GC fails its pods, their jobs go back to the queue and run elsewhere", func(t *testing.T) {
		e := e.with(t)
		p := e.runningJob("on-deleted-node")
		node := p.Spec.NodeName
		if err := e.c.Delete(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
			t.Fatal(err)
		}
		// What the pod GC does with pods of a node that no longer exists.
		e.failPod(p, "", corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
			Reason: "DeletionByPodGC", Message: "PodGC: node no longer exists"})
		e.forceDelete(p)
		e.rerunsElsewhere("on-deleted-node", p, "its node was deleted", true)
		e.deleteJob("on-deleted-node")
		e.createNode(node, 2)
	})

	t.Run("a node NotReady: the taint manager's eviction sends its jobs back to the queue", func(t *testing.T) {
		e := e.with(t)
		p := e.runningJob("on-notready-node")
		node := p.Spec.NodeName
		e.setNodeReady(node, false)
		// What the taint manager does once the not-ready toleration ends: mark, then delete. The
		// node's kubelet is gone, so the pod stays terminating.
		e.addPodCondition(p, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
			Reason: "DeletionByTaintManager", Message: "Taint manager: deleting due to NoExecute taint"})
		if err := e.c.Delete(e.ctx, p); err != nil {
			t.Fatal(err)
		}
		e.rerunsElsewhere("on-notready-node", p, "its node went NotReady", true)
		e.setNodeReady(node, true) // the kubelet is back and finishes the deletion
		e.deleteJob("on-notready-node")
	})

	t.Run("a kubelet eviction under node pressure sends the job back to the queue", func(t *testing.T) {
		e := e.with(t)
		p := e.runningJob("evicted-by-kubelet")
		e.failPod(p, "Evicted", corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
			Reason: "TerminationByKubelet", Message: "The node was low on resource: memory."})
		e.rerunsElsewhere("evicted-by-kubelet", p, "the kubelet evicted it", false)
		e.deleteJob("evicted-by-kubelet")
	})

	t.Run("a pod that vanished with its node, without a trace, sends the job back to the queue", func(t *testing.T) {
		e := e.with(t)
		p := e.runningJob("vanished-with-node")
		node := p.Spec.NodeName
		if err := e.c.Delete(e.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
			t.Fatal(err)
		}
		e.forceDelete(p)
		e.rerunsElsewhere("vanished-with-node", p, "it vanished with its node", true)
		e.deleteJob("vanished-with-node")
		e.createNode(node, 2)
	})

	// The bad jobs are stored while no manager runs, and the real CRD is back before one starts:
	// as after an upgrade of the CRD over jobs stored by the old one.
	storeInvalid := func(e *env, name string, gpus any) {
		e.t.Helper()
		m.kill()
		restore := e.permissiveCRD()
		bad := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": cvlabv1alpha1.GroupVersion.String(), "kind": "CvlabJob",
			"metadata": map[string]any{"namespace": namespace, "name": name},
			"spec":     map[string]any{"user": "olga", "image": "img", "gpus": gpus},
		}}
		if err := e.c.Create(e.ctx, bad); err != nil {
			e.t.Fatal(err)
		}
		restore()
		m = e.startManager("manager")
	}

	t.Run("a job stored invalid under an older CRD says why, and the rest of the queue runs", func(t *testing.T) {
		e := e.with(t)
		storeInvalid(e, "negative-gpus", int64(-1))
		j := e.waitPhase("negative-gpus", 30*time.Second, cvlabv1alpha1.PhaseFailed)
		if c := meta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionFinished); c == nil || c.Reason != cvlabv1alpha1.ReasonInvalidSpec ||
			!strings.Contains(j.Status.Message, "spec.gpus is -1") {
			t.Errorf("the status does not say what is wrong: %q (%+v)", j.Status.Message, c)
		}
		var pods corev1.PodList
		if err := e.c.List(e.ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{controllers.LabelJob: "negative-gpus"}); err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) > 0 {
			t.Errorf("the invalid job got a pod: %s", pods.Items[0].Name)
		}
		e.create(job("after-invalid", "olga", 1, 200*time.Millisecond))
		e.waitPhase("after-invalid", 30*time.Second, cvlabv1alpha1.PhaseSucceeded)
		figures["invalidJobMessage"] = j.Status.Message
	})

	t.Run("a job that no longer decodes (a field of another type) does not stop the queue, and an event says why", func(t *testing.T) {
		e := e.with(t)
		storeInvalid(e, "gpus-as-text", "two") // the manager's first list includes it
		e.create(job("after-undecodable", "olga", 1, 200*time.Millisecond))
		e.waitPhase("after-undecodable", 60*time.Second, cvlabv1alpha1.PhaseSucceeded)
		// The API server refuses any write to that job (its CRD rules cannot evaluate it), so its
		// status stays empty: a Warning event says why.
		var note string
		e.eventually(30*time.Second, func() error {
			var events eventsv1.EventList
			if err := e.c.List(e.ctx, &events, client.InNamespace(namespace)); err != nil {
				return err
			}
			for _, ev := range events.Items {
				if ev.Regarding.Name == "gpus-as-text" && ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Note, "does not decode") {
					note = ev.Note
					return nil
				}
			}
			return fmt.Errorf("no Warning event on gpus-as-text yet")
		}, "the event of the undecodable job")
		figures["undecodableJobEvent"] = note
		var u unstructured.Unstructured
		u.SetGroupVersionKind(cvlabv1alpha1.GroupVersion.WithKind("CvlabJob"))
		u.SetNamespace(namespace)
		u.SetName("gpus-as-text")
		if err := e.c.Delete(e.ctx, &u); err != nil {
			t.Fatal(err)
		}
	})
	report(t, figures)
}

// runningJob creates a long job of its own user and waits until it runs.
func (e *env) runningJob(name string) *corev1.Pod {
	e.t.Helper()
	e.create(job(name, "u-"+name, 1, time.Hour))
	e.waitPhase(name, 30*time.Second, cvlabv1alpha1.PhaseRunning)
	return e.podOf(name, 10*time.Second)
}

// rerunsElsewhere waits until the job runs again with its next pod, on another node than the
// lost one, having gone back to the queue (never failed), with the disruption counted.
func (e *env) rerunsElsewhere(name string, first *corev1.Pod, why string, nodeLost bool) {
	e.t.Helper()
	var j *cvlabv1alpha1.CvlabJob
	e.eventually(30*time.Second, func() error {
		var err error
		if j, err = e.getJob(name); err != nil {
			return err
		}
		if j.Status.Phase == cvlabv1alpha1.PhaseFailed {
			return nil
		}
		if j.Status.PodName == first.Name || j.Status.Phase != cvlabv1alpha1.PhaseRunning {
			return fmt.Errorf("phase %s pod %s: %s", j.Status.Phase, j.Status.PodName, j.Status.Message)
		}
		return nil
	}, "job %s running again", name)
	if j.Status.Phase == cvlabv1alpha1.PhaseFailed {
		e.t.Fatalf("job %s failed after %s: %s", name, why, j.Status.Message)
	}
	p := e.podOf(name, 10*time.Second)
	if nodeLost && p.Spec.NodeName == first.Spec.NodeName {
		e.t.Errorf("job %s runs again on node %s, which was lost", name, p.Spec.NodeName)
	}
	cond := meta.FindStatusCondition(j.Status.Conditions, cvlabv1alpha1.ConditionDisrupted)
	if cond == nil || !strings.Contains(cond.Message, first.Name) {
		e.t.Fatalf("job %s: no Disrupted condition naming pod %s: %+v", name, first.Name, j.Status.Conditions)
	}
	if j.Status.Disruptions != 1 || j.Status.Preemptions != 0 {
		e.t.Errorf("job %s counts %d disruptions and %d preemptions, want 1 and 0", name, j.Status.Disruptions, j.Status.Preemptions)
	}
	e.t.Logf("%s: requeued and running again as %s on %s; Disrupted: %s", why, p.Name, p.Spec.NodeName, cond.Message)
}

func (e *env) deleteJob(name string) {
	e.t.Helper()
	if err := e.c.Delete(e.ctx, &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}); err != nil {
		e.t.Fatal(err)
	}
}

// failPod marks a pod Failed with a reason and a condition, as the kubelet or the pod GC do.
func (e *env) failPod(p *corev1.Pod, reason string, cond corev1.PodCondition) {
	e.t.Helper()
	e.eventually(10*time.Second, func() error {
		var cur corev1.Pod
		if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(p), &cur); err != nil {
			return err
		}
		cur.Status.Phase = corev1.PodFailed
		cur.Status.Reason = reason
		cur.Status.Message = cond.Message
		cond.LastTransitionTime = metav1.Now()
		cur.Status.Conditions = append(cur.Status.Conditions, cond)
		now := metav1.Now()
		cur.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: controllers.ContainerName, Image: cur.Spec.Containers[0].Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "Error", StartedAt: now, FinishedAt: now}}}}
		return e.c.Status().Update(e.ctx, &cur)
	}, "failing pod %s", p.Name)
}

// addPodCondition adds a condition to a pod's status.
func (e *env) addPodCondition(p *corev1.Pod, cond corev1.PodCondition) {
	e.t.Helper()
	e.eventually(10*time.Second, func() error {
		var cur corev1.Pod
		if err := e.c.Get(e.ctx, client.ObjectKeyFromObject(p), &cur); err != nil {
			return err
		}
		cond.LastTransitionTime = metav1.Now()
		cur.Status.Conditions = append(cur.Status.Conditions, cond)
		return e.c.Status().Update(e.ctx, &cur)
	}, "adding a condition to pod %s", p.Name)
}

func (e *env) forceDelete(p *corev1.Pod) {
	e.t.Helper()
	if err := e.c.Delete(e.ctx, p, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
		e.t.Fatal(err)
	}
}

// permissiveCRD replaces the CvlabJob CRD's schema by one that accepts anything, as an older
// version of the CRD might have; the returned function puts the real one back.
func (e *env) permissiveCRD() (restore func()) {
	e.t.Helper()
	name := "cvlabjobs." + cvlabv1alpha1.GroupVersion.Group
	var crd apiextensionsv1.CustomResourceDefinition
	if err := e.c.Get(e.ctx, types.NamespacedName{Name: name}, &crd); err != nil {
		e.t.Fatal(err)
	}
	saved := crd.Spec.DeepCopy()
	set := func(spec apiextensionsv1.CustomResourceDefinitionSpec) {
		e.eventually(10*time.Second, func() error {
			var cur apiextensionsv1.CustomResourceDefinition
			if err := e.c.Get(e.ctx, types.NamespacedName{Name: name}, &cur); err != nil {
				return err
			}
			cur.Spec = spec
			return e.c.Update(e.ctx, &cur)
		}, "updating the CRD")
	}
	loose := saved.DeepCopy()
	for i := range loose.Versions {
		loose.Versions[i].Schema = &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
			Type: "object", XPreserveUnknownFields: ptr.To(true),
		}}
	}
	set(*loose)
	// Wait until the API server serves the permissive schema: a dry-run create of an invalid job passes.
	e.eventually(20*time.Second, func() error {
		probe := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": cvlabv1alpha1.GroupVersion.String(), "kind": "CvlabJob",
			"metadata": map[string]any{"namespace": namespace, "name": "schema-probe"},
			"spec":     map[string]any{"user": "x", "image": "x", "gpus": int64(-1)},
		}}
		return e.c.Create(e.ctx, probe, client.DryRunAll)
	}, "the permissive CRD being served")
	return func() {
		set(*saved)
		e.eventually(20*time.Second, func() error {
			probe := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": cvlabv1alpha1.GroupVersion.String(), "kind": "CvlabJob",
				"metadata": map[string]any{"namespace": namespace, "name": "schema-probe"},
				"spec":     map[string]any{"user": "x", "image": "x", "gpus": int64(-1)},
			}}
			if err := e.c.Create(e.ctx, probe, client.DryRunAll); err == nil {
				return fmt.Errorf("the permissive schema is still served")
			}
			return nil
		}, "the real CRD being served again")
	}
}
