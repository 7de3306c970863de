package cli

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

// publishedConfigMap is the ConfigMap the operator publishes p in, in namespace ns.
func publishedConfigMap(ns string, p observe.Published) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: observe.PublishedName}, Data: p.Data()}
}

// fakeReader serves a scenario's jobs, pods and nodes, and objs, as the API server would.
func fakeReader(s *scenario, getErr error, objs ...client.Object) client.Reader {
	b := fake.NewClientBuilder().WithScheme(scheme)
	for i := range s.c.Jobs {
		b.WithObjects(&s.c.Jobs[i])
	}
	for i := range s.c.Pods {
		b.WithObjects(&s.c.Pods[i])
	}
	for i := range s.c.Nodes {
		b.WithObjects(&s.c.Nodes[i])
	}
	b.WithObjects(objs...)
	if getErr != nil {
		b.WithInterceptorFuncs(interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.ConfigMap); ok {
				return getErr
			}
			return c.Get(ctx, key, obj, opts...)
		}})
	}
	return b.Build()
}

// The CLI decides with the settings the operator publishes; the config's cluster section and the
// flags override them, and say so; without them, it falls back on the config and the operator's
// defaults, and says why.
func TestPublishedSettings(t *testing.T) {
	never := settings(func(s *observe.Settings) { s.Preemption, s.MinRuntime = queue.PreemptNever, 20*time.Minute })
	const defaults = "--preemption=FirstGPU --min-runtime=10m --max-head-wait=30m"
	const published = "--preemption=Never --min-runtime=20m --max-head-wait=30m"
	sysNS := validation.DefaultNamespace
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, observe.PublishedName,
		errors.New(`User "bob" cannot get resource "configmaps" in API group "" in the namespace "cvlab-queue-system"`))
	cases := map[string]struct {
		objs   []client.Object
		getErr error
		config ClusterConfig
		args   []string
		want   observe.Settings
		// notes are the view's notes; lines parts of `why lab/alice-d`.
		notes []string
		lines []string
	}{
		"the published settings, with an empty config": {
			objs: []client.Object{publishedConfigMap(sysNS, observe.Published{Settings: never})}, want: never,
			lines: []string{"Preemption (--preemption=Never): the cluster never evicts running jobs.",
				"Estimated start: in about 1h59m (10:59)"}},
		"the config's cluster section overrides them, and says so": {
			objs:   []client.Object{publishedConfigMap(sysNS, observe.Published{Settings: never})},
			config: ClusterConfig{Preemption: "FirstGPU"},
			want:   settings(func(s *observe.Settings) { s.MinRuntime = 20 * time.Minute }),
			notes: []string{"the config's cluster section or flags override the operator's published settings: using " +
				"--preemption=FirstGPU --min-runtime=20m --max-head-wait=30m (the operator runs " + published + ")"},
			lines: []string{"Preemption (--preemption=FirstGPU): it cannot evict anyone",
				"Note: the config's cluster section or flags override the operator's published settings: using --preemption=FirstGPU"}},
		"a flag overrides them too": {
			objs: []client.Object{publishedConfigMap(sysNS, observe.Published{Settings: never})},
			args: []string{"--min-runtime=5m"},
			want: settings(func(s *observe.Settings) { s.Preemption, s.MinRuntime = queue.PreemptNever, 5*time.Minute }),
			notes: []string{"the config's cluster section or flags override the operator's published settings: using " +
				"--preemption=Never --min-runtime=5m --max-head-wait=30m (the operator runs " + published + ")"}},
		"a config that says what the operator publishes says nothing": {
			objs:   []client.Object{publishedConfigMap(sysNS, observe.Published{Settings: never})},
			config: ClusterConfig{Preemption: "never", MinRuntime: "20m"}, want: never},
		"the operator in another namespace": {
			objs: []client.Object{publishedConfigMap("ops", observe.Published{Settings: never})},
			args: []string{"--operator-namespace=ops"}, want: never},
		"no ConfigMap: the operator's defaults, and why": {
			want: observe.DefaultSettings(),
			notes: []string{"the operator's settings could not be read (ConfigMap cvlab-queue-system/cvlab-queue-settings not found: the operator " +
				"predates published settings, or runs in another namespace (see --operator-namespace)): using the operator's defaults, " + defaults},
			lines: []string{"Preemption (--preemption=FirstGPU): it cannot evict anyone",
				"Note: the operator's settings could not be read (ConfigMap cvlab-queue-system/cvlab-queue-settings not found"}},
		"no ConfigMap: the config's cluster section over the operator's defaults": {
			config: ClusterConfig{Preemption: "Never"},
			want:   settings(func(s *observe.Settings) { s.Preemption = queue.PreemptNever }),
			notes: []string{"the operator's settings could not be read (ConfigMap cvlab-queue-system/cvlab-queue-settings not found: the operator " +
				"predates published settings, or runs in another namespace (see --operator-namespace)): using the config's cluster section " +
				"and flags over the operator's defaults, --preemption=Never --min-runtime=10m --max-head-wait=30m"},
			lines: []string{"Preemption (--preemption=Never): the cluster never evicts running jobs."}},
		"not allowed to read the ConfigMap": {
			getErr: forbidden, want: observe.DefaultSettings(),
			notes: []string{`the operator's settings could not be read (reading ConfigMap cvlab-queue-system/cvlab-queue-settings is not allowed: ` +
				`User "bob" cannot get resource "configmaps" in API group "" in the namespace "cvlab-queue-system"): using the operator's defaults, ` + defaults}},
		"a ConfigMap that does not parse": {
			objs: []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: sysNS, Name: observe.PublishedName},
				Data: map[string]string{observe.KeyPreemption: "Sometimes"}}},
			want: observe.DefaultSettings(),
			notes: []string{`the operator's settings could not be read (ConfigMap cvlab-queue-system/cvlab-queue-settings: preemption: ` +
				`preemption must be FirstGPU, Rank or Never, not "Sometimes"): using the operator's defaults, ` + defaults}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			// The operator decided with its own settings (the ranks and positions do not depend on
			// them here: no status differs).
			s := lab().settle(never)
			r := &root{config: Config{Cluster: tc.config}}
			cmd := r.whyCommand()
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			cl, err := readCluster(context.Background(), fakeReader(s, tc.getErr, tc.objs...), nil, r.operatorNamespace)
			if err != nil {
				t.Fatal(err)
			}
			set, err := r.decideWith(cmd, cl)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, set, cmp.Comparer(func(a, b labels.Selector) bool { return a.String() == b.String() })); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
			v := Observe(cl, set, t0)
			if diff := cmp.Diff(tc.notes, v.Notes); diff != "" {
				t.Errorf("notes (-want +got):\n%s", diff)
			}
			got := Explain(v, "lab/alice-d", "alice")
			for _, l := range tc.lines {
				if !strings.Contains(got, l) {
					t.Errorf("explanation lacks %q:\n%s", l, got)
				}
			}
		})
	}
}

