package notify

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func ptr[T any](v T) *T { return &v }

var (
	train = JobRef{Namespace: "lab", Name: "train", User: "alice", UserGPUs: "3"}
	bobA  = JobRef{Namespace: "lab", Name: "a", User: "bob", UserGPUs: "1"}
)

// Each kind reaches its owner once on every channel, with the job, what happened, why and the next
// step, and the lab webhook gets it as JSON.
func TestEachKindDeliveredOnce(t *testing.T) {
	cases := map[string]struct {
		event       Event
		subject     string
		want        []string // in the email's text part
		wantWebhook map[string]any
	}{
		"preempted by a job": {
			event: Event{Kind: KindPreempted, Reason: "Preempted", Detail: "bob's 1st GPU outranks your 3rd",
				Preemptor: &bobA, Node: "n1", QueuePosition: 4},
			subject: "cvlab-queue: your job lab/train was preempted",
			want: []string{"Hello alice,", "Your job lab/train was preempted:",
				"- lab/train on node n1 was preempted for bob's job lab/a.",
				"Why: bob's 1st GPU outranks your 3rd",
				"It is back in the queue at position 4 and restarts by itself when its turn comes.",
				"Details: kubectl cvlab why -n lab train", "Dashboard: https://dash.lab.example/?user=alice"},
			wantWebhook: map[string]any{"kind": "Preempted", "reason": "Preempted", "node": "n1",
				"victim":    map[string]any{"namespace": "lab", "name": "train", "user": "alice", "userGPUs": "3"},
				"job":       map[string]any{"namespace": "lab", "name": "train", "user": "alice", "userGPUs": "3"},
				"preemptor": map[string]any{"namespace": "lab", "name": "a", "user": "bob", "userGPUs": "1"}},
		},
		"idle GPUs reclaimed": {
			event:   Event{Kind: KindPreempted, Reason: "IdleReclaimed", Node: "n1", IdleSince: t0.Add(-3 * time.Hour), QueuePosition: 2},
			subject: "cvlab-queue: your job lab/train was preempted",
			want: []string{"- lab/train on node n1 was stopped: its GPUs were idle since Mon 7 Dec 06:00 UTC (3h) and a waiting job took them.",
				"It is back in the queue at position 2 and restarts by itself"},
			wantWebhook: map[string]any{"kind": "Preempted", "reason": "IdleReclaimed", "idleSince": "2026-12-07T06:00:00Z"},
		},
		"idle job suspended": {
			event:   Event{Kind: KindPreempted, Reason: "IdleSuspended", Node: "n1", IdleSince: t0.Add(-3 * time.Hour), NextAt: t0.Add(time.Hour)},
			subject: "cvlab-queue: your job lab/train was preempted",
			want: []string{"- lab/train on node n1 was suspended: its GPUs were idle since Mon 7 Dec 06:00 UTC (3h).",
				"It is back in the queue, held back until Mon 7 Dec 10:00 UTC, then restarts by itself when its turn comes."},
			wantWebhook: map[string]any{"kind": "Preempted", "reason": "IdleSuspended"},
		},
		"GPUs idle": {
			event: Event{Kind: KindGPUIdle, Reason: "Idle", Node: "n1", IdleSince: t0.Add(-time.Hour), IdlePercent: 10,
				NextAction: "Reclaim", NextAt: t0.Add(30 * time.Minute)},
			subject: "cvlab-queue: your job lab/train is idle on its GPUs",
			want: []string{"- The GPUs of lab/train on node n1 are idle (below 10% use) since Mon 7 Dec 08:00 UTC (1h).",
				"Unless they get busy, they will be given to a waiting job at Mon 7 Dec 09:30 UTC: your job is then stopped and put back in the queue.",
				"Use the GPUs, or stop the job to free them: kubectl delete cvlabjob -n lab train"},
			wantWebhook: map[string]any{"kind": "GPUIdle", "reason": "Idle", "nextAction": "Reclaim", "nextAt": "2026-12-07T09:30:00Z"},
		},
		"GPUs idle, suspend next": {
			event: Event{Kind: KindGPUIdle, Reason: "Idle", IdleSince: t0.Add(-2 * time.Hour), IdlePercent: 5,
				NextAction: "Suspend", NextAt: t0.Add(time.Hour)},
			subject: "cvlab-queue: your job lab/train is idle on its GPUs",
			want: []string{"are idle (below 5% use) since Mon 7 Dec 07:00 UTC (2h).",
				"Unless they get busy, your job will be stopped at Mon 7 Dec 10:00 UTC and held back in the queue for a while."},
			wantWebhook: map[string]any{"kind": "GPUIdle", "nextAction": "Suspend"},
		},
		"failed": {
			event:   Event{Kind: KindFailed, Reason: "Failed", ExitCode: ptr(int32(137)), Pod: "train-x7k2p", Node: "n2"},
			subject: "cvlab-queue: your job lab/train failed",
			want: []string{"- lab/train failed with exit code 137 on node n2.",
				"Its last log lines: kubectl logs -n lab train-x7k2p --tail=50"},
			wantWebhook: map[string]any{"kind": "Failed", "reason": "Failed", "exitCode": 137.0, "pod": "train-x7k2p"},
		},
		"timeout reached": {
			event:       Event{Kind: KindFailed, Reason: "DeadlineExceeded", Timeout: 24 * time.Hour, Pod: "train-x7k2p"},
			subject:     "cvlab-queue: your job lab/train failed",
			want:        []string{"- lab/train was stopped: it reached its timeout of 24h."},
			wantWebhook: map[string]any{"kind": "Failed", "reason": "DeadlineExceeded", "timeoutSeconds": 86400.0},
		},
		"deadline soon": {
			event:       Event{Kind: KindDeadlineSoon, NextAt: t0.Add(2 * time.Hour), Timeout: 24 * time.Hour},
			subject:     "cvlab-queue: your job lab/train reaches its timeout soon",
			want:        []string{"- lab/train stops at Mon 7 Dec 11:00 UTC, when its timeout of 24h ends.", "Save its work before then"},
			wantWebhook: map[string]any{"kind": "DeadlineSoon", "nextAt": "2026-12-07T11:00:00Z"},
		},
		"started after a wait": {
			event:   Event{Kind: KindStarted, Node: "n1", Waited: 5*time.Hour + 30*time.Minute, Pod: "train-2"},
			subject: "cvlab-queue: your job lab/train started",
			want: []string{"- lab/train started on node n1 after waiting 5h30m.",
				"Follow it: kubectl cvlab logs -n lab train -f"},
			wantWebhook: map[string]any{"kind": "Started", "waitedSeconds": 19800.0},
		},
		"succeeded": {
			event:       Event{Kind: KindSucceeded},
			subject:     "cvlab-queue: your job lab/train succeeded",
			want:        []string{"- lab/train succeeded.", "Details: kubectl cvlab why -n lab train"},
			wantWebhook: map[string]any{"kind": "Succeeded"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.start()
			e := tc.event
			e.Key, e.Job, e.At = "uid-1."+string(e.Kind)+".1", train, t0
			sentBefore := metric("email", e.Kind, resultSent)
			h.offer(e)
			delivered := func() bool {
				return len(h.smtp.Messages()) == 1 && len(h.slack.Bodies()) == 1 && len(h.mattermost.Bodies()) == 1 && len(h.webhook.Bodies()) == 1
			}
			h.at(DefaultGroupWindow, "delivered on every channel", delivered)

			m := h.smtp.Messages()[0]
			if m.To != "alice@lab.example" || m.Subject != tc.subject {
				t.Errorf("mail to %q subject %q, want alice@lab.example %q", m.To, m.Subject, tc.subject)
			}
			if miss := missing(m.Text, tc.want...); len(miss) > 0 {
				t.Errorf("text part lacks %q:\n%s", miss, m.Text)
			}
			if miss := missing(m.HTML, "<code>kubectl cvlab why -n lab train</code>", `href="https://dash.lab.example/?user=alice"`); len(miss) > 0 {
				t.Errorf("HTML part lacks %q:\n%s", miss, m.HTML)
			}
			if s := h.slack.Texts()[0]; !strings.HasPrefix(s, "<@UALICE> *Your job lab/train") || !strings.Contains(s, "`kubectl cvlab why -n lab train`") {
				t.Errorf("slack text:\n%s", s)
			}
			if s := h.mattermost.Texts()[0]; !strings.HasPrefix(s, "@alice **Your job lab/train") {
				t.Errorf("mattermost text:\n%s", s)
			}
			body := h.webhook.Bodies()[0]
			got := map[string]any{}
			for k := range tc.wantWebhook {
				got[k] = body[k]
			}
			if diff := cmp.Diff(tc.wantWebhook, got); diff != "" {
				t.Errorf("webhook body (-want +got):\n%s", diff)
			}
			if body["key"] != e.Key || body["time"] != "2026-12-07T09:00:00Z" || !strings.HasPrefix(body["text"].(string), "alice: ") {
				t.Errorf("webhook body %v", body)
			}
			eventually(t, "the delivery is counted", func() bool { return metric("email", e.Kind, resultSent)-sentBefore == 1 })

			// Offered again (the controller re-offers what is due): not sent again. A later event
			// of the same user shows that the next message holds only it.
			later := Event{Key: "uid-2.Succeeded.1", Kind: KindSucceeded, Job: JobRef{Namespace: "lab", Name: "later", User: "alice"}, At: t0.Add(time.Hour)}
			h.at(time.Hour, "time passes", func() bool { return true })
			h.offer(e, later)
			h.at(time.Hour+DefaultGroupWindow, "the later event delivered", func() bool { return len(h.smtp.Messages()) == 2 && len(h.webhook.Bodies()) == 2 })
			if m := h.smtp.Messages()[1]; m.Subject != "cvlab-queue: your job lab/later succeeded" || strings.Contains(m.Text, "lab/train") {
				t.Errorf("second mail repeats the first event: %q\n%s", m.Subject, m.Text)
			}
			if k := h.webhook.Bodies()[1]["key"]; k != later.Key {
				t.Errorf("webhook got %v again", k)
			}
		})
	}
}

