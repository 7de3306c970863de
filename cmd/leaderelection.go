package main

import (
	"flag"
	"fmt"
	"time"
)

// leaderElectionFlags are the lease settings of --leader-elect; the defaults are controller-runtime's.
type leaderElectionFlags struct {
	namespace                                 string
	leaseDuration, renewDeadline, retryPeriod time.Duration
}

func (l *leaderElectionFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&l.namespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease (cvlab-queue.cvlab.epfl.ch); default: the manager's own namespace in the cluster (required when it runs outside one).")
	fs.DurationVar(&l.leaseDuration, "leader-elect-lease-duration", 15*time.Second,
		"How long the other replicas wait, after the leader's last renewal, before taking over a leader that stopped without handing over (killed, partitioned).")
	fs.DurationVar(&l.renewDeadline, "leader-elect-renew-deadline", 10*time.Second,
		"How long the leader keeps trying to renew its lease before it gives up leading and the manager exits (to be restarted as a follower).")
	fs.DurationVar(&l.retryPeriod, "leader-elect-retry-period", 2*time.Second,
		"How often replicas try to acquire or renew the lease.")
}

// validate checks the lease settings as client-go's leader election would, with flag names.
func (l *leaderElectionFlags) validate() error {
	switch {
	case l.retryPeriod <= 0:
		return fmt.Errorf("--leader-elect-retry-period must be positive")
	case l.renewDeadline <= l.retryPeriod:
		return fmt.Errorf("--leader-elect-renew-deadline (%s) must be longer than --leader-elect-retry-period (%s)", l.renewDeadline, l.retryPeriod)
	case l.leaseDuration <= l.renewDeadline:
		return fmt.Errorf("--leader-elect-lease-duration (%s) must be longer than --leader-elect-renew-deadline (%s)", l.leaseDuration, l.renewDeadline)
	}
	return nil
}
