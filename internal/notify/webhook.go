package notify

import (
	"bytes"
	"context"
	"net/http"
	"time"
)

// WebhookBody is the JSON posted to --notify-webhook, one per event. `text` is a Slack-escaped
// sentence, so the body is also a valid Slack or Mattermost incoming-webhook message; the other
// fields are for programs. Compatible with the earlier preemption webhook: `victim` is the job
// (also in `job`), `preemptor`, `node`, `reason` and `time` keep their names; `kind` is now one
// of the Kinds ("Preempted" for a preemption) and `reason` a typed word, the sentence being `detail`.
type WebhookBody struct {
	Text           string     `json:"text"`
	Key            string     `json:"key"`
	Kind           Kind       `json:"kind"`
	Job            JobRef     `json:"job"`
	Victim         JobRef     `json:"victim"`
	Preemptor      *JobRef    `json:"preemptor,omitempty"`
	Node           string     `json:"node,omitempty"`
	Reason         string     `json:"reason"`
	Detail         string     `json:"detail,omitempty"`
	Time           time.Time  `json:"time"`
	QueuePosition  int32      `json:"queuePosition,omitempty"`
	ExitCode       *int32     `json:"exitCode,omitempty"`
	Pod            string     `json:"pod,omitempty"`
	IdleSince      *time.Time `json:"idleSince,omitempty"`
	NextAction     string     `json:"nextAction,omitempty"`
	NextAt         *time.Time `json:"nextAt,omitempty"`
	WaitedSeconds  int64      `json:"waitedSeconds,omitempty"`
	TimeoutSeconds int64      `json:"timeoutSeconds,omitempty"`
}

// webhookChannel posts every event of every user to the lab's generic webhook, one POST per event:
// programs want events, not digests, so it is neither grouped nor rate limited.
type webhookChannel struct {
	url    string
	client *http.Client
	r      *renderer
}

func (c *webhookChannel) Name() string { return "webhook" }

// Send posts each event of m (the Dispatcher gives it one at a time); the text names the owner.
func (c *webhookChannel) Send(ctx context.Context, m Message) error {
	for _, e := range m.Events() {
		var text bytes.Buffer
		if err := c.r.slack.ExecuteTemplate(&text, "lab-event", e); err != nil {
			return err
		}
		if err := postJSON(ctx, c.client, c.url, webhookBody(e, text.String())); err != nil {
			return err
		}
	}
	return nil
}

func webhookBody(e Event, text string) WebhookBody {
	b := WebhookBody{Text: text, Key: e.Key, Kind: e.Kind, Job: e.Job, Victim: e.Job, Preemptor: e.Preemptor,
		Node: e.Node, Reason: e.Reason, Detail: e.Detail, Time: e.At, QueuePosition: e.QueuePosition,
		ExitCode: e.ExitCode, Pod: e.Pod, NextAction: e.NextAction,
		WaitedSeconds: int64(e.Waited / time.Second), TimeoutSeconds: int64(e.Timeout / time.Second)}
	if !e.IdleSince.IsZero() {
		b.IdleSince = &e.IdleSince
	}
	if !e.NextAt.IsZero() {
		b.NextAt = &e.NextAt
	}
	return b
}
