package mailcatcher

import (
	"encoding/json"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	mail "github.com/wneessen/go-mail"
	clocktesting "k8s.io/utils/clock/testing"
)

// start serves a Catcher's SMTP and HTTP on free local ports.
func start(t *testing.T, keep int) (c *Catcher, smtpHost string, smtpPort int, web string) {
	c = NewCatcher(keep, clocktesting.NewFakePassiveClock(time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := c.SMTPServer()
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { _ = s.Close() })
	h := httptest.NewServer(c)
	t.Cleanup(h.Close)
	host, port, _ := net.SplitHostPort(l.Addr().String())
	p, _ := strconv.Atoi(port)
	return c, host, p, h.URL
}

// send sends one multipart message with a real SMTP client.
func send(t *testing.T, host string, port int, to, subject, text, htmlBody string) {
	t.Helper()
	m := mail.NewMsg()
	if err := m.From("queue@lab.example"); err != nil {
		t.Fatal(err)
	}
	if err := m.To(to); err != nil {
		t.Fatal(err)
	}
	m.Subject(subject)
	m.SetBodyString(mail.TypeTextPlain, text)
	if htmlBody != "" {
		m.AddAlternativeString(mail.TypeTextHTML, htmlBody)
	}
	client, err := mail.NewClient(host, mail.WithPort(port), mail.WithTLSPolicy(mail.NoTLS))
	if err != nil {
		t.Fatal(err)
	}
	if err := client.DialAndSend(m); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestCatchAndShow(t *testing.T) {
	c, host, port, web := start(t, 10)
	const hostileSubject = `cvlab-queue: <script>alert(1)</script> & "é"`
	send(t, host, port, "alice@lab.example", hostileSubject, "Hello alice,\nline two é", `<p>Hello <b>alice</b></p><script>alert(2)</script>`)
	send(t, host, port, "bob@lab.example", "plain only", "just text", "")

	_, body := get(t, web+"/api/messages")
	var got []Message
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("api: %v: %s", err, body)
	}
	want := []Message{
		{ID: 2, From: "queue@lab.example", To: []string{"bob@lab.example"}, Subject: "plain only", Text: "just text\r\n"},
		{ID: 1, From: "queue@lab.example", To: []string{"alice@lab.example"}, Subject: hostileSubject,
			Text: "Hello alice,\r\nline two é", HTML: `<p>Hello <b>alice</b></p><script>alert(2)</script>`},
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Message{}, "Received", "Size")); diff != "" {
		t.Errorf("api (-want +got):\n%s", diff)
	}
	if len(c.Messages()) != 2 {
		t.Errorf("kept %d", len(c.Messages()))
	}

	// The inbox lists both, newest first, the subject escaped.
	_, inbox := get(t, web+"/")
	if strings.Contains(inbox, "<script>") {
		t.Errorf("inbox holds a raw <script>:\n%s", inbox)
	}
	if i, j := strings.Index(inbox, "plain only"), strings.Index(inbox, "&lt;script&gt;"); i < 0 || j < 0 || i > j {
		t.Errorf("inbox does not list both, newest first:\n%s", inbox)
	}

	// One message: the HTML part only inside a sandboxed iframe's srcdoc (escaped), the text in <pre>.
	_, page := get(t, web+"/messages/1")
	if strings.Contains(page, "<script>") || strings.Contains(page, "<b>alice") {
		t.Errorf("message page holds the mail's markup outside the iframe:\n%s", page)
	}
	if !strings.Contains(page, `<iframe id="html" sandbox="" srcdoc="`+html.EscapeString(want[1].HTML)) {
		t.Errorf("no sandboxed iframe with the HTML part:\n%s", page)
	}
	if !strings.Contains(page, "<pre id=\"text\">Hello alice,\r\nline two é</pre>") {
		t.Errorf("no text part:\n%s", page)
	}
	if code, _ := get(t, web+"/messages/99"); code != http.StatusNotFound {
		t.Errorf("unknown message: %d", code)
	}

	// DELETE empties it.
	req, _ := http.NewRequest(http.MethodDelete, web+"/api/messages", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %v %v", resp, err)
	}
	if n := len(c.Messages()); n != 0 {
		t.Errorf("%d messages after DELETE", n)
	}
}

// Only the last messages are kept.
func TestKeepsTheLast(t *testing.T) {
	c, host, port, _ := start(t, 2)
	for _, s := range []string{"one", "two", "three"} {
		send(t, host, port, "alice@lab.example", s, s, "")
	}
	var subjects []string
	for _, m := range c.Messages() {
		subjects = append(subjects, m.Subject)
	}
	if diff := cmp.Diff([]string{"three", "two"}, subjects); diff != "" {
		t.Errorf("kept (-want +got):\n%s", diff)
	}
}

// A base64 single-part message and garbage are shown as well as can be.
func TestDecode(t *testing.T) {
	cases := map[string]struct {
		raw  string
		want Message
	}{
		"base64 text": {raw: "Subject: =?utf-8?q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\naGVs\r\nbG8=\r\n",
			want: Message{Subject: "café", Text: "hello"}},
		"no content type": {raw: "Subject: x\r\n\r\nbody\r\n", want: Message{Subject: "x", Text: "body\r\n"}},
		"not a message":   {raw: "garbage", want: Message{Text: "garbage", Error: "malformed header line: garbage"}},
	}
	for name, tc := range cases {
		got := decode([]byte(tc.raw))
		if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(Message{}, "Size", "Error")); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
		if (got.Error != "") != (tc.want.Error != "") {
			t.Errorf("%s: error %q", name, got.Error)
		}
	}
}

// TestKeep: a catcher given a file shows, after a restart, the inbox it had (the last keep
// messages), numbers new messages on, and empties the file with the inbox.
func TestKeep(t *testing.T) {
	path := t.TempDir() + "/mail.jsonl"
	c, host, port, _ := start(t, 2)
	if err := c.Keep(path); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"one", "two", "three"} {
		send(t, host, port, "alice@lab.example", s, "text "+s, "")
	}
	subjects := func(c *Catcher) []string {
		var out []string
		for _, m := range c.Messages() {
			out = append(out, strconv.Itoa(m.ID)+" "+m.Subject)
		}
		return out
	}

	again, host2, port2, web2 := start(t, 2)
	if err := again.Keep(path); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"3 three", "2 two"}, subjects(again)); diff != "" {
		t.Fatalf("after a restart (-want +got):\n%s", diff)
	}
	send(t, host2, port2, "bob@lab.example", "four", "text four", "")
	if diff := cmp.Diff([]string{"4 four", "3 three"}, subjects(again)); diff != "" {
		t.Errorf("numbered on (-want +got):\n%s", diff)
	}

	req, _ := http.NewRequest(http.MethodDelete, web2+"/api/messages", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	third := NewCatcher(2, clocktesting.NewFakePassiveClock(time.Now()))
	if err := third.Keep(path); err != nil {
		t.Fatal(err)
	}
	if got := third.Messages(); len(got) != 0 {
		t.Errorf("after DELETE and a restart: %d messages, want none", len(got))
	}
}
