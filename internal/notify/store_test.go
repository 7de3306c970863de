package notify

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestConfigMapStoreLoad(t *testing.T) {
	cases := map[string]struct {
		existing  map[string]string // nil: no ConfigMap
		wantSince time.Time
		wantSent  map[string]time.Time
	}{
		"first start creates it": {existing: nil, wantSince: t0, wantSent: map[string]time.Time{}},
		"since kept": {existing: map[string]string{"since": "2026-11-01T00:00:00Z", "u.Failed.1": "2026-12-01T10:00:00Z"},
			wantSince: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
			wantSent:  map[string]time.Time{"u.Failed.1": time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}},
		"since added, damaged entry skipped": {existing: map[string]string{"u.Failed.1": "yesterday"},
			wantSince: t0, wantSent: map[string]time.Time{}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			b := fake.NewClientBuilder()
			if tc.existing != nil {
				b = b.WithObjects(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: DefaultStoreName}, Data: tc.existing})
			}
			c := b.Build()
			s := &ConfigMapStore{Client: c, Namespace: "ops", Clock: clocktesting.NewFakeClock(t0)}
			got, err := s.Load(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(SentLog{Since: tc.wantSince, Sent: tc.wantSent}, got); diff != "" {
				t.Errorf("log (-want +got):\n%s", diff)
			}
			// Since is written: a later start (an hour on) sees the same.
			s.Clock = clocktesting.NewFakeClock(t0.Add(time.Hour))
			again, err := s.Load(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !again.Since.Equal(tc.wantSince) {
				t.Errorf("second Load: since %v, want %v", again.Since, tc.wantSince)
			}
		})
	}
}

// Record adds keys, prunes those past the retention, and two writers never lose each other's keys.
func TestConfigMapStoreRecord(t *testing.T) {
	c := fake.NewClientBuilder().WithObjects(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: DefaultStoreName},
		Data: map[string]string{"since": "2026-11-01T00:00:00Z", "old.Failed.1": "2026-11-20T00:00:00Z", "recent.Failed.1": "2026-12-06T00:00:00Z"}}).Build()
	s := &ConfigMapStore{Client: c, Namespace: "ops"}
	if err := s.Record(t.Context(), []string{"a.Failed.1"}, t0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			other := &ConfigMapStore{Client: c, Namespace: "ops"}
			if err := other.Record(t.Context(), []string{fmt.Sprintf("w%d.Started.1", i)}, t0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	cm := &corev1.ConfigMap{}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: "ops", Name: DefaultStoreName}, cm); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"since": "2026-11-01T00:00:00Z", "recent.Failed.1": "2026-12-06T00:00:00Z", "a.Failed.1": "2026-12-07T09:00:00Z"}
	for i := range 8 {
		want[fmt.Sprintf("w%d.Started.1", i)] = "2026-12-07T09:00:00Z"
	}
	if diff := cmp.Diff(want, cm.Data); diff != "" {
		t.Errorf("data (-want +got):\n%s", diff)
	}
}
