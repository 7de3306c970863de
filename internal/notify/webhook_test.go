package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
)

func TestWebhookDelivery(t *testing.T) {
	cases := map[string]struct {
		failFirst    int32 // answers 500 to the first attempts
		attempts     int
		wantDelivery bool
		wantAttempts int32
	}{
		"delivered at once":           {failFirst: 0, attempts: 5, wantDelivery: true, wantAttempts: 1},
		"delivered after two retries": {failFirst: 2, attempts: 5, wantDelivery: true, wantAttempts: 3},
		"given up after the attempts": {failFirst: 100, attempts: 3, wantDelivery: false, wantAttempts: 3},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var calls atomic.Int32
			got := make(chan Preemption, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Content-Type") != "application/json" {
					t.Errorf("content type %q", r.Header.Get("Content-Type"))
				}
				if calls.Add(1) <= tc.failFirst {
					w.WriteHeader(http.StatusInternalServerError)
					return
				}
				b, _ := io.ReadAll(r.Body)
				var p Preemption
				if err := json.Unmarshal(b, &p); err != nil {
					t.Errorf("body is no JSON preemption: %v: %s", err, b)
				}
				got <- p
			}))
			defer srv.Close()

			w := NewWebhook(srv.URL, logr.Discard())
			w.Attempts, w.Backoff = tc.attempts, time.Millisecond
			want := Preemption{Text: "alice/train was evicted for bob/a", Kind: "Preemption",
				Victim: JobRef{Namespace: "lab", Name: "train", User: "alice", UserGPUs: "3"}, Preemptor: JobRef{Namespace: "lab", Name: "a", User: "bob", UserGPUs: "1"},
				Node: "n1", Reason: "bob's 1st GPU outranks your 3rd", Time: time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)}
			err := w.send(context.Background(), want)
			if tc.wantDelivery {
				if err != nil {
					t.Fatalf("send: %v", err)
				}
				if diff := cmp.Diff(want, <-got); diff != "" {
					t.Errorf("delivered body (-want +got):\n%s", diff)
				}
			} else if err == nil {
				t.Errorf("send succeeded against a failing server")
			}
			if n := calls.Load(); n != tc.wantAttempts {
				t.Errorf("attempts = %d, want %d", n, tc.wantAttempts)
			}
		})
	}
}

// Notify never blocks the caller, even when nothing sends.
func TestNotifyNeverBlocks(t *testing.T) {
	w := NewWebhook("http://127.0.0.1:1", logr.Discard())
	done := make(chan struct{})
	go func() {
		for range cap(w.queue) + 10 {
			w.Notify(Preemption{Text: "x"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Notify blocked with a full queue")
	}
	if len(w.queue) != cap(w.queue) {
		t.Errorf("queue holds %d, want it full (%d)", len(w.queue), cap(w.queue))
	}
}
