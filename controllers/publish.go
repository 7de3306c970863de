package controllers

import (
	"context"
	"maps"
	"sync"
	"time"

	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// publisher writes what the operator decides with (its settings, the head of the line and since
// when) into the ConfigMap observe.PublishedName of its namespace, so that `kubectl cvlab why`
// reads it with a user's rights instead of guessing the operator's flags. The decision loop hands
// it the latest value; it writes in the background (one server-side apply, only when the value
// changed), newest value first, retried until it lands: a decision never waits for it.
type publisher struct {
	client    client.Client
	namespace string

	mu      sync.Mutex
	latest  observe.Published
	written map[string]string
	kick    chan struct{}
}

// newPublisher starts from the operator's settings with no head of the line yet: they are
// published at start even when nothing asks for a decision (no job, pod or node to watch), and
// the zero value, which would say the queue has no GPUs, is never written.
func newPublisher(c client.Client, namespace string, settings observe.Settings) *publisher {
	return &publisher{client: c, namespace: namespace, latest: observe.Published{Settings: settings}, kick: make(chan struct{}, 1)}
}

// set hands over the value of a decision.
func (p *publisher) set(v observe.Published) {
	p.mu.Lock()
	p.latest = v
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// run writes until ctx ends (a manager Runnable: on the leader only).
func (p *publisher) run(ctx context.Context) error {
	retry := time.NewTimer(0)
	defer retry.Stop()
	delay, failing := time.Second, false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.kick:
			if failing {
				continue // the retry timer writes the newest value
			}
		case <-retry.C:
		}
		p.mu.Lock()
		data := p.latest.Data()
		p.mu.Unlock()
		if p.written != nil && maps.Equal(data, p.written) {
			continue
		}
		cm := corev1ac.ConfigMap(observe.PublishedName, p.namespace).
			WithLabels(map[string]string{"app.kubernetes.io/name": "cvlab-queue"}).WithData(data)
		if err := p.client.Apply(ctx, cm, FieldOwner, client.ForceOwnership); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Retried with a growing delay (a namespace that does not exist, as when the manager runs
			// outside the cluster, is not worth a request every second).
			delay, failing = min(2*delay, time.Minute), true
			log.FromContext(ctx).V(1).Info("publishing the queue's settings failed; retrying", "in", delay, "error", err.Error())
			retry.Reset(delay)
			continue
		}
		delay, failing = time.Second, false
		p.written = data
	}
}
