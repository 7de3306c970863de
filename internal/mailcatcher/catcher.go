// Package mailcatcher is a mail server for the local cluster and tests: it accepts every message
// over SMTP, delivers none, keeps the last ones in memory and shows them in a small web inbox and
// as JSON (/api/messages). cmd/mailcatcher serves it for make run-local.
package mailcatcher

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"k8s.io/utils/clock"
)

// Message is one caught message, decoded for reading.
type Message struct {
	ID       int       `json:"id"`
	Received time.Time `json:"received"`
	From     string    `json:"from"`            // the envelope sender
	To       []string  `json:"to"`              // the envelope recipients
	Subject  string    `json:"subject"`         // decoded
	Text     string    `json:"text"`            // the text/plain part
	HTML     string    `json:"html"`            // the text/html part
	Size     int       `json:"size"`            // bytes of the raw message
	Error    string    `json:"error,omitempty"` // why it could not be decoded
}

// Catcher keeps the last messages it received; it is the SMTP backend and the web inbox.
type Catcher struct {
	keep  int
	clock clock.PassiveClock

	mu       sync.Mutex
	next     int
	messages []Message // oldest first
	// path is the file that keeps the inbox across restarts (Keep); "" keeps it in memory only.
	path string
}

// NewCatcher keeps the last keep messages.
func NewCatcher(keep int, clk clock.PassiveClock) *Catcher {
	return &Catcher{keep: max(keep, 1), clock: clk, next: 1}
}

// SMTPServer is an SMTP server that hands every message to c.
func (c *Catcher) SMTPServer() *smtp.Server {
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{c: c}, nil }))
	s.Domain = "mailcatcher.local"
	s.MaxMessageBytes = 10 << 20
	s.ReadTimeout, s.WriteTimeout = time.Minute, time.Minute
	return s
}

// Messages lists what is kept, newest first.
func (c *Catcher) Messages() []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Message, len(c.messages))
	for i, m := range c.messages {
		out[len(out)-1-i] = m
	}
	return out
}

// Keep makes the inbox outlive the catcher: it reads the messages kept in path (JSON lines;
// none when the file does not exist yet), then writes the inbox there after each change, so
// that a restarted catcher shows the same messages, numbered on.
func (c *Catcher) Keep(path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		var m Message
		if len(bytes.TrimSpace(line)) == 0 || json.Unmarshal(line, &m) != nil {
			continue // a blank or torn line
		}
		c.messages = append(c.messages, m)
		c.next = max(c.next, m.ID+1)
	}
	c.trim()
	c.path = path
	return c.save()
}

func (c *Catcher) add(m Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m.ID, m.Received = c.next, c.clock.Now()
	c.next++
	c.messages = append(c.messages, m)
	c.trim()
	return c.save()
}

func (c *Catcher) clear() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.messages = nil
	return c.save()
}

// trim drops the oldest messages beyond keep.
func (c *Catcher) trim() {
	if over := len(c.messages) - c.keep; over > 0 {
		c.messages = append([]Message(nil), c.messages[over:]...)
	}
}

// save writes the inbox to its file, if it has one, whole (a new file renamed over the old one).
func (c *Catcher) save() error {
	if c.path == "" {
		return nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, m := range c.messages {
		if err := enc.Encode(m); err != nil {
			return err
		}
	}
	tmp := c.path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, c.path)
}

// session takes one SMTP transaction at a time.
type session struct {
	c    *Catcher
	from string
	to   []string
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error   { s.to = append(s.to, to); return nil }
func (s *session) Reset()                                      { s.from, s.to = "", nil }
func (s *session) Logout() error                               { return nil }
func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := decode(raw)
	m.From, m.To = s.from, s.to
	return s.c.add(m)
}

