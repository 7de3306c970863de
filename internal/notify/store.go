package notify

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SentLog is what a Store remembers: which events were delivered (or given up on) and when, and
// since when notifications exist at all.
type SentLog struct {
	// Since is when notifications were first enabled: transitions before it are history, not news.
	Since time.Time
	// Sent maps an event key to when its deliveries ended.
	Sent map[string]time.Time
}

// Store keeps the SentLog across restarts of the manager, so that a restart neither re-sends
// what was sent nor forgets what was due (what was due is recomputed from the jobs' status).
type Store interface {
	// Load reads the log; it sets Since on the very first call.
	Load(ctx context.Context) (SentLog, error)
	// Record adds keys as sent at `at`.
	Record(ctx context.Context, keys []string, at time.Time) error
}

// DefaultStoreName is the ConfigMap that holds the sent log, in the operator's namespace.
const DefaultStoreName = "cvlab-queue-notifications"

// sinceKey is the data key of SentLog.Since; event keys contain dots, so it cannot collide.
const sinceKey = "since"

// ConfigMapStore keeps the SentLog in a ConfigMap: data key = event key, value = RFC 3339 time it
// was sent, plus `since`. The bookkeeping lives there, not in the jobs' spec or status: it is the
// notifier's memory, not the job's state. Writes are updates carrying the resourceVersion that was
// read, retried on conflict, so that two writers never lose each other's keys.
type ConfigMapStore struct {
	Client    client.Client
	Namespace string
	Name      string
	// Retention is how long a sent key is kept (default 7 days); older ones are pruned on write.
	// Events older than that are never offered again (the Dispatcher ignores them), so a pruned
	// key cannot be re-sent.
	Retention time.Duration
	// Clock sets `since` on the first Load (default the real clock).
	Clock clock.PassiveClock
}

// writeRetry retries conflicting writes (another writer updated the ConfigMap since it was read).
var writeRetry = wait.Backoff{Steps: 10, Duration: 10 * time.Millisecond, Factor: 2, Jitter: 0.1}

// DefaultRetention is how long sent keys are remembered.
const DefaultRetention = 7 * 24 * time.Hour

func (s *ConfigMapStore) retention() time.Duration {
	if s.Retention > 0 {
		return s.Retention
	}
	return DefaultRetention
}

func (s *ConfigMapStore) key() client.ObjectKey {
	name := s.Name
	if name == "" {
		name = DefaultStoreName
	}
	return client.ObjectKey{Namespace: s.Namespace, Name: name}
}

// Load reads the ConfigMap, creating it (or adding `since`) when absent. Values it cannot read
// are skipped: a damaged entry costs at most one duplicate message.
func (s *ConfigMapStore) Load(ctx context.Context) (SentLog, error) {
	clk := s.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	var log SentLog
	err := retry.RetryOnConflict(writeRetry, func() error {
		cm := &corev1.ConfigMap{}
		err := s.Client.Get(ctx, s.key(), cm)
		if apierrors.IsNotFound(err) {
			now := clk.Now().UTC().Truncate(time.Second)
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: s.key().Namespace, Name: s.key().Name,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "cvlab-queue"}},
				Data: map[string]string{sinceKey: now.Format(time.RFC3339)}}
			if err := s.Client.Create(ctx, cm); err != nil {
				if apierrors.IsAlreadyExists(err) {
					return apierrors.NewConflict(corev1.Resource("configmaps"), cm.Name, err)
				}
				return err
			}
			log = SentLog{Since: now, Sent: map[string]time.Time{}}
			return nil
		}
		if err != nil {
			return err
		}
		log = parseLog(cm.Data)
		if log.Since.IsZero() {
			log.Since = clk.Now().UTC().Truncate(time.Second)
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			cm.Data[sinceKey] = log.Since.Format(time.RFC3339)
			return s.Client.Update(ctx, cm)
		}
		return nil
	})
	if err != nil {
		return SentLog{}, fmt.Errorf("loading the notification log %s: %w", s.key(), err)
	}
	return log, nil
}

// Record adds keys and prunes the entries older than the retention, in one update.
func (s *ConfigMapStore) Record(ctx context.Context, keys []string, at time.Time) error {
	if len(keys) == 0 {
		return nil
	}
	value := at.UTC().Format(time.RFC3339)
	cutoff := at.Add(-s.retention())
	err := retry.RetryOnConflict(writeRetry, func() error {
		cm := &corev1.ConfigMap{}
		if err := s.Client.Get(ctx, s.key(), cm); err != nil {
			return err
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		for k, v := range cm.Data {
			if t, err := time.Parse(time.RFC3339, v); k != sinceKey && (err != nil || t.Before(cutoff)) {
				delete(cm.Data, k)
			}
		}
		for _, k := range keys {
			cm.Data[k] = value
		}
		return s.Client.Update(ctx, cm)
	})
	if err != nil {
		return fmt.Errorf("recording %d sent notifications in %s: %w", len(keys), s.key(), err)
	}
	return nil
}

func parseLog(data map[string]string) SentLog {
	log := SentLog{Sent: make(map[string]time.Time, len(data))}
	for k, v := range data {
		t, err := time.Parse(time.RFC3339, v)
		switch {
		case err != nil:
		case k == sinceKey:
			log.Since = t
		default:
			log.Sent[k] = t
		}
	}
	return log
}