// What only the operator remembers comes from its typed status fields and its published head of
// the line, never from its sentences: here no job has a status message at all.
func TestMemoryFromStatusAndPublished(t *testing.T) {
	// n1 and n2 have 8 GPUs each; ann and dan hold 12 of them; ben's 8-GPU job is first in line,
	// ann's 1-GPU job ranks below it, and 4 GPUs are free on n2.
	headOfLine := func() *scenario {
		return newScenario().node("n1", 8).node("n2", 8).
			job("ann-1", "ann", 8, 2*time.Hour).running("n1", 2*time.Hour).
			job("dan-1", "dan", 4, 2*time.Hour).running("n2", 2*time.Hour).
			job("big", "ben", 8, 40*time.Minute).
			job("small", "ann", 1, 30*time.Minute)
	}
	def := observe.DefaultSettings()
	hour := settings(func(s *observe.Settings) { s.MaxHeadWait = time.Hour })
	cases := map[string]struct {
		s *scenario
		// published are the operator's settings; config overrides them.
		published observe.Settings
		config    ClusterConfig
		key       string
		lines     []string
	}{
		"the published head has waited --max-head-wait: the jobs below it are held": {
			s: headOfLine().firstInLine("lab/big", 35*time.Minute), published: def, key: "lab/small",
			lines: []string{"Why it waits: held behind lab/big, which waits for 8 GPUs: that job is first in line and has waited longer than --max-head-wait (30m)"}},
		"and the head says it holds them back": {
			s: headOfLine().firstInLine("lab/big", 35*time.Minute), published: def, key: "lab/big",
			lines: []string{"Why it waits: 4 GPUs free, needs 8.",
				"  It is first in line and has waited --max-head-wait (30m): no job ranked below it starts before it."}},
		"the published head is younger than --max-head-wait: the jobs below it start": {
			s: headOfLine().firstInLine("lab/big", 10*time.Minute), published: def, key: "lab/small",
			lines: []string{"lab/small (ann, 1 GPU, priority 0) is waiting, but it fits now on node n2"}},
		"no head published: its clock starts now": {
			s: headOfLine(), published: def, key: "lab/small",
			lines: []string{"lab/small (ann, 1 GPU, priority 0) is waiting, but it fits now on node n2"}},
		"the operator publishes --max-head-wait=1h: not yet": {
			s: headOfLine().firstInLine("lab/big", 35*time.Minute), published: hour, key: "lab/small",
			lines: []string{"lab/small (ann, 1 GPU, priority 0) is waiting, but it fits now on node n2"}},
		"the config's --max-head-wait overrides the published one": {
			s: headOfLine().firstInLine("lab/big", 35*time.Minute), published: hour, config: ClusterConfig{MaxHeadWait: "20m"}, key: "lab/small",
			lines: []string{"that job is first in line and has waited longer than --max-head-wait (20m)",
				"Note: the config's cluster section or flags override the operator's published settings: using " +
					"--preemption=FirstGPU --min-runtime=10m --max-head-wait=20m (the operator runs --preemption=FirstGPU --min-runtime=10m --max-head-wait=1h)"}},
		"status.backoffUntil holds a job back": {
			s: newScenario().node("n1", 8).job("ann-1", "ann", 1, time.Minute, backoffUntil(t0.Add(5*time.Minute))), published: def, key: "lab/ann-1",
			lines: []string{"Why it waits: its last start failed (see its events); the operator tries again at 09:05 (in 5m)."}},
		"status.reservedNode keeps the GPUs being freed for the preemptor": {
			s: func() *scenario {
				s := preempting()
				for i := range s.c.Jobs {
					s.c.Jobs[i].Status.Message = ""
				}
				return s
			}(), published: def, key: "lab/ann-1",
			lines: []string{"Why it waits: waiting for the jobs it preempted to stop on node n1; it starts as soon as their pods are gone"}},
		"status.node places a running job whose pod cannot be read": {
			s: func() *scenario {
				s := newScenario().node("n1", 4).node("n2", 4).job("ann-1", "ann", 3, time.Hour).running("n1", time.Hour).
					job("ben-1", "ben", 3, time.Minute)
				s.c.Pods, s.c.PodsErr = nil, errors.New("pods is forbidden: User \"ben\" cannot list resource \"pods\"")
				return s
			}(), published: def, key: "lab/ben-1",
			lines: []string{"lab/ben-1 (ben, 3 GPUs, priority 0) is waiting, but it fits now on node n2"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			for i := range tc.s.c.Jobs {
				if tc.s.c.Jobs[i].Status.Message != "" {
					t.Fatalf("job %s has a status message: the memory must come from typed fields", tc.s.c.Jobs[i].Name)
				}
			}
			c := tc.s.cluster(tc.published)
			set, err := tc.config.Apply(tc.published)
			if err != nil {
				t.Fatal(err)
			}
			got := Explain(Observe(c, set, t0), tc.key, "ann")
			for _, l := range tc.lines {
				if !strings.Contains(got, l) {
					t.Errorf("explanation lacks %q:\n%s", l, got)
				}
			}
		})
	}
}
