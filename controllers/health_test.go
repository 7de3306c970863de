package controllers

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	lua "github.com/yuin/gopher-lua"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// gitopsDoc documents the GitOps health of a CvlabJob; its Argo CD health check is the one tested.
const gitopsDoc = "../docs/gitops.md"

// argoHealthKey is the argocd-cm key of a CvlabJob's health check:
// resource.customizations.health.<group>_<kind>.
var argoHealthKey = "resource.customizations.health." + cvlabv1alpha1.GroupVersion.Group + "_CvlabJob"

// TestHealth computes a CvlabJob's health in every phase the way Flux (kstatus) and Argo CD (the
// Lua health check of docs/gitops.md, run in gopher-lua as Argo CD does) compute it, from statuses
// built by lifecycle.DesiredStatus, the controller's own code, along a job's life.
func TestHealth(t *testing.T) {
	script := argoHealthScript(t)
	t0 := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	job := &cvlabv1alpha1.CvlabJob{
		TypeMeta:   metav1.TypeMeta{APIVersion: cvlabv1alpha1.GroupVersion.String(), Kind: "CvlabJob"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "alice", Name: "train", UID: "u1", Generation: 2},
		Spec:       cvlabv1alpha1.CvlabJobSpec{User: "alice", GPUs: 4},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "alice", Name: lifecycle.PodName(job, 1)},
		Spec:       corev1.PodSpec{NodeName: "gpu-1"},
		Status:     corev1.PodStatus{StartTime: &metav1.Time{Time: t0.Add(2 * time.Minute)}},
	}
	// step computes the status after cur when the job is (now) in phase; seconds after t0.
	step := func(cur *cvlabv1alpha1.CvlabJobStatus, seconds int, v observe.Job, e *queue.Entry) *cvlabv1alpha1.CvlabJobStatus {
		v.Job, v.Cur = job, cur
		return lifecycle.DesiredStatus(&v, e, observe.Cluster{}, time.Time{}, t0.Add(time.Duration(seconds)*time.Second))
	}
	queued := step(&cvlabv1alpha1.CvlabJobStatus{}, 0, observe.Job{Phase: cvlabv1alpha1.PhaseQueued},
		&queue.Entry{Rank: 3, FirstGPU: 1, LastGPU: 4, Position: 2, Reason: "3 GPUs free, needs 4"})
	admitted := step(queued, 60, observe.Job{Phase: cvlabv1alpha1.PhaseAdmitted, LastAdmission: 1, Node: "gpu-1"},
		&queue.Entry{Rank: 1, FirstGPU: 1, LastGPU: 4})
	running := step(admitted, 120, observe.Job{Phase: cvlabv1alpha1.PhaseRunning, LastAdmission: 1, Live: pod},
		&queue.Entry{Rank: 1, FirstGPU: 1, LastGPU: 4})
	finished := func(phase cvlabv1alpha1.JobPhase, reason, msg string) *cvlabv1alpha1.CvlabJobStatus {
		return step(running, 600, observe.Job{Phase: phase, LastAdmission: 1, Live: pod, FinishReason: reason, FinishMsg: msg}, nil)
	}
	// editedAfter is the status after the next decision once the spec of the job that ended with
	// st was edited (metadata.generation 3).
	editedAfter := func(st *cvlabv1alpha1.CvlabJobStatus) *cvlabv1alpha1.CvlabJobStatus {
		edited := job.DeepCopy()
		edited.Generation++
		v := observe.Job{Job: edited, Cur: st, Phase: st.Phase}
		return lifecycle.DesiredStatus(&v, nil, observe.Cluster{}, time.Time{}, t0.Add(time.Hour))
	}
	type health struct {
		KStatus status.Status
		Argo    string
	}
	cases := map[string]struct {
		st   *cvlabv1alpha1.CvlabJobStatus
		want health
	}{
		"Queued":    {queued, health{status.InProgressStatus, "Progressing"}},
		"Suspended": {step(queued, 30, observe.Job{Phase: cvlabv1alpha1.PhaseSuspended}, nil), health{status.InProgressStatus, "Suspended"}},
		"Admitted":  {admitted, health{status.InProgressStatus, "Progressing"}},
		"Running":   {running, health{status.CurrentStatus, "Healthy"}},
		"Succeeded": {finished(cvlabv1alpha1.PhaseSucceeded, "Succeeded", "pod train-1 succeeded"), health{status.CurrentStatus, "Healthy"}},
		"Failed":    {finished(cvlabv1alpha1.PhaseFailed, "Failed", "pod train-1 failed: exit code 1"), health{status.FailedStatus, "Degraded"}},
		"Failed, timed out": {finished(cvlabv1alpha1.PhaseFailed, "DeadlineExceeded", "ran longer than its timeout of 1h"),
			health{status.FailedStatus, "Degraded"}},
		// metadata.generation 3: the queue has not seen the latest spec yet.
		"Running, spec edited since": {running, health{status.InProgressStatus, "Progressing"}},
		// A finished job edited in git (priority) is seen again: its health stays final.
		"Succeeded, then edited": {editedAfter(finished(cvlabv1alpha1.PhaseSucceeded, "Succeeded", "pod train-1 succeeded")),
			health{status.CurrentStatus, "Healthy"}},
		"Failed, then edited": {editedAfter(finished(cvlabv1alpha1.PhaseFailed, "Failed", "pod train-1 failed: exit code 1")),
			health{status.FailedStatus, "Degraded"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			st := tc.st
			j := job.DeepCopy()
			j.Status = *st
			if strings.Contains(name, "edited") {
				j.Generation++
			}
			obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(j)
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{Object: obj}
			res, err := status.Compute(u)
			if err != nil {
				t.Fatalf("kstatus: %v", err)
			}
			argo, argoMsg := runArgoHealth(t, script, u)
			if diff := cmp.Diff(tc.want, health{res.Status, argo}); diff != "" {
				t.Errorf("phase %s: health (-want +got):\n%s\nkstatus says %q", st.Phase, diff, res.Message)
			}
			if j.Generation == st.ObservedGeneration && argoMsg != st.Message {
				t.Errorf("Argo CD message %q, want status.message %q", argoMsg, st.Message)
			}
			if res.Status == status.FailedStatus {
				finish := findCondition(st, cvlabv1alpha1.ConditionFinished)
				if finish == nil || res.Message != finish.Message {
					t.Errorf("kstatus message %q, want the Finished condition's, of %+v", res.Message, finish)
				}
			}
		})
	}
}

