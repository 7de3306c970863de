package observe

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// ledgerWith is a new ledger changed by fill.
func ledgerWith(fill func(*Ledger)) *Ledger {
	l := NewLedger()
	if fill != nil {
		fill(l)
	}
	return l
}

func TestLearn(t *testing.T) {
	queued := status(cvlabv1alpha1.PhaseQueued, 1, "")
	admitted := status(cvlabv1alpha1.PhaseAdmitted, 1, "n1")
	running := status(cvlabv1alpha1.PhaseRunning, 1, "n1")
	a := func(opts ...jobOpt) []*cvlabv1alpha1.CvlabJob {
		return []*cvlabv1alpha1.CvlabJob{newJob("a", 2, opts...)}
	}
	podA := func(phase corev1.PodPhase, node string, opts ...podOpt) []corev1.Pod {
		return []corev1.Pod{newPod(newJob("a", 2), 1, phase, node, opts...)}
	}
	ua := uidOf("a")
	backoff := Backoff{Until: now.Add(time.Minute), Failures: 2}

	cases := map[string]struct {
		world
		want *Ledger
	}{
		"forgets deleted jobs, keeps the head": {
			world: world{jobs: a(queued), ledger: func(l *Ledger) {
				gone := uidOf("gone")
				l.Expect(gone, "gone-1", "n1", now)
				l.Evicting(gone, "gone-1")
				l.Reserved[gone] = Reservation{Node: "n1", Since: now}
				l.Backoff[gone] = backoff
				l.PodNode[gone] = "n1"
				l.Head, l.HeadSince = keyOf("gone"), t0
			}},
			want: ledgerWith(func(l *Ledger) { l.Head, l.HeadSince = keyOf("gone"), t0 }),
		},
		"drops an expectation the cache fulfilled, notes the pod's node": {
			world: world{jobs: a(admitted), pods: podA(corev1.PodPending, "n1"),
				ledger: func(l *Ledger) { l.Expect(ua, "a-1", "n1", ago(time.Second)) }},
			want: ledgerWith(func(l *Ledger) { l.PodNode[ua] = "n1" }),
		},
		"keeps an expectation the cache does not show yet": {
			world: world{jobs: a(admitted), ledger: func(l *Ledger) { l.Expect(ua, "a-1", "n1", ago(ExpectationTimeout)) }},
			want:  ledgerWith(func(l *Ledger) { l.Expect(ua, "a-1", "n1", ago(ExpectationTimeout)) }),
		},
		"drops an expired expectation": {
			world: world{jobs: a(admitted), ledger: func(l *Ledger) { l.Expect(ua, "a-1", "n1", ago(ExpectationTimeout+time.Nanosecond)) }},
			want:  NewLedger(),
		},
		"drops an eviction whose pod is gone": {
			world: world{jobs: a(queued), ledger: func(l *Ledger) { l.Evicting(ua, "a-1") }},
			want:  NewLedger(),
		},
		"drops an eviction whose pod is being deleted": {
			world: world{jobs: a(queued), pods: podA(corev1.PodRunning, "n1", deleting(ago(time.Second))),
				ledger: func(l *Ledger) { l.Evicting(ua, "a-1") }},
			want: NewLedger(),
		},
		"keeps an eviction whose pod the cache still shows": {
			world: world{jobs: a(queued), pods: podA(corev1.PodRunning, "n1"), ledger: func(l *Ledger) { l.Evicting(ua, "a-1") }},
			want:  ledgerWith(func(l *Ledger) { l.Evicting(ua, "a-1") }),
		},
		"notes the node of a running pod, over an older one": {
			world: world{jobs: a(running), pods: podA(corev1.PodRunning, "n2"), ledger: func(l *Ledger) { l.PodNode[ua] = "n1" }},
			want:  ledgerWith(func(l *Ledger) { l.PodNode[ua] = "n2" }),
		},
		"keeps the node of a pod that vanished": {
			world: world{jobs: a(running), nodes: []corev1.Node{newNode("n1", 4, false)}, ledger: func(l *Ledger) { l.PodNode[ua] = "n1" }},
			want:  ledgerWith(func(l *Ledger) { l.PodNode[ua] = "n1" }),
		},
		"clears the backoff of a running job": {
			world: world{jobs: a(running), pods: podA(corev1.PodRunning, "n1"), ledger: func(l *Ledger) { l.Backoff[ua] = backoff }},
			want:  ledgerWith(func(l *Ledger) { l.PodNode[ua] = "n1" }),
		},
		"keeps the backoff of a job whose pod has not started": {
			world: world{jobs: a(admitted), pods: podA(corev1.PodPending, "n1"), ledger: func(l *Ledger) { l.Backoff[ua] = backoff }},
			want:  ledgerWith(func(l *Ledger) { l.Backoff[ua] = backoff; l.PodNode[ua] = "n1" }),
		},
		"keeps the backoff of a waiting job": {
			world: world{jobs: a(queued), ledger: func(l *Ledger) { l.Backoff[ua] = backoff }},
			want:  ledgerWith(func(l *Ledger) { l.Backoff[ua] = backoff }),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if tc.nodes == nil {
				tc.nodes = oneNode()
			}
			l := ledgerWith(tc.ledger)
			obs, _, _, err := observeDecide(tc.input(l, now))
			if err != nil {
				t.Fatal(err)
			}
			l.Learn(obs)
			if diff := cmp.Diff(tc.want, l, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ledger after Learn (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBackOff(t *testing.T) {
	cases := map[string]struct {
		base time.Duration
		want []time.Duration // waits after each failed start, in order
	}{
		"doubles from the base up to BackoffMax": {base: 10 * time.Second, want: []time.Duration{
			10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 320 * time.Second,
			BackoffMax, BackoffMax, BackoffMax}},
		"a base beyond BackoffMax waits BackoffMax": {base: time.Hour, want: []time.Duration{BackoffMax, BackoffMax}},
		"many failures do not overflow": {base: time.Second, want: []time.Duration{
			1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second,
			64 * time.Second, 128 * time.Second, 256 * time.Second, 512 * time.Second, BackoffMax, BackoffMax, BackoffMax,
			BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax,
			BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax,
			BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax,
			BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax,
			BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax,
			BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax,
			BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax, BackoffMax}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			l := NewLedger()
			uid := uidOf("a")
			var got []time.Duration
			for i := range tc.want {
				at := now.Add(time.Duration(i) * time.Hour)
				until := l.BackOff(uid, tc.base, at)
				got = append(got, until.Sub(at))
				if b := l.Backoff[uid]; b.Until != until || b.Failures != i+1 {
					t.Fatalf("failure %d: ledger holds %+v, want until %s after %d failures", i+1, b, until, i+1)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("waits (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecided(t *testing.T) {
	since := ago(5 * time.Minute)
	jobs := []*cvlabv1alpha1.CvlabJob{newJob("a", 4), newJob("b", 4), newJob("c", 4)}
	l := NewLedger()
	l.Reserved[uidOf("a")] = Reservation{Node: "n1", Since: since} // kept on n1
	l.Reserved[uidOf("b")] = Reservation{Node: "n1", Since: since} // moves to n2
	l.Reserved[uidOf("c")] = Reservation{Node: "n1", Since: since} // no longer reserved
	l.Head, l.HeadSince = keyOf("a"), since
	obs, _, _, err := observeDecide(Input{Jobs: jobs, Nodes: oneNode(), Settings: DefaultSettings(), Ledger: l, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	d := queue.Decision{Head: keyOf("c"), HeadSince: ago(time.Minute), Reserved: map[string]string{
		keyOf("a"): "n1", keyOf("b"): "n2", keyOf("gone"): "n1"}}
	l.Decided(obs, d, now)

	want := NewLedger()
	want.Reserved[uidOf("a")] = Reservation{Node: "n1", Since: since}
	want.Reserved[uidOf("b")] = Reservation{Node: "n2", Since: now}
	want.Head, want.HeadSince = keyOf("c"), ago(time.Minute)
	if diff := cmp.Diff(want, l, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("ledger after Decided (-want +got):\n%s", diff)
	}

	// A reservation kept on the same node ages: past ReservationTimeout the next snapshot drops it.
	later := since.Add(ReservationTimeout + time.Second)
	if snap := obs.Snapshot(later); snap.Reserved[keyOf("a")] != "" || snap.Reserved[keyOf("b")] != "n2" {
		t.Errorf("snapshot at %s reserves %v; want a's reservation (since %s) dropped and b's kept", later, snap.Reserved, since)
	}
}

func TestFromStatus(t *testing.T) {
	backoffUntil := now.Add(2 * time.Minute)
	headSince := ago(3 * time.Minute)
	withStatus := func(name string, st cvlabv1alpha1.CvlabJobStatus) *cvlabv1alpha1.CvlabJob {
		j := newJob(name, 2)
		j.Status = st
		return j
	}
	jobs := []*cvlabv1alpha1.CvlabJob{
		withStatus("a", cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseQueued, Admissions: 1,
			WaitingReason: cvlabv1alpha1.WaitingBackingOff, BackoffUntil: ptr.To(metav1.NewTime(backoffUntil))}),
		withStatus("b", cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseQueued,
			WaitingReason: cvlabv1alpha1.WaitingReserved, ReservedNode: "n2"}),
		// A reservation left over in the status of a job that holds its GPUs is not one.
		withStatus("c", cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseRunning, Admissions: 1, PodName: "c-1",
			Node: "n1", ReservedNode: "n3"}),
		withStatus("d", cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseAdmitted, Admissions: 2, PodName: "d-2", Node: "n2"}),
		withStatus("e", cvlabv1alpha1.CvlabJobStatus{Phase: cvlabv1alpha1.PhaseSucceeded, Admissions: 1, Node: "n1"}),
	}
	pub := Published{Settings: DefaultSettings(), Head: keyOf("b"), HeadSince: headSince}
	l := FromStatus(jobs, pub, now)

	want := NewLedger()
	want.Backoff[uidOf("a")] = Backoff{Until: backoffUntil, Failures: 1}
	want.Reserved[uidOf("b")] = Reservation{Node: "n2", Since: now, Idle: true} // it may have been made on idle jobs
	want.Expected[uidOf("c")] = Expectation{Pod: "c-1", Node: "n1", Since: now}
	want.Expected[uidOf("d")] = Expectation{Pod: "d-2", Node: "n2", Since: now}
	want.Head, want.HeadSince = keyOf("b"), headSince
	if diff := cmp.Diff(want, l, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("FromStatus (-want +got):\n%s", diff)
	}

	// A reader who cannot list pods (no pods) sees the jobs as the operator's status tells.
	nodes := []corev1.Node{newNode("n1", 4, true), newNode("n2", 4, true)}
	obs, snap, d, err := observeDecide(Input{Jobs: jobs, Nodes: nodes, Settings: pub.Settings, Ledger: l, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	got := summarize(obs, snap, d)
	wantJobs := map[string]jobOutcome{
		"a": {Phase: cvlabv1alpha1.PhaseQueued, Wait: queue.BackingOff},
		"b": {Phase: cvlabv1alpha1.PhaseQueued, Admit: true, AdmitOn: "n2"},
		"c": {Phase: cvlabv1alpha1.PhaseRunning, Node: "n1"},
		"d": {Phase: cvlabv1alpha1.PhaseAdmitted, Node: "n2"},
		"e": {Phase: cvlabv1alpha1.PhaseSucceeded},
	}
	if diff := cmp.Diff(wantJobs, got.Jobs); diff != "" {
		t.Errorf("observe → decide from the status (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{keyOf("b"): "n2"}, got.Reserved); diff != "" {
		t.Errorf("snapshot's reservations (-want +got):\n%s", diff)
	}
}
