// Package notify tells job owners about preemptions through a webhook, without ever blocking the
// queue's decision loop.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
)

// JobRef names a job and its owner.
type JobRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	User      string `json:"user"`
	// UserGPUs are the owner's GPU ordinals the job covered, such as "3" or "2-3".
	UserGPUs string `json:"userGPUs"`
}

// Preemption is the JSON body posted for one evicted job. `text` makes it a valid Slack (and
// Mattermost) incoming-webhook message; the other fields are for programs.
type Preemption struct {
	Text      string    `json:"text"`
	Kind      string    `json:"kind"` // always "Preemption"
	Victim    JobRef    `json:"victim"`
	Preemptor JobRef    `json:"preemptor"`
	Node      string    `json:"node,omitempty"`
	Reason    string    `json:"reason"`
	Time      time.Time `json:"time"`
}

// Notifier is what the queue calls; Notify must not block.
type Notifier interface {
	Notify(Preemption)
}

// Webhook posts each notification as JSON to URL from its own goroutine, retrying failures with
// exponential backoff. It is a manager Runnable: Start runs the sender until the context ends.
type Webhook struct {
	URL    string
	Client *http.Client
	// Attempts is how many times a notification is tried (default 5); Backoff the wait before
	// the second try, doubled each time (default 1s).
	Attempts int
	Backoff  time.Duration
	Log      logr.Logger

	queue chan Preemption
}

// NewWebhook makes a webhook notifier with room for 1024 pending notifications.
func NewWebhook(url string, log logr.Logger) *Webhook {
	return &Webhook{URL: url, Client: &http.Client{Timeout: 10 * time.Second}, Attempts: 5, Backoff: time.Second,
		Log: log, queue: make(chan Preemption, 1024)}
}

// Notify queues a notification; when the queue is full it is dropped and logged, never waited for.
func (w *Webhook) Notify(p Preemption) {
	select {
	case w.queue <- p:
	default:
		w.Log.Info("notification queue full, dropping", "victim", p.Victim.Namespace+"/"+p.Victim.Name)
	}
}

// Start sends queued notifications until ctx ends.
func (w *Webhook) Start(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case p := <-w.queue:
			if err := w.send(ctx, p); err != nil {
				w.Log.Error(err, "notification not delivered", "victim", p.Victim.Namespace+"/"+p.Victim.Name)
			}
		}
	}
}

func (w *Webhook) send(ctx context.Context, p Preemption) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	wait := w.Backoff
	var last error
	for attempt := 1; attempt <= max(w.Attempts, 1); attempt++ {
		if attempt > 1 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
		}
		if last = w.post(ctx, body); last == nil {
			return nil
		}
	}
	return fmt.Errorf("after %d attempts: %w", max(w.Attempts, 1), last)
}

func (w *Webhook) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
