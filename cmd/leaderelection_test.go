package main

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestLeaderElectionFlags(t *testing.T) {
	cases := map[string]struct {
		args    []string
		wantErr string
	}{
		"defaults are controller-runtime's": {},
		"a shorter lease":                   {args: []string{"--leader-elect-lease-duration=8s", "--leader-elect-renew-deadline=6s", "--leader-elect-retry-period=1s"}},
		"renew deadline not below the lease": {args: []string{"--leader-elect-lease-duration=10s"},
			wantErr: "--leader-elect-lease-duration (10s) must be longer than --leader-elect-renew-deadline (10s)"},
		"retry period not below the renew deadline": {args: []string{"--leader-elect-retry-period=10s"},
			wantErr: "--leader-elect-renew-deadline (10s) must be longer than --leader-elect-retry-period (10s)"},
		"no retry period": {args: []string{"--leader-elect-retry-period=0s"}, wantErr: "--leader-elect-retry-period must be positive"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var l leaderElectionFlags
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			l.bind(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := l.validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("validate() = %v, want %q", err, tc.wantErr)
			}
			if len(tc.args) == 0 && (l.leaseDuration != 15*time.Second || l.renewDeadline != 10*time.Second || l.retryPeriod != 2*time.Second) {
				t.Errorf("defaults %s/%s/%s, want 15s/10s/2s", l.leaseDuration, l.renewDeadline, l.retryPeriod)
			}
		})
	}
}
