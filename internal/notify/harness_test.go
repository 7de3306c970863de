package notify

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// t0 is the fake clock's start in every test.
var t0 = time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)

// received is one message the SMTP server received, decoded.
type received struct {
	From, To, Subject string
	Text, HTML        string
	Authenticated     string // the user name it authenticated as
}

// smtpServer is a real SMTP server (go-smtp) on a local port that keeps what it receives.
type smtpServer struct {
	Addr     string
	server   *smtp.Server
	mu       sync.Mutex
	messages []received
}

// startSMTP serves SMTP on addr ("" any free port); with tlsConf it offers STARTTLS and PLAIN auth.
func startSMTP(t *testing.T, addr string, tlsConf *tls.Config) *smtpServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpServer{Addr: l.Addr().String()}
	s.server = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &smtpSession{s: s}, nil }))
	s.server.Domain = "localhost"
	s.server.TLSConfig = tlsConf
	go func() { _ = s.server.Serve(l) }()
	t.Cleanup(func() { _ = s.server.Close() })
	return s
}

func (s *smtpServer) Messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.messages...)
}

type smtpSession struct {
	s        *smtpServer
	from, to string
	user     string
}

func (x *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (x *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if pass != "secret" {
			return errors.New("bad password")
		}
		x.user = user
		return nil
	}), nil
}
func (x *smtpSession) Mail(from string, _ *smtp.MailOptions) error { x.from = from; return nil }
func (x *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error   { x.to = to; return nil }
func (x *smtpSession) Reset()                                      {}
func (x *smtpSession) Logout() error                               { return nil }
func (x *smtpSession) Data(r io.Reader) error {
	m, err := decodeMail(r)
	if err != nil {
		return err
	}
	m.From, m.To, m.Authenticated = x.from, x.to, x.user
	x.s.mu.Lock()
	x.s.messages = append(x.s.messages, m)
	x.s.mu.Unlock()
	return nil
}

// decodeMail reads the subject and the text and HTML parts of a multipart/alternative message.
func decodeMail(r io.Reader) (received, error) {
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return received{}, err
	}
	var m received
	if m.Subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		return m, err
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return m, err
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return m, nil
		}
		if err != nil {
			return m, err
		}
		b, err := io.ReadAll(p) // multipart.Reader decodes quoted-printable parts itself
		if err != nil {
			return m, err
		}
		switch ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct {
		case "text/plain":
			m.Text = string(b)
		case "text/html":
			m.HTML = string(b)
		}
	}
}

// hook is an httptest receiver of JSON posts.
type hook struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
}

func startHook(t *testing.T) *hook {
	h := &hook{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		var body map[string]any
		if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&body) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		h.bodies = append(h.bodies, body)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) Bodies() []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.bodies...)
}

func (h *hook) Texts() []string {
	var texts []string
	for _, b := range h.Bodies() {
		texts = append(texts, b["text"].(string))
	}
	return texts
}

// lab is the directory of the tests: alice and bob reachable everywhere, nobody nowhere.
var lab = map[string]Contact{
	"alice": {Email: "alice@lab.example", Slack: "UALICE", Mattermost: "alice"},
	"bob":   {Email: "bob@lab.example", Slack: "UBOB", Mattermost: "bob"},
}

func labContacts(user string) (Contact, bool) {
	c, ok := lab[user]
	return c, ok
}

// harness runs a Dispatcher against a real SMTP server, three webhook receivers and a
// ConfigMapStore on a fake API client, on a fake clock.
type harness struct {
	t          *testing.T
	clock      *clocktesting.FakeClock
	smtp       *smtpServer
	slack      *hook
	mattermost *hook
	webhook    *hook
	store      *ConfigMapStore
	d          *Dispatcher
	cancel     context.CancelFunc
	done       chan struct{}
}

// newHarness builds the receivers and a Dispatcher; change cfg with edit before it is built.
func newHarness(t *testing.T, edit func(*Config)) *harness {
	h := &harness{t: t, clock: clocktesting.NewFakeClock(t0), smtp: startSMTP(t, "", nil),
		slack: startHook(t), mattermost: startHook(t), webhook: startHook(t)}
	h.store = &ConfigMapStore{Client: fake.NewClientBuilder().Build(), Namespace: "cvlab-system", Name: DefaultStoreName, Clock: h.clock}
	h.d = h.newDispatcher(edit)
	return h
}

func (h *harness) newDispatcher(edit func(*Config)) *Dispatcher {
	cfg := Config{
		SMTP:                 &SMTPConfig{URL: "smtp://" + h.smtp.Addr, From: "cvlab-queue <queue@lab.example>", StartTLS: "none"},
		SlackWebhookURL:      h.slack.URL,
		MattermostWebhookURL: h.mattermost.URL,
		WebhookURL:           h.webhook.URL,
		DashboardURL:         "https://dash.lab.example/",
		Location:             time.UTC,
		Backoff:              10 * time.Second,
		Store:                h.store,
		Contacts:             labContacts,
		Clock:                h.clock,
		Log:                  testr.New(h.t),
	}
	if edit != nil {
		edit(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

// start runs the Dispatcher until the test ends (or stop).
func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		_ = h.d.Start(ctx)
	}()
	h.t.Cleanup(h.stop)
	eventually(h.t, "the sent log is loaded", func() bool { return !h.d.Since().IsZero() })
}

func (h *harness) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel = nil
	}
}

// offer offers events and waits until the Dispatcher has taken them in.
func (h *harness) offer(events ...Event) {
	h.d.Offer(events...)
	eventually(h.t, "the offered events are taken", func() bool {
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		return len(h.d.inbox) == 0
	})
}

// at moves the fake clock to t0+d (never back) until cond holds: timers due by then fire.
func (h *harness) at(d time.Duration, what string, cond func() bool) {
	h.t.Helper()
	target := t0.Add(d)
	eventually(h.t, what, func() bool {
		if h.clock.Now().Before(target) {
			h.clock.SetTime(target)
		} else {
			h.clock.SetTime(h.clock.Now()) // fires timers that came due meanwhile
		}
		return cond()
	})
}

// stepUntil moves the fake clock a second at a time until cond holds: retries with backoff run.
func (h *harness) stepUntil(what string, cond func() bool) {
	h.t.Helper()
	eventually(h.t, what, func() bool {
		h.clock.Step(time.Second)
		return cond()
	})
}

// eventually polls cond until it holds, failing after 20 s of real time.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not synchronisation
	}
}

// metric reads cvlab_notifications_total{channel,kind,result}.
func metric(channel string, kind Kind, result string) float64 {
	return testutil.ToFloat64(metricNotifications.WithLabelValues(channel, string(kind), result))
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "smtp.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

// missing reports the wanted substrings missing from s.
func missing(s string, want ...string) []string {
	var miss []string
	for _, w := range want {
		if !strings.Contains(s, w) {
			miss = append(miss, w)
		}
	}
	return miss
}

// holdListener accepts connections and never answers (a stuck server), or closes them at once
// (a broken one).
type holdListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func netListen(addr string, closeAtOnce bool) (*holdListener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	h := &holdListener{Listener: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			if closeAtOnce {
				_ = c.Close()
			}
		}
	}()
	return h, nil
}

func (h *holdListener) accepted() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

func (h *holdListener) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		_ = c.Close()
	}
	return h.Listener.Close()
}
