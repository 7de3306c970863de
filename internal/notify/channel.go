package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// Channel delivers messages one way. Send makes one attempt; the Dispatcher retries.
type Channel interface {
	// Name is the channel label of cvlab_notifications_total: email, slack, mattermost, webhook.
	Name() string
	Send(ctx context.Context, m Message) error
}

// personal is a channel that reaches one user, if their contact has an address for it.
type personal interface {
	Channel
	reaches(Contact) bool
}

// Slack posts to a Slack incoming webhook, mentioning the user by member ID.
type slackChannel struct {
	url    string
	client *http.Client
	r      *renderer
}

func (c *slackChannel) Name() string            { return "slack" }
func (c *slackChannel) reaches(ct Contact) bool { return ct.Slack != "" }
func (c *slackChannel) Send(ctx context.Context, m Message) error {
	text, err := c.r.text(c.r.slack, view{Message: m, Mention: "<@" + slackEscape(m.Contact.Slack) + "> "})
	if err != nil {
		return err
	}
	return postJSON(ctx, c.client, c.url, map[string]string{"text": text})
}

// mattermostChannel posts to a Mattermost incoming webhook, mentioning the user by username.
type mattermostChannel struct {
	url, username string
	client        *http.Client
	r             *renderer
}

func (c *mattermostChannel) Name() string            { return "mattermost" }
func (c *mattermostChannel) reaches(ct Contact) bool { return ct.Mattermost != "" }
func (c *mattermostChannel) Send(ctx context.Context, m Message) error {
	text, err := c.r.text(c.r.mattermost, view{Message: m, Mention: "@" + m.Contact.Mattermost + " "})
	if err != nil {
		return err
	}
	body := map[string]string{"text": text}
	if c.username != "" {
		body["username"] = c.username
	}
	return postJSON(ctx, c.client, c.url, body)
}

// postJSON makes one POST of body as JSON; any answer but 2xx is an error.
func postJSON(ctx context.Context, client *http.Client, url string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