// Events of one user within the group window make one message per channel, grouped by kind; other
// users get their own; the lab webhook gets one post per event.
func TestGrouping(t *testing.T) {
	h := newHarness(t, nil)
	h.start()
	var events []Event
	for i, name := range []string{"train", "eval", "sweep"} {
		events = append(events, Event{Key: fmt.Sprintf("uid-%d.Preempted.1", i), Kind: KindPreempted, Reason: "Preempted",
			Job: JobRef{Namespace: "lab", Name: name, User: "alice"}, At: t0.Add(time.Duration(i) * time.Second),
			Preemptor: &bobA, QueuePosition: int32(i + 1)})
	}
	h.offer(events[0])
	h.at(30*time.Second, "half the window", func() bool { return true })
	h.offer(events[1:]...)
	h.offer(Event{Key: "uid-9.Failed.1", Kind: KindFailed, Reason: "Failed", Job: JobRef{Namespace: "lab", Name: "x", User: "alice"}, At: t0},
		Event{Key: "uid-8.Preempted.1", Kind: KindPreempted, Reason: "Preempted", Job: JobRef{Namespace: "lab", Name: "b", User: "bob"}, At: t0})
	// The window opened by alice's first event closes at 1m, bob's (opened at 30s) at 1m30s.
	h.at(DefaultGroupWindow, "alice's message", func() bool { return len(h.smtp.Messages()) == 1 && len(h.slack.Bodies()) == 1 })
	eventually(t, "one webhook post per event", func() bool { return len(h.webhook.Bodies()) == 5 })
	h.at(90*time.Second, "bob's message", func() bool { return len(h.smtp.Messages()) == 2 })
	msgs := h.smtp.Messages()
	alice, bob := msgs[0], msgs[1]
	if alice.To != "alice@lab.example" || alice.Subject != "cvlab-queue: 4 notifications about your jobs" {
		t.Errorf("alice's mail: %q %q", alice.To, alice.Subject)
	}
	if miss := missing(alice.Text, "3 of your jobs were preempted:", "- lab/train was preempted", "- lab/eval was preempted",
		"- lab/sweep was preempted", "Your job lab/x failed:"); len(miss) > 0 {
		t.Errorf("alice's mail lacks %q:\n%s", miss, alice.Text)
	}
	if strings.Index(alice.Text, "preempted:") > strings.Index(alice.Text, "failed:") {
		t.Errorf("kinds out of order:\n%s", alice.Text)
	}
	if bob.To != "bob@lab.example" || bob.Subject != "cvlab-queue: your job lab/b was preempted" || strings.Contains(bob.Text, "lab/train") {
		t.Errorf("bob's mail: %q %q\n%s", bob.To, bob.Subject, bob.Text)
	}
	if s := h.slack.Texts()[0]; !strings.Contains(s, "*3 of your jobs were preempted*") {
		t.Errorf("slack digest:\n%s", s)
	}
}

