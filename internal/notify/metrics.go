package notify

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Results of a notification on one channel, the `result` label of cvlab_notifications_total.
const (
	resultSent      = "sent"      // delivered
	resultFailed    = "failed"    // given up after all attempts
	resultDropped   = "dropped"   // not accepted: the Dispatcher's buffer was full
	resultNoContact = "nocontact" // the owner has no contact for any configured personal channel
)

// metricNotifications counts events, not messages: a digest of 3 preemptions sent by email adds 3
// to {channel="email",kind="Preempted",result="sent"}. Each event ends with one result per channel.
var metricNotifications = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "cvlab_notifications_total",
	Help: "Notifications (events) by channel (email, slack, mattermost, webhook), kind and result (sent; failed: given up after all attempts; dropped: buffer full; nocontact: the owner has no contact for any configured channel).",
}, []string{"channel", "kind", "result"})

func init() {
	metrics.Registry.MustRegister(metricNotifications)
}

func count(channel string, kind Kind, result string, n int) {
	metricNotifications.WithLabelValues(channel, string(kind), result).Add(float64(n))
}