// decode reads the subject and the first text/plain and text/html parts, however nested.
func decode(raw []byte) Message {
	m := Message{Size: len(raw)}
	msg, err := mail.ReadMessage(strings.NewReader(string(raw)))
	if err != nil {
		m.Error, m.Text = err.Error(), string(raw)
		return m
	}
	if s, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err == nil {
		m.Subject = s
	} else {
		m.Subject = msg.Header.Get("Subject")
	}
	if err := m.part(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body); err != nil {
		m.Error = err.Error()
	}
	return m
}

func (m *Message) part(contentType, encoding string, body io.Reader) error {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = "text/plain" // RFC 2045's default
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if err := m.part(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p); err != nil {
				return err
			}
		}
	}
	switch strings.ToLower(encoding) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, newlineDropper{body})
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	switch {
	case mt == "text/plain" && m.Text == "":
		m.Text = string(b)
	case mt == "text/html" && m.HTML == "":
		m.HTML = string(b)
	}
	return nil
}

// newlineDropper removes the line breaks of base64 bodies.
type newlineDropper struct{ r io.Reader }

func (n newlineDropper) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	j := 0
	for _, b := range p[:k] {
		if b != '\r' && b != '\n' {
			p[j] = b
			j++
		}
	}
	return j, err
}

// ServeHTTP serves the inbox (/), one message (/messages/ID), /api/messages (GET lists, DELETE
// empties) and /healthz.
func (c *Catcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/healthz":
		_, _ = io.WriteString(w, "ok\n")
	case r.URL.Path == "/api/messages" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(c.Messages())
	case r.URL.Path == "/api/messages" && r.Method == http.MethodDelete:
		if err := c.clear(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/" && r.Method == http.MethodGet:
		c.render(w, "inbox", c.Messages())
	case strings.HasPrefix(r.URL.Path, "/messages/") && r.Method == http.MethodGet:
		id, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/messages/"))
		for _, m := range c.Messages() {
			if m.ID == id {
				c.render(w, "message", m)
				return
			}
		}
		http.NotFound(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (c *Catcher) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// The HTML part is shown in a sandboxed iframe: no scripts, no forms, no same origin.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-src 'self'; img-src data:")
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"when": func(t time.Time) string { return t.Format("2006-01-02 15:04:05") },
	"join": strings.Join,
}).Parse(`
{{- define "head"}}<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.}}</title>
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd}pre{white-space:pre-wrap;background:#f6f6f6;padding:1em}
iframe{width:100%;height:22em;border:1px solid #ccc}.muted{color:#777}</style></head><body>{{end}}

{{- define "inbox"}}{{template "head" "Mail catcher"}}
<h1>Mail catcher <span class="muted">{{len .}} message{{if ne (len .) 1}}s{{end}}</span></h1>
<p class="muted">Every message sent to this SMTP server lands here; nothing is delivered. This page does not refresh by itself.</p>
<table id="messages"><thead><tr><th>Received</th><th>To</th><th>Subject</th></tr></thead><tbody>
{{- range .}}
<tr class="message"><td>{{when .Received}}</td><td class="to">{{join .To ", "}}</td><td class="subject"><a href="messages/{{.ID}}">{{if .Subject}}{{.Subject}}{{else}}(no subject){{end}}</a></td></tr>
{{- else}}
<tr><td colspan="3" class="muted">No mail yet.</td></tr>
{{- end}}
</tbody></table></body></html>
{{end}}

{{- define "message"}}{{template "head" .Subject}}
<p><a href="../">&larr; inbox</a></p>
<h1 id="subject">{{.Subject}}</h1>
<table><tr><th>From</th><td id="from">{{.From}}</td></tr><tr><th>To</th><td id="to">{{join .To ", "}}</td></tr>
<tr><th>Received</th><td>{{when .Received}}</td></tr></table>
{{- with .Error}}<p>Could not decode: {{.}}</p>{{end}}
{{- with .HTML}}<h2>HTML</h2>
<iframe id="html" sandbox="" srcdoc="{{.}}"></iframe>{{end}}
{{- with .Text}}<h2>Text</h2>
<pre id="text">{{.}}</pre>{{end}}
</body></html>
{{end}}`))