// Beyond the per-user limit, events wait and go out as one digest when the budget refills.
func TestRateLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.UserLimit, c.UserPeriod = 2, time.Hour })
	h.start()
	ev := func(i int, at time.Duration) Event {
		return Event{Key: fmt.Sprintf("uid-%d.Failed.1", i), Kind: KindFailed, Reason: "Failed",
			Job: JobRef{Namespace: "lab", Name: fmt.Sprintf("job-%d", i), User: "alice"}, At: t0.Add(at)}
	}
	h.offer(ev(1, 0))
	h.at(time.Minute, "1st message", func() bool { return len(h.smtp.Messages()) == 1 })
	h.offer(ev(2, time.Minute))
	h.at(2*time.Minute, "2nd message", func() bool { return len(h.smtp.Messages()) == 2 })
	// The budget (2 per hour) is spent: these wait for a token, one every 30 minutes.
	h.offer(ev(3, 2*time.Minute), ev(4, 2*time.Minute))
	h.at(3*time.Minute, "the window closes", func() bool { return true })
	h.offer(ev(5, 3*time.Minute))
	h.at(30*time.Minute-time.Second, "just before the refill", func() bool { return true })
	if n := len(h.smtp.Messages()); n != 2 {
		t.Fatalf("%d messages before the budget refilled, want 2", n)
	}
	// The first token is back 30 minutes after the first message (sent at 1m): at 31m.
	h.at(31*time.Minute, "the digest", func() bool { return len(h.smtp.Messages()) == 3 })
	d := h.smtp.Messages()[2]
	if d.Subject != "cvlab-queue: 3 of your jobs failed" {
		t.Errorf("digest subject %q", d.Subject)
	}
	if miss := missing(d.Text, "lab/job-3", "lab/job-4", "lab/job-5"); len(miss) > 0 {
		t.Errorf("digest lacks %q:\n%s", miss, d.Text)
	}
	eventually(t, "one webhook post per event: it is not rate limited", func() bool { return len(h.webhook.Bodies()) == 5 })
}

