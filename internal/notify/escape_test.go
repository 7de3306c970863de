package notify

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

// User-controlled text (user names, job names, the operator's sentences that quote them) is shown
// as written: it cannot add markup to the HTML mail, mention anyone or link anywhere in chat.
func TestHostileTextEscaped(t *testing.T) {
	hostile := map[string]string{
		"script":         "<script>alert(1)</script>",
		"slack mention":  "<@U999|x>",
		"slack channel":  "<!channel>",
		"at channel":     "@channel",
		"markdown link":  "[x](http://evil)",
		"ampersand":      "a&b",
		"html attribute": `"><img src=x onerror=alert(1)>`,
	}
	for name, text := range hostile {
		t.Run(name, func(t *testing.T) {
			lab["evil"] = Contact{Email: "evil@lab.example", Slack: "UEVIL", Mattermost: "evil"}
			defer delete(lab, "evil")
			h := newHarness(t, nil)
			h.start()
			job := JobRef{Namespace: "lab", Name: text, User: "evil"}
			h.offer(Event{Key: "uid-1.Preempted.1", Kind: KindPreempted, Reason: "Preempted", Job: job, At: t0,
				Detail: "because " + text, Node: text, Preemptor: &JobRef{Namespace: "lab", Name: text, User: text}})
			h.at(time.Minute, "delivered", func() bool {
				return len(h.smtp.Messages()) == 1 && len(h.slack.Bodies()) == 1 && len(h.mattermost.Bodies()) == 1 && len(h.webhook.Bodies()) == 1
			})

			// Email: the text part shows it as written, the HTML part escaped.
			m := h.smtp.Messages()[0]
			if !strings.Contains(m.Text, "because "+text) {
				t.Errorf("text part does not show %q as written:\n%s", text, m.Text)
			}
			if strings.Contains(m.HTML, text) && strings.ContainsAny(text, `<>&"`) {
				t.Errorf("HTML part holds %q unescaped:\n%s", text, m.HTML)
			}
			for _, bad := range []string{"<script", "<img", "<@U999"} {
				if strings.Contains(m.HTML, bad) {
					t.Errorf("HTML part holds %q:\n%s", bad, m.HTML)
				}
			}

			// Slack: no raw <, > or & from user text (mentions and links are <...>); only the
			// owner's mention and the dashboard link are markup.
			for _, s := range []string{h.slack.Texts()[0], h.webhook.Texts()[0]} {
				rest := strings.TrimPrefix(s, "<@UEVIL> ")
				rest = strings.Replace(rest, "<https://dash.lab.example/?user=evil|Dashboard>", "", 1)
				if strings.ContainsAny(strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(rest, "&amp;", ""), "&lt;", ""), "&gt;", ""), "<>&") {
					t.Errorf("Slack text has unescaped markup:\n%s", s)
				}
			}

			// Mattermost: Markdown specials escaped, mentions and links broken. Inline code spans
			// (the commands) are shown literally and trigger no mention, so they are left out.
			mm := h.mattermost.Texts()[0]
			rest := withoutEscaped(withoutCodeSpans(strings.TrimPrefix(mm, "@evil ")))
			rest = strings.Replace(rest, "[Dashboard](https://dash.lab.example/?user=evil)", "", 1)
			for _, bad := range []string{"@channel", "[x](", "](http", "http://", "<script", "<@U999", "<!channel"} {
				if strings.Contains(rest, bad) {
					t.Errorf("Mattermost text holds %q:\n%s", bad, mm)
				}
			}
		})
	}
}

// Escapers, one table each.
func TestEscapers(t *testing.T) {
	slack := map[string]string{
		"<@U999|x>":        "&lt;@U999|x&gt;",
		"a&b":              "a&amp;b",
		"&lt;":             "&amp;lt;",
		"plain words 1-2.": "plain words 1-2.",
	}
	for in, want := range slack {
		if got := slackEscape(in); got != want {
			t.Errorf("slackEscape(%q) = %q, want %q", in, got, want)
		}
	}
	md := map[string]string{
		"[x](http://evil)": `\[x\]\(http:` + "\u2060" + `//evil\)`,
		"@channel":         "@\u2060channel",
		"*bold* _it_":      `\*bold\* \_it\_`,
		"train-3":          `train\-3`,
		`back\slash`:       `back\\slash`,
	}
	for in, want := range md {
		if got := markdownEscape(in); got != want {
			t.Errorf("markdownEscape(%q) = %q, want %q", in, got, want)
		}
	}
}

// STARTTLS with the lab's certificate and authentication; a mandatory STARTTLS policy refuses a
// server without TLS.
func TestEmailSTARTTLS(t *testing.T) {
	serverTLS, pool := selfSigned(t)
	cases := map[string]struct {
		serverTLS *tls.Config
		policy    string
		delivered bool
	}{
		"mandatory, offered":     {serverTLS: serverTLS, policy: "mandatory", delivered: true},
		"opportunistic, offered": {serverTLS: serverTLS, policy: "opportunistic", delivered: true},
		"mandatory, not offered": {serverTLS: nil, policy: "mandatory", delivered: false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			srv := startSMTP(t, "", tc.serverTLS)
			h := newHarness(t, func(c *Config) {
				c.SMTP = &SMTPConfig{URL: "smtp://" + srv.Addr, From: "queue@lab.example", StartTLS: tc.policy,
					Username: "queue", Password: "secret", TLS: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
				c.Attempts = 1
				c.SlackWebhookURL, c.MattermostWebhookURL, c.WebhookURL = "", "", ""
			})
			failed := metric("email", KindSucceeded, resultFailed)
			h.start()
			h.offer(Event{Key: "uid-1.Succeeded.1", Kind: KindSucceeded, Job: train, At: t0})
			if tc.delivered {
				h.at(time.Minute, "delivered", func() bool { return len(srv.Messages()) == 1 })
				if m := srv.Messages()[0]; m.Authenticated != "queue" || m.To != "alice@lab.example" {
					t.Errorf("delivered as %q to %q", m.Authenticated, m.To)
				}
				return
			}
			h.at(time.Minute, "given up", func() bool { return metric("email", KindSucceeded, resultFailed)-failed == 1 })
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("%d messages sent in clear", n)
			}
		})
	}
}

// Bad settings are refused when the Dispatcher is built, not when the first mail fails.
func TestConfigErrors(t *testing.T) {
	store := &ConfigMapStore{}
	cases := map[string]Config{
		"no channel":   {Store: store},
		"no store":     {WebhookURL: "http://x"},
		"bad scheme":   {Store: store, SMTP: &SMTPConfig{URL: "http://mail", From: "q@lab.example"}},
		"no host":      {Store: store, SMTP: &SMTPConfig{URL: "smtp://", From: "q@lab.example"}},
		"no sender":    {Store: store, SMTP: &SMTPConfig{URL: "smtp://mail"}},
		"bad sender":   {Store: store, SMTP: &SMTPConfig{URL: "smtp://mail", From: "not an address"}},
		"bad starttls": {Store: store, SMTP: &SMTPConfig{URL: "smtp://mail", From: "q@lab.example", StartTLS: "maybe"}},
		"bad port":     {Store: store, SMTP: &SMTPConfig{URL: "smtp://mail:x", From: "q@lab.example"}},
	}
	for name, cfg := range cases {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

// withoutCodeSpans drops `...` spans, whose content Markdown shows literally.
func withoutCodeSpans(s string) string {
	parts := strings.Split(s, "`")
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 0 {
			b.WriteString(p)
		}
	}
	return b.String()
}

// withoutEscaped drops backslash-escaped characters, which Markdown shows as written.
func withoutEscaped(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