func findCondition(st *cvlabv1alpha1.CvlabJobStatus, typ string) *metav1.Condition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == typ {
			return &st.Conditions[i]
		}
	}
	return nil
}

// argoHealthScript is the Lua under argoHealthKey in the one fenced YAML block of docs/gitops.md
// that has it, read as Argo CD reads its argocd-cm.
func argoHealthScript(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(gitopsDoc)
	if err != nil {
		t.Fatal(err)
	}
	var scripts []string
	var block *bytes.Buffer
	for line := range strings.Lines(string(doc)) {
		switch {
		case block == nil && strings.HasPrefix(line, "```yaml"):
			block = new(bytes.Buffer)
		case block != nil && strings.HasPrefix(line, "```"):
			var cm struct {
				Data map[string]string `json:"data"`
			}
			if err := yaml.Unmarshal(block.Bytes(), &cm); err == nil && cm.Data[argoHealthKey] != "" {
				scripts = append(scripts, cm.Data[argoHealthKey])
			}
			block = nil
		case block != nil:
			block.WriteString(line)
		}
	}
	if len(scripts) != 1 {
		t.Fatalf("%s has %d YAML blocks with data.%s, want 1", gitopsDoc, len(scripts), argoHealthKey)
	}
	return scripts[0]
}

// runArgoHealth runs a health check as Argo CD's util/lua does: the standard libraries off but
// package, base and table, the object as the global obj, a table {status, message} returned.
func runArgoHealth(t *testing.T, script string, u *unstructured.Unstructured) (health, message string) {
	t.Helper()
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage, lua.BaseLibName: lua.OpenBase, lua.TabLibName: lua.OpenTable,
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(open), Protect: true}, lua.LString(name)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", luaValue(l, u.Object))
	if err := l.DoString(script); err != nil {
		t.Fatalf("Argo CD health check: %v", err)
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		t.Fatalf("Argo CD health check returned %s, want a table", l.Get(-1).Type())
	}
	health, message = lua.LVAsString(ret.RawGetString("status")), lua.LVAsString(ret.RawGetString("message"))
	switch health {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		t.Errorf("Argo CD health check returned status %q, which Argo CD turns into Unknown", health)
	}
	return health, message
}

// luaValue converts an unstructured value to Lua as Argo CD's decodeValue does: objects and
// arrays to tables, numbers to LNumber, anything else unknown to nil.
func luaValue(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(luaValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for k, item := range v {
			tbl.RawSetH(lua.LString(k), luaValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}