// A new Dispatcher on the same Store sends neither what the old one sent nor forgets what it
// had been offered but not sent (the controller offers it again).
func TestRestartWithoutDuplicates(t *testing.T) {
	h := newHarness(t, nil)
	h.start()
	sent := Event{Key: "uid-1.Preempted.1", Kind: KindPreempted, Reason: "Preempted", Job: train, At: t0}
	h.offer(sent)
	h.at(time.Minute, "delivered", func() bool { return len(h.smtp.Messages()) == 1 && len(h.webhook.Bodies()) == 1 })
	// Both deliveries recorded (the owner's and the lab webhook's): a stop between a delivery
	// and its record sends it once more, by design (at least once).
	eventually(t, "recorded", func() bool {
		log, err := h.store.Load(t.Context())
		return err == nil && !log.Sent[sent.Key].IsZero() && !log.Sent[labKey(sent.Key)].IsZero()
	})
	pending := Event{Key: "uid-2.Failed.1", Kind: KindFailed, Reason: "Failed", Job: JobRef{Namespace: "lab", Name: "eval", User: "alice"}, At: t0.Add(time.Minute)}
	h.offer(pending) // its window is still open when the manager stops
	// The lab webhook, which does not wait for a window, has it, recorded.
	eventually(t, "the lab webhook's post of the pending event recorded", func() bool {
		log, err := h.store.Load(t.Context())
		return err == nil && !log.Sent[labKey(pending.Key)].IsZero()
	})
	h.stop()

	h.d = h.newDispatcher(nil)
	// The controller offers what is due before the new Dispatcher has loaded the log.
	h.d.Offer(sent, pending)
	h.start()
	h.offer()
	h.at(3*time.Minute, "the pending event delivered", func() bool { return len(h.smtp.Messages()) == 2 && len(h.webhook.Bodies()) == 2 })
	m := h.smtp.Messages()[1]
	if m.Subject != "cvlab-queue: your job lab/eval failed" || strings.Contains(m.Text, "lab/train") {
		t.Errorf("after the restart: %q\n%s", m.Subject, m.Text)
	}
	if since := h.d.Since(); !since.Equal(t0) {
		t.Errorf("Since() = %v, want the first start %v", since, t0)
	}
}

