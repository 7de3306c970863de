package cli

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// utilization sets a running job's measured utilisation (status.gpuUtilization).
func utilization(percent int32, mib int64) func(*cvlabv1alpha1.CvlabJob) {
	return func(j *cvlabv1alpha1.CvlabJob) {
		j.Status.GPUUtilization = &cvlabv1alpha1.GPUUtilization{Percent: percent, MemoryUsedMiB: mib,
			Window: metav1.Duration{Duration: 5 * time.Minute}, MeasuredAt: metav1.NewTime(t0.Add(-30 * time.Second))}
	}
}

// idleSince sets status.idleSince ago and, with reason, the GPUIdle condition.
func idleSince(ago time.Duration, reason string) func(*cvlabv1alpha1.CvlabJob) {
	return func(j *cvlabv1alpha1.CvlabJob) {
		j.Status.IdleSince = ptr.To(metav1.NewTime(t0.Add(-ago)))
		if reason != "" {
			j.Status.Conditions = append(j.Status.Conditions, metav1.Condition{Type: cvlabv1alpha1.ConditionGPUIdle,
				Status: metav1.ConditionTrue, Reason: reason, Message: "its GPUs are idle"})
		}
	}
}

// utilLab is the lab scenario with utilisation: alice's job busy (87%), bob's idle for 1h12m
// (warned), and a notebook of dave's idle for 3h12m and reclaimable on n2.
func utilLab() *scenario {
	return newScenario().node("n1", 4).node("n2", 4).
		job("alice-a", "alice", 3, 2*time.Hour, utilization(87, 30000)).running("n1", time.Hour).
		job("bob-b", "bob", 1, 2*time.Hour, utilization(2, 0), idleSince(72*time.Minute, cvlabv1alpha1.ReasonIdle)).running("n1", 2*time.Hour).
		job("dave-nb", "dave", 2, 5*time.Hour, utilization(0, 0), idleSince(192*time.Minute, cvlabv1alpha1.ReasonReclaimable)).running("n2", 5*time.Hour).
		job("erin-x", "erin", 2, 5*time.Hour).running("n2", time.Hour). // unknown
		job("carol-c", "carol", 2, 30*time.Second)
}

