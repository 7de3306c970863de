package cli

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

func TestQueueTable(t *testing.T) {
	set := observe.DefaultSettings()
	v := lab().job("prep", "dave", 0, time.Minute, phase(cvlabv1alpha1.PhaseRunning)).settle(set).view(set)
	var out bytes.Buffer
	if err := Queue(v, QueueFilter{Namespace: "lab"}).Write(&out, "", set, v.Now); err != nil {
		t.Fatal(err)
	}
	want := `RANK   POS   USER    JOB       GPUS   GPU#   PRIO   PHASE     AGE   UTIL   IDLE
1      1     carol   carol-c   1      1      0      Queued    30s   -      -
2            bob     bob-b     2      1-2    0      Running   2m    ?      -
3      2     bob     bob-e     1      3      0      Queued    10s   -      -
-------- capacity cut: 6 GPUs; the jobs above fit, those below wait (or may be preempted) --------
4            alice   alice-a   4      1-4    0      Running   2m    ?      -
5      3     alice   alice-d   2      5-6    0      Queued    20s   -      -
-            dave    prep      0      -      0      Running   60s   -      -

capacity 7 GPUs, 7 used (1 by other pods), 3 jobs waiting for 4 GPUs
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("queue (-want +got):\n%s", diff)
	}
}

// rows renders a report as job names and "--cut--" for the capacity cut line.
func rows(r *QueueReport) []string {
	var out []string
	for i, q := range r.Jobs {
		if i == r.cut {
			out = append(out, "--cut--")
		}
		name := q.Name
		if r.qualified {
			name = q.Namespace + "/" + name
		}
		out = append(out, name)
	}
	if r.cut == len(r.Jobs) && len(r.Jobs) > 0 {
		out = append(out, "--cut--")
	}
	return out
}

func TestQueueCutAndFilters(t *testing.T) {
	set := observe.DefaultSettings()
	allFit := newScenario().node("n1", 8).job("a", "ann", 2, time.Hour).running("n1", time.Hour).job("b", "ben", 1, time.Minute)
	other := lab()
	other.job("x", "xavier", 1, 5*time.Second)
	other.c.Jobs[len(other.c.Jobs)-1].Namespace = "other"
	cases := map[string]struct {
		s       *scenario
		filter  QueueFilter
		want    []string
		summary string
	}{
		"the cut after the jobs that fit": {s: lab(), filter: QueueFilter{Namespace: "lab"},
			want: []string{"carol-c", "bob-b", "bob-e", "--cut--", "alice-a", "alice-d"}, summary: "capacity 7 GPUs, 7 used (1 by other pods), 3 jobs waiting for 4 GPUs"},
		"alice: all hers beyond the cut": {s: lab(), filter: QueueFilter{Namespace: "lab", User: "alice"}, want: []string{"--cut--", "alice-a", "alice-d"}},
		"carol: hers fits, cut below":    {s: lab(), filter: QueueFilter{Namespace: "lab", User: "carol"}, want: []string{"carol-c", "--cut--"}},
		"nobody":                         {s: lab(), filter: QueueFilter{Namespace: "lab", User: "nobody"}},
		"all fit: no cut":                {s: allFit, filter: QueueFilter{Namespace: "lab"}, want: []string{"b", "a"}, summary: "capacity 8 GPUs, 2 used, no job waiting"},
		"another namespace ranks too, shown with -A": {s: other, filter: QueueFilter{AllNamespaces: true},
			want:    []string{"lab/carol-c", "other/x", "lab/bob-b", "lab/bob-e", "--cut--", "lab/alice-a", "lab/alice-d"},
			summary: "capacity 7 GPUs, 7 used (1 by other pods), 4 jobs waiting for 5 GPUs"},
		"and hidden without": {s: other, filter: QueueFilter{Namespace: "lab"}, want: []string{"carol-c", "bob-b", "bob-e", "--cut--", "alice-a", "alice-d"}},
		// --gpu-capacity 5 < 7 GPUs - 1 foreign: the queue's jobs may hold 5.
		"the queue's share": {s: lab(), filter: QueueFilter{Namespace: "lab"}, want: []string{"carol-c", "bob-b", "bob-e", "--cut--", "alice-a", "alice-d"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			set := set
			if name == "the queue's share" {
				set.GPUCapacity = 5
			}
			v := tc.s.settle(set).view(set)
			r := Queue(v, tc.filter)
			if diff := cmp.Diff(tc.want, rows(r)); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
			if tc.summary != "" && r.Summary(set) != tc.summary {
				t.Errorf("summary = %q, want %q", r.Summary(set), tc.summary)
			}
		})
	}
}

func TestQueueSummaryAndNotes(t *testing.T) {
	cases := map[string]struct {
		s       *scenario
		set     observe.Settings
		settle  bool
		summary string
		notes   []string
	}{
		"share of a bigger cluster": {s: lab(), set: settings(func(s *observe.Settings) { s.GPUCapacity = 5 }), settle: true,
			summary: "capacity 5 GPUs (the queue's share of 7 on GPU nodes), 7 used (1 by other pods), 3 jobs waiting for 4 GPUs"},
		"pool of --gpu-capacity": {s: newScenario().job("a", "ann", 3, time.Hour, phase(cvlabv1alpha1.PhaseRunning)).job("b", "ben", 2, time.Minute),
			set: settings(func(s *observe.Settings) { s.GPUCapacity = 4 }), settle: true, summary: "capacity 4 GPUs, 3 used, 1 job waiting for 2 GPUs"},
		// No GPU node and no --gpu-capacity: the pool is assumed to be what is held (3 GPUs).
		"pool assumed from the GPUs held": {
			s: newScenario().job("a", "ann", 3, time.Hour, phase(cvlabv1alpha1.PhaseRunning)).
				job("b", "ben", 2, time.Minute, message("waiting: 1 GPU free, needs 2; next in line")),
			set: observe.DefaultSettings(), settle: true, summary: "capacity unknown (assumed 3 GPUs), 3 used, 1 job waiting for 2 GPUs",
			notes: []string{"no GPU node found and the pool size is not known: pass the operator's --gpu-capacity (or set cluster.gpuCapacity in the config); assuming 3 GPUs"}},
		"a status the operator has not written yet": {s: lab(), set: observe.DefaultSettings(),
			summary: "capacity 7 GPUs, 7 used (1 by other pods), 3 jobs waiting for 4 GPUs",
			notes:   []string{"5 jobs' status differs from this computation: the operator is deciding right now"}},
		"a status the operator has not written yet, its settings unknown": {s: unpublished(lab(), nil), set: observe.DefaultSettings(),
			summary: "capacity 7 GPUs, 7 used (1 by other pods), 3 jobs waiting for 4 GPUs",
			notes: []string{"the operator's settings could not be read (it publishes none): using the operator's defaults, " +
				"--preemption=FirstGPU --min-runtime=10m --max-head-wait=30m",
				"5 jobs' status differs from this computation: the operator is deciding right now, or runs with other settings than " +
					"--preemption=FirstGPU --min-runtime=10m --max-head-wait=30m"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if tc.settle {
				tc.s.settle(tc.set)
			}
			v := tc.s.view(tc.set)
			r := Queue(v, QueueFilter{Namespace: "lab"})
			if got := r.Summary(tc.set); got != tc.summary {
				t.Errorf("summary = %q, want %q", got, tc.summary)
			}
			if diff := cmp.Diff(tc.notes, r.Notes); diff != "" {
				t.Errorf("notes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestObserve(t *testing.T) {
	withPod := func(s *scenario, f func(*corev1.Pod)) *scenario {
		f(&s.c.Pods[len(s.c.Pods)-1])
		return s
	}
	type got struct {
		Nodes                      []NodeInfo
		Capacity, Budget           int32
		Foreign, Terminating, Held int32
		Waiting                    []string
	}
	cases := map[string]struct {
		s    *scenario
		set  observe.Settings
		want got
	}{
		"foreign pods count on Ready selected GPU nodes only; unbound and finished ones do not": {
			s: func() *scenario {
				s := newScenario().node("n1", 4).node("n2", 4).node("cordoned", 4).node("notready", 4).
					foreign("raw-1", "n1", 1).foreign("raw-2", "cordoned", 2).foreign("raw-3", "", 1).foreign("raw-4", "n2", 2)
				s.c.Nodes[2].Spec.Unschedulable = true
				s.c.Nodes[3].Status.Conditions[0].Status = corev1.ConditionFalse
				s.c.Pods[3].Status.Phase = corev1.PodSucceeded
				return s
			}(), set: observe.DefaultSettings(),
			want: got{Nodes: []NodeInfo{{Name: "n1", GPUs: 4, Foreign: 1}, {Name: "n2", GPUs: 4}}, Capacity: 8, Budget: 7, Foreign: 1},
		},
		"the node selector picks the GPU nodes": {
			s: func() *scenario {
				s := newScenario().node("n1", 4).node("n2", 4)
				s.c.Nodes[0].Labels = map[string]string{"cvlab.epfl.ch/gpu": "true"}
				return s
			}(), set: settings(func(s *observe.Settings) {
				s.NodeSelector = labels.SelectorFromSet(labels.Set{"cvlab.epfl.ch/gpu": "true"})
			}),
			want: got{Nodes: []NodeInfo{{Name: "n1", GPUs: 4}}, Capacity: 4, Budget: 4},
		},
		"a preempted job's pod being deleted holds its GPUs until gone": {
			s: preempting(), set: observe.DefaultSettings(),
			want: got{Nodes: []NodeInfo{{Name: "n1", GPUs: 2, Terminating: 1, Held: 1}}, Capacity: 2, Budget: 2, Terminating: 1, Held: 1,
				Waiting: []string{"lab/ann-1", "lab/bob-2"}},
		},
		"a suspended job's pod still running is being stopped": {
			s:    newScenario().node("n1", 4).job("a", "ann", 2, time.Hour, func(j *cvlabv1alpha1.CvlabJob) { j.Spec.Suspend = true }).running("n1", time.Hour),
			set:  observe.DefaultSettings(),
			want: got{Nodes: []NodeInfo{{Name: "n1", GPUs: 4, Terminating: 2}}, Capacity: 4, Budget: 4, Terminating: 2},
		},
		"finished jobs and finished pods hold nothing; the live pod is the latest admission": {
			s: withPod(newScenario().node("n1", 4).
				job("done", "ann", 2, time.Hour, phase(cvlabv1alpha1.PhaseSucceeded)).
				job("a", "ben", 1, time.Hour).running("n1", time.Hour), func(p *corev1.Pod) {
				p.Labels[cluster.LabelAdmission] = "2"
				p.Annotations[cluster.AnnotationNode] = "n1"
				p.Spec.NodeName = ""
			}),
			set:  observe.DefaultSettings(),
			want: got{Nodes: []NodeInfo{{Name: "n1", GPUs: 4, Held: 1}}, Capacity: 4, Budget: 4, Held: 1},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			v := tc.s.view(tc.set)
			g := got{Nodes: v.Nodes, Capacity: v.Capacity, Budget: v.Budget, Foreign: v.Foreign, Terminating: v.Terminating, Held: v.Held}
			for _, j := range v.Snapshot.Jobs {
				if j.State == 0 {
					g.Waiting = append(g.Waiting, j.Key)
				}
			}
			slices.Sort(g.Waiting)
			if diff := cmp.Diff(tc.want, g); diff != "" {
				t.Errorf("observation (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTop(t *testing.T) {
	set := observe.DefaultSettings()
	v := lab().settle(set).view(set)
	want := []TopRow{
		{User: "alice", RunningGPUs: 4, RunningJobs: 1, WaitingGPUs: 2, WaitingJobs: 1},
		{User: "bob", RunningGPUs: 2, RunningJobs: 1, WaitingGPUs: 1, WaitingJobs: 1},
		{User: "carol", WaitingGPUs: 1, WaitingJobs: 1},
	}
	if diff := cmp.Diff(want, Top(v)); diff != "" {
		t.Errorf("top (-want +got):\n%s", diff)
	}
	var out bytes.Buffer
	if err := WriteTop(&out, v); err != nil {
		t.Fatal(err)
	}
	wantOut := `USER           GPUS IN USE   JOBS RUNNING   GPUS WAITING   JOBS WAITING   UTIL   IDLE GPUS
alice          4             1              2              1              ?      0
bob            2             1              1              1              ?      0
carol          0             0              1              1              -      0
(other pods)   1             -              -              -              -      -
TOTAL          7             2              4              3              ?      0

7 GPUs in use of 7 (0 free)
`
	if diff := cmp.Diff(wantOut, out.String()); diff != "" {
		t.Errorf("top output (-want +got):\n%s", diff)
	}
}

func TestFriendlyErrors(t *testing.T) {
	gr := schema.GroupResource{Group: "cvlab.epfl.ch", Resource: "cvlabjobs"}
	installed := func(ok bool) func() (bool, error) { return func() (bool, error) { return ok, nil } }
	cases := map[string]struct {
		err       error
		installed func() (bool, error)
		want      string
	}{
		"job not found": {err: apierrors.NewNotFound(gr, "x"), installed: installed(true),
			want: `cvlabjob "x" not found in namespace "lab"`},
		"API not installed": {err: apierrors.NewNotFound(gr, "x"), installed: installed(false),
			want: "the CvlabJob API is not installed on this cluster: is the operator installed?"},
		"no kind match": {err: &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "cvlab.epfl.ch", Kind: "CvlabJob"}},
			want: "the CvlabJob API is not installed on this cluster: is the operator installed?"},
		"forbidden": {err: apierrors.NewForbidden(gr, "x", errors.New(`User "bob" cannot delete resource "cvlabjobs" in API group "cvlab.epfl.ch" in the namespace "lab"`)),
			want: `not allowed: User "bob" cannot delete resource "cvlabjobs" in API group "cvlab.epfl.ch" in the namespace "lab"`},
		"unauthorized": {err: apierrors.NewUnauthorized("token expired"), want: "not logged in to the cluster (token expired): check your kubeconfig or log in again"},
		"other":        {err: errors.New("connection refused"), want: "connection refused"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Friendly(tc.err, notFoundMessage("x", "lab"), tc.installed)
			if got == nil || got.Error() != tc.want {
				t.Errorf("Friendly() = %v, want %q", got, tc.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	cases := map[string]struct{ got, want string }{
		"ordinals":       {strings.Join([]string{queue.Ordinal(1), queue.Ordinal(2), queue.Ordinal(3), queue.Ordinal(4), queue.Ordinal(11), queue.Ordinal(12), queue.Ordinal(13), queue.Ordinal(21), queue.Ordinal(102)}, " "), "1st 2nd 3rd 4th 11th 12th 13th 21st 102nd"},
		"GPU ordinals":   {gpuOrdinals(3, 3) + ", " + gpuOrdinals(2, 4), "3rd GPU, 2nd-4th GPUs"},
		"ordinal sets":   {strings.Join([]string{ordinalSet([]int32{1}), ordinalSet([]int32{1, 2}), ordinalSet([]int32{1, 3}), ordinalSet([]int32{1, 2, 3, 4, 5})}, " "), "1st 1st/2nd 1st/3rd 1st-5th"},
		"short duration": {strings.Join([]string{shortDuration(4 * time.Hour), shortDuration(90 * time.Minute), shortDuration(10 * time.Minute), shortDuration(45 * time.Second)}, " "), "4h 1h30m 10m 45s"},
		"when":           {when(t0.Add(2*time.Hour+20*time.Second), t0) + ", " + when(t0.Add(26*time.Hour), t0), "11:00 (in 2h), Mon Nov 30 11:00 (in 26h)"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}