// Transitions from before notifications were enabled are history: never sent.
func TestHistoryNotSent(t *testing.T) {
	h := newHarness(t, nil)
	h.start()
	old := Event{Key: "uid-1.Failed.1", Kind: KindFailed, Reason: "Failed", Job: train, At: t0.Add(-time.Hour)}
	now := Event{Key: "uid-2.Failed.1", Kind: KindFailed, Reason: "Failed", Job: JobRef{Namespace: "lab", Name: "new", User: "alice"}, At: t0}
	h.offer(old, now)
	h.at(time.Minute, "delivered", func() bool { return len(h.smtp.Messages()) == 1 && len(h.webhook.Bodies()) == 1 })
	if m := h.smtp.Messages()[0]; strings.Contains(m.Text, "lab/train") {
		t.Errorf("an event from before Since was sent:\n%s", m.Text)
	}
}

// A server that is down costs failed deliveries (retried, then given up); once up, mail goes out.
func TestMailServerDownThenUp(t *testing.T) {
	down, err := netListen("127.0.0.1:0", true) // closes every connection at once: a broken server
	if err != nil {
		t.Fatal(err)
	}
	addr := down.Addr().String()
	h := newHarness(t, func(c *Config) {
		c.SMTP.URL = "smtp://" + addr
		c.Attempts = 3
		c.SlackWebhookURL, c.MattermostWebhookURL = "", ""
	})
	h.start()
	failedBefore, sentBefore := metric("email", KindFailed, resultFailed), metric("email", KindFailed, resultSent)
	ev := func(i int, at time.Duration) Event {
		return Event{Key: fmt.Sprintf("uid-%d.Failed.1", i), Kind: KindFailed, Reason: "Failed",
			Job: JobRef{Namespace: "lab", Name: fmt.Sprintf("job-%d", i), User: "alice"}, At: t0.Add(at)}
	}
	h.offer(ev(1, 0))
	h.at(time.Minute, "the window closes", func() bool { return down.accepted() == 1 })
	h.stepUntil("given up", func() bool { return metric("email", KindFailed, resultFailed)-failedBefore == 1 })
	if n := down.accepted(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	eventually(t, "the given-up key recorded", func() bool {
		log, err := h.store.Load(t.Context())
		return err == nil && !log.Sent["uid-1.Failed.1"].IsZero()
	})

	// Down for the first attempt, up before the second.
	h.offer(ev(2, h.clock.Now().Sub(t0)))
	h.at(h.clock.Now().Sub(t0)+time.Minute, "the first attempt fails", func() bool { return down.accepted() == 4 })
	_ = down.Close()
	up := startSMTP(t, addr, nil)
	h.stepUntil("delivered on retry", func() bool { return len(up.Messages()) == 1 })
	eventually(t, "the delivery is counted", func() bool { return metric("email", KindFailed, resultSent)-sentBefore == 1 })
	if got := metric("email", KindFailed, resultFailed) - failedBefore; got != 1 {
		t.Errorf("failed metric grew by %v, want 1", got)
	}
	if m := up.Messages()[0]; !strings.Contains(m.Text, "lab/job-2") || strings.Contains(m.Text, "lab/job-1") {
		t.Errorf("after the outage:\n%s", m.Text)
	}
	eventually(t, "one webhook post per event", func() bool { return len(h.webhook.Bodies()) == 2 })
}

// A mail server that accepts connections and never answers delays neither chat nor the webhook.
func TestStuckMailServerDelaysNothingElse(t *testing.T) {
	hold, err := netListen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	h := newHarness(t, func(c *Config) { c.SMTP.URL, c.SMTP.Timeout = "smtp://"+hold.Addr().String(), 3*time.Second })
	h.start()
	h.offer(Event{Key: "uid-1.Failed.1", Kind: KindFailed, Reason: "Failed", Job: train, At: t0})
	h.at(time.Minute, "chat and webhook delivered", func() bool {
		return len(h.slack.Bodies()) == 1 && len(h.mattermost.Bodies()) == 1 && len(h.webhook.Bodies()) == 1
	})
	if n := hold.accepted(); n != 1 {
		t.Errorf("the mail server got %d connections, want 1 (stuck)", n)
	}
}

// A user without contact is not messaged: counted, and the caller is told.
func TestNoContact(t *testing.T) {
	var told []string
	h := newHarness(t, func(c *Config) { c.NoContact = func(e Event) { told = append(told, e.Key) } })
	h.start()
	before := metric("slack", KindFailed, resultNoContact)
	h.offer(Event{Key: "uid-1.Failed.1", Kind: KindFailed, Reason: "Failed", Job: JobRef{Namespace: "lab", Name: "x", User: "carol"}, At: t0})
	h.at(time.Minute, "counted", func() bool { return metric("slack", KindFailed, resultNoContact)-before == 1 })
	eventually(t, "recorded", func() bool {
		log, err := h.store.Load(t.Context())
		return err == nil && !log.Sent["uid-1.Failed.1"].IsZero()
	})
	if len(h.smtp.Messages())+len(h.slack.Bodies())+len(h.mattermost.Bodies()) != 0 {
		t.Errorf("carol has no contact but was messaged")
	}
	eventually(t, "the lab webhook gets every event, even of users without contact", func() bool { return len(h.webhook.Bodies()) == 1 })
	if diff := cmp.Diff([]string{"uid-1.Failed.1"}, told); diff != "" {
		t.Errorf("NoContact calls (-want +got):\n%s", diff)
	}
}

// Offer returns at once whatever happens downstream; beyond the buffer, events are dropped and
// counted, and offered again later they are taken.
func TestOfferNeverBlocks(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Buffer = 2 })
	before := metric("email", KindSucceeded, resultDropped)
	var events []Event
	for i := range 5 {
		events = append(events, Event{Key: fmt.Sprintf("uid-%d.Succeeded.1", i), Kind: KindSucceeded, Job: train, At: t0})
	}
	h.d.Offer(events...) // not started: nothing takes them in
	if got := metric("email", KindSucceeded, resultDropped) - before; got != 3 {
		t.Errorf("dropped %v, want 3", got)
	}
	h.start()
	for _, e := range events {
		h.offer(e)
	}
	h.at(time.Minute, "all delivered", func() bool { return len(h.webhook.Bodies()) == 5 && len(h.smtp.Messages()) == 1 })
}
