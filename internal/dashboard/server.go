package dashboard

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Server serves a Handler on an address. It is a controller-runtime manager Runnable that runs on
// every replica, leader or not: the dashboard only reads the snapshot of the local decision loop.
type Server struct {
	// Address to listen on, such as ":5336" or "127.0.0.1:0".
	Address string
	Handler http.Handler
	Log     logr.Logger

	mu       sync.Mutex
	listener net.Listener
}

// NewServer returns a Server for handler on address.
func NewServer(address string, handler http.Handler, log logr.Logger) *Server {
	return &Server{Address: address, Handler: handler, Log: log}
}

// Listen binds the address now (Start does it otherwise), so that a caller learns the port of
// ":0" or a bind error before starting.
func (s *Server) Listen() (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		l, err := net.Listen("tcp", s.Address)
		if err != nil {
			return nil, err
		}
		s.listener = l
	}
	return s.listener.Addr(), nil
}

// NeedLeaderElection is false: every replica serves the dashboard.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx ends, then closes open connections (event streams end with ctx).
func (s *Server) Start(ctx context.Context) error {
	addr, err := s.Listen()
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           s.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// Requests, event streams included, end with ctx.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	s.Log.Info("serving the queue dashboard", "address", addr.String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.listener) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
