// Command mailcatcher is the local cluster's mail server (hack/local-cluster.sh): it accepts every
// message over SMTP, delivers none, keeps the last ones in memory and shows them in a small web
// inbox, so that the operator's notifications can be read during a demo. /api/messages lists them
// as JSON for tests. It is not a mail server for anything else: no authentication, no TLS, no
// relaying, loopback only by default.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"k8s.io/utils/clock"

	"github.com/epfl-cvlab/cvlab-queue/internal/mailcatcher"
)

func main() {
	smtpAddr := flag.String("smtp-addr", "127.0.0.1:1025", "address of the SMTP server")
	httpAddr := flag.String("http-addr", "127.0.0.1:8025", "address of the web inbox and /api/messages")
	keep := flag.Int("keep", 200, "how many messages to keep (the oldest go first)")
	store := flag.String("store", "", "a file that keeps the inbox across restarts (JSON lines); empty: memory only")
	flag.Parse()
	if err := run(*smtpAddr, *httpAddr, *keep, *store); err != nil {
		log.Fatal(err)
	}
}

func run(smtpAddr, httpAddr string, keep int, store string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := mailcatcher.NewCatcher(keep, clock.RealClock{})
	if store != "" {
		if err := c.Keep(store); err != nil {
			return err
		}
	}

	sl, err := net.Listen("tcp", smtpAddr)
	if err != nil {
		return err
	}
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return err
	}
	s := c.SMTPServer()
	h := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	errs := make(chan error, 2)
	go func() { errs <- s.Serve(sl) }()
	go func() { errs <- h.Serve(hl) }()
	log.Printf("mailcatcher: SMTP on %s, inbox on http://%s/", sl.Addr(), hl.Addr())
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	_ = s.Close()
	_ = h.Close()
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
