package notify

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	mail "github.com/wneessen/go-mail"
)

// SMTPConfig is how to reach the lab's mail server.
type SMTPConfig struct {
	// URL is smtp://host[:port] (port 587 by default; STARTTLS per StartTLS) or smtps://host[:port]
	// (TLS from the first byte, port 465 by default).
	URL string
	// From is the sender, such as "cvlab-queue <queue@lab.example>".
	From string
	// Username and Password authenticate (from --smtp-secret); empty: no authentication.
	Username, Password string
	// StartTLS is the smtp:// STARTTLS policy: "mandatory" (default: never send in clear),
	// "opportunistic" (use it when offered) or "none" (a local catcher).
	StartTLS string
	// TLS overrides the TLS settings (tests trust their own CA); nil: system roots, ServerName host.
	TLS *tls.Config
	// Timeout bounds one connection (default 30s).
	Timeout time.Duration
}

// emailChannel sends each message as one multipart (text and HTML) email.
type emailChannel struct {
	cfg    SMTPConfig
	host   string
	port   int
	ssl    bool
	policy mail.TLSPolicy
	r      *renderer
}

func newEmailChannel(cfg SMTPConfig, r *renderer) (*emailChannel, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("--smtp-url: %w", err)
	}
	c := &emailChannel{cfg: cfg, host: u.Hostname(), r: r}
	switch u.Scheme {
	case "smtp":
		c.port = 587
	case "smtps":
		c.port, c.ssl = 465, true
	default:
		return nil, fmt.Errorf("--smtp-url %q: the scheme is smtp:// or smtps://", cfg.URL)
	}
	if c.host == "" {
		return nil, fmt.Errorf("--smtp-url %q has no host", cfg.URL)
	}
	if p := u.Port(); p != "" {
		if c.port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("--smtp-url %q: port: %w", cfg.URL, err)
		}
	}
	switch cfg.StartTLS {
	case "", "mandatory":
		c.policy = mail.TLSMandatory
	case "opportunistic":
		c.policy = mail.TLSOpportunistic
	case "none":
		c.policy = mail.NoTLS
	default:
		return nil, fmt.Errorf("--smtp-starttls %q: mandatory, opportunistic or none", cfg.StartTLS)
	}
	if cfg.From == "" {
		return nil, fmt.Errorf("--smtp-from is needed to send email")
	}
	if err := mail.NewMsg().From(cfg.From); err != nil {
		return nil, fmt.Errorf("--smtp-from %q: %w", cfg.From, err)
	}
	return c, nil
}

func (c *emailChannel) Name() string            { return "email" }
func (c *emailChannel) reaches(ct Contact) bool { return ct.Email != "" }

// Send makes one SMTP connection for m.
func (c *emailChannel) Send(ctx context.Context, m Message) error {
	msg := mail.NewMsg()
	if err := msg.From(c.cfg.From); err != nil {
		return err
	}
	if err := msg.To(m.Contact.Email); err != nil {
		return fmt.Errorf("address of %s: %w", m.User, err)
	}
	msg.Subject(m.Subject)
	msg.SetMessageID()
	msg.SetDate()
	msg.SetBodyString(mail.TypeTextPlain, m.Text)
	html, err := c.r.htmlPart(m)
	if err != nil {
		return err
	}
	msg.AddAlternativeString(mail.TypeTextHTML, html)

	timeout := c.cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	tlsConf := c.cfg.TLS
	if tlsConf == nil {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tlsConf = tlsConf.Clone()
	if tlsConf.ServerName == "" {
		tlsConf.ServerName = c.host
	}
	opts := []mail.Option{mail.WithPort(c.port), mail.WithTimeout(timeout), mail.WithTLSConfig(tlsConf),
		mail.WithTLSPolicy(c.policy)}
	if c.ssl {
		opts = append(opts, mail.WithSSL())
	}
	if c.cfg.Username != "" {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover),
			mail.WithUsername(c.cfg.Username), mail.WithPassword(c.cfg.Password))
	}
	client, err := mail.NewClient(c.host, opts...)
	if err != nil {
		return err
	}
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("mail to %s via %s: %w", m.User, net.JoinHostPort(c.host, strconv.Itoa(c.port)), err)
	}
	return nil
}
