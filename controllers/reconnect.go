package controllers

import (
	"context"
	"errors"
	"net"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/watchlist"
)

// reconnectInterval is how often the informers try the API server again while it is unreachable.
const reconnectInterval = time.Second

// The decision loop decides from informers; when the API server is down they cannot list or watch,
// and client-go's reflector backs off exponentially between attempts, up to 30 s with as much
// jitter again. After an outage of a few seconds the caches could thus stay stale for up to a
// minute after the API server is back, and nothing would be admitted meanwhile, whatever the
// loop's own retries. Wrapped in patientListWatch, an informer's list and watch calls keep trying
// every reconnectInterval while the API server is unreachable instead of failing, so the reflector
// never backs off for an outage, and the caches catch up within about a second of its return.

// patientListWatch wraps an informer's ListerWatcher (see CacheOptions and newJobInformer).
func patientListWatch(lw toolscache.ListerWatcher) toolscache.ListerWatcher {
	return patientLW{inner: toolscache.ToListerWatcherWithContext(lw), unsupported: watchlist.DoesClientNotSupportWatchListSemantics(lw)}
}

type patientLW struct {
	inner       toolscache.ListerWatcherWithContext
	unsupported bool
}

func (p patientLW) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	return untilReachable(ctx, func() (runtime.Object, error) { return p.inner.ListWithContext(ctx, opts) })
}

func (p patientLW) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return untilReachable(ctx, func() (watch.Interface, error) { return p.inner.WatchWithContext(ctx, opts) })
}

func (p patientLW) List(opts metav1.ListOptions) (runtime.Object, error) {
	return p.ListWithContext(context.Background(), opts)
}

func (p patientLW) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return p.WatchWithContext(context.Background(), opts)
}

// IsWatchListSemanticsUnSupported passes on what the wrapped ListerWatcher says.
func (p patientLW) IsWatchListSemanticsUnSupported() bool { return p.unsupported }

// untilReachable calls f until it returns something other than "the API server is unreachable".
func untilReachable[T any](ctx context.Context, f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if err == nil || !unreachable(err) || ctx.Err() != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(reconnectInterval):
		}
	}
}

// unreachable tells whether an error means that the API server cannot be reached or cannot serve
// for now (restarting, overloaded), as opposed to an answer about the request.
func unreachable(err error) bool {
	var netErr net.Error
	return utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) ||
		errors.As(err, &netErr) && netErr.Timeout() || apierrors.IsServiceUnavailable(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err)
}