func TestQueueUtilization(t *testing.T) {
	set := observe.DefaultSettings()
	v := utilLab().view(set)
	r := Queue(v, QueueFilter{Namespace: "lab"})
	got := map[string][2]string{}
	for _, q := range r.Jobs {
		got[q.Name] = [2]string{q.utilText(), q.idleText(v.Now)}
	}
	want := map[string][2]string{
		"alice-a": {"87%", "-"},
		"bob-b":   {"2%", "1h12m warned"},
		"dave-nb": {"0%", "3h12m reclaimable"},
		"erin-x":  {"?", "-"}, // unknown: never shown as 0
		"carol-c": {"-", "-"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("UTIL and IDLE cells (-want +got):\n%s", diff)
	}

	var out bytes.Buffer
	if err := r.Write(&out, "", set, v.Now); err != nil {
		t.Fatal(err)
	}
	if first := strings.Fields(strings.SplitN(out.String(), "\n", 2)[0]); !slices.Equal(first[len(first)-3:], []string{"AGE", "UTIL", "IDLE"}) {
		t.Errorf("header %q", first)
	}
	out.Reset()
	if err := r.Write(&out, "json", set, v.Now); err != nil {
		t.Fatal(err)
	}
	var js struct {
		Jobs []map[string]any `json:"jobs"`
	}
	if err := json.Unmarshal(out.Bytes(), &js); err != nil {
		t.Fatal(err)
	}
	fields := map[string][]string{}
	for _, j := range js.Jobs {
		for _, k := range []string{"utilization", "idleSince", "idle"} {
			if _, ok := j[k]; ok {
				fields[j["name"].(string)] = append(fields[j["name"].(string)], k)
			}
		}
	}
	wantFields := map[string][]string{"alice-a": {"utilization"}, "bob-b": {"utilization", "idleSince", "idle"},
		"dave-nb": {"utilization", "idleSince", "idle"}}
	if diff := cmp.Diff(wantFields, fields); diff != "" {
		t.Errorf("JSON fields (-want +got):\n%s", diff)
	}
}

func TestTopUtilization(t *testing.T) {
	set := observe.DefaultSettings()
	v := utilLab().view(set)
	got := map[string]TopRow{}
	for _, u := range Top(v) {
		got[u.User] = u
	}
	want := map[string]TopRow{
		"alice": {User: "alice", RunningGPUs: 3, RunningJobs: 1, Utilization: ptr.To[int32](87), MeasuredGPUs: 3},
		"bob":   {User: "bob", RunningGPUs: 1, RunningJobs: 1, Utilization: ptr.To[int32](2), MeasuredGPUs: 1, IdleGPUs: 1},
		"dave":  {User: "dave", RunningGPUs: 2, RunningJobs: 1, Utilization: ptr.To[int32](0), MeasuredGPUs: 2, IdleGPUs: 2},
		"erin":  {User: "erin", RunningGPUs: 2, RunningJobs: 1},
		"carol": {User: "carol", WaitingGPUs: 2, WaitingJobs: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("top (-want +got):\n%s", diff)
	}
	var out bytes.Buffer
	if err := WriteTop(&out, v); err != nil {
		t.Fatal(err)
	}
	wantOut := `USER    GPUS IN USE   JOBS RUNNING   GPUS WAITING   JOBS WAITING   UTIL   IDLE GPUS
alice   3             1              0              0              87%    0
dave    2             1              0              0              0%     2
erin    2             1              0              0              ?      0
bob     1             1              0              0              2%     1
carol   0             0              2              1              -      0
TOTAL   8             4              2              1              44%    3
`
	if got := strings.SplitN(out.String(), "\n\n", 2)[0] + "\n"; got != wantOut {
		t.Errorf("top output (-want +got):\n%s", cmp.Diff(wantOut, got))
	}
}

func TestExplainIdle(t *testing.T) {
	preempted := func(j *cvlabv1alpha1.CvlabJob) {
		j.Status.Preemptions = 1
		j.Status.Conditions = append(j.Status.Conditions, metav1.Condition{Type: cvlabv1alpha1.ConditionPreempted, Status: metav1.ConditionTrue,
			Reason: cvlabv1alpha1.ReasonReclaimable, Message: "its GPUs were idle for 1h30m: evicted for lab/carol-c"})
	}
	warnOnly := observe.DefaultSettings()
	warnOnly.Idle.Action = observe.IdleWarn
	cases := map[string]struct {
		s    *scenario
		key  string
		set  observe.Settings
		want []string
		not  []string
	}{
		"a waiting job sees the idle GPUs that block it": {s: utilLab(), key: "lab/carol-c", set: observe.DefaultSettings(), want: []string{
			"Running jobs whose GPUs are idle (below --idle-threshold, 5%):",
			"  n2: lab/dave-nb (dave) holds 2 GPUs, idle for 3h12m (reclaimable now)",
			"  n1: lab/bob-b (bob) holds 1 GPU, idle for 1h12m (reclaimable in 18m)",
		}},
		"with --idle-action=Warn nothing is reclaimed": {s: utilLab(), key: "lab/carol-c", set: warnOnly, want: []string{
			"  n1: lab/bob-b (bob) holds 1 GPU, idle for 1h12m (only warned: --idle-action=Warn)",
		}},
		"a busy running job": {s: utilLab(), key: "lab/alice-a", set: observe.DefaultSettings(), want: []string{
			"GPU utilisation: 87% over 5m, 30000 MiB of GPU memory (measured 08:59).",
		}, not: []string{"idle"}},
		"an unmeasured running job is not idle": {s: utilLab(), key: "lab/erin-x", set: observe.DefaultSettings(), want: []string{
			"GPU utilisation: unknown (no data from the GPU exporter): never taken for idleness.",
		}, not: []string{"Its GPUs have been idle"}},
		"an idle running job, warned": {s: utilLab(), key: "lab/bob-b", set: observe.DefaultSettings(), want: []string{
			"GPU utilisation: 2% over 5m (measured 08:59).",
			"  Its GPUs have been idle (below --idle-threshold, 5%) for 1h12m, since 07:48: its owner was warned; reclaimable in 18m.",
		}},
		"an idle running job, reclaimable": {s: utilLab(), key: "lab/dave-nb", set: observe.DefaultSettings(), want: []string{
			"  Its GPUs have been idle (below --idle-threshold, 5%) for 3h12m, since 05:48: its owner was warned; reclaimable now: its GPUs count as free, any waiting job that fits may evict it.",
		}},
		"an idle running job, not yet warned": {
			s:   newScenario().node("n1", 4).job("nb", "bob", 1, time.Hour, utilization(1, 0), idleSince(20*time.Minute, "")).running("n1", time.Hour),
			key: "lab/nb", set: observe.DefaultSettings(), want: []string{
				"  Its GPUs have been idle (below --idle-threshold, 5%) for 20m, since 08:40: warned in 40m (--idle-after 1h); reclaimable in 1h10m.",
			}},
		"evicted because idle": {
			s:   newScenario().node("n1", 4).job("nb", "bob", 4, time.Hour, preempted).job("x", "carol", 4, time.Hour).running("n1", time.Minute),
			key: "lab/nb", set: observe.DefaultSettings(), want: []string{
				"It was evicted because its GPUs were idle (below --idle-threshold (5%) for --idle-after (1h) and --idle-grace (30m)): a waiting job took them, and it waits again in the queue.",
				"  Operator: its GPUs were idle for 1h30m: evicted for lab/carol-c",
			}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Explain(tc.s.view(tc.set), tc.key, "me")
			lines := strings.Split(got, "\n")
			for _, w := range tc.want {
				if !contains(lines, w) {
					t.Errorf("no line %q in:\n%s", w, got)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("%q in:\n%s", n, got)
				}
			}
		})
	}
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}
