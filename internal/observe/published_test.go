package observe

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

func mustSelector(t *testing.T, s string) labels.Selector {
	t.Helper()
	sel, err := ParseNodeSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func TestPublishedRoundTrip(t *testing.T) {
	headSince := time.Date(2025, 3, 1, 12, 34, 56, 789012345, time.UTC)
	cases := map[string]struct {
		pub Published
		// wantHeadSince is the time read back (the head's clock is only published with a head).
		wantHeadSince time.Time
	}{
		"defaults, no head": {pub: Published{Settings: DefaultSettings()}},
		"every setting changed, a head": {
			pub: Published{Settings: Settings{Preemption: queue.PreemptRank, GPUCapacity: 8,
				NodeSelector: mustSelector(t, "gpu=true,zone in (a,b),!cordon"), MaxHeadWait: -1,
				MinRuntime: 0, UnschedulableTimeout: 90 * time.Second,
				Idle: IdleSettings{Threshold: 10, After: 2 * time.Hour, Grace: time.Minute, Action: IdleSuspend, Interval: 30 * time.Second}},
				Head: "lab/big", HeadSince: headSince},
			wantHeadSince: headSince,
		},
		"never preempt, no capacity, nil selector": {
			pub: Published{Settings: Settings{Preemption: queue.PreemptNever, GPUCapacity: 0,
				MaxHeadWait: 0, MinRuntime: time.Hour + 30*time.Minute, UnschedulableTimeout: time.Millisecond,
				Idle: IdleSettings{Action: IdleWarn}}},
		},
		"a head in another zone keeps its instant": {
			pub:           Published{Settings: DefaultSettings(), Head: "lab/a", HeadSince: headSince.In(time.FixedZone("CET", 3600))},
			wantHeadSince: headSince,
		},
		"head since without a head is not published": {
			pub: Published{Settings: DefaultSettings(), HeadSince: headSince},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			data := tc.pub.Data()
			keys := slices.Sorted(func(yield func(string) bool) {
				for k := range data {
					if !yield(k) {
						return
					}
				}
			})
			wantKeys := []string{KeyGPUCapacity, KeyGPUNodeSelector, KeyHead, KeyHeadSince, KeyMaxHeadWait, KeyMinRuntime,
				KeyPreemption, KeyUnschedulableTimeout, KeyIdleThreshold, KeyIdleAfter, KeyIdleGrace, KeyIdleAction, KeyUtilizationInterval}
			slices.Sort(wantKeys)
			if diff := cmp.Diff(wantKeys, keys); diff != "" {
				t.Errorf("Data keys (-want +got):\n%s", diff)
			}
			got, err := ParsePublished(data)
			if err != nil {
				t.Fatalf("ParsePublished(%v): %v", data, err)
			}
			if !got.Settings.Equal(tc.pub.Settings) {
				t.Errorf("settings read back %s (selector %q, unschedulable %s), want %s (selector %q, unschedulable %s)",
					got.Settings, got.Settings.selector(), got.Settings.UnschedulableTimeout,
					tc.pub.Settings, tc.pub.Settings.selector(), tc.pub.Settings.UnschedulableTimeout)
			}
			if got.Head != tc.pub.Head || !got.HeadSince.Equal(tc.wantHeadSince) {
				t.Errorf("head read back %q since %s, want %q since %s", got.Head, got.HeadSince, tc.pub.Head, tc.wantHeadSince)
			}
		})
	}
}

func TestParsePublishedDefaults(t *testing.T) {
	never := DefaultSettings()
	never.Preemption = queue.PreemptNever
	capped := DefaultSettings()
	capped.GPUCapacity, capped.MinRuntime = 16, time.Minute
	cases := map[string]struct {
		data map[string]string
		want Settings
	}{
		"nil":                          {data: nil, want: DefaultSettings()},
		"empty":                        {data: map[string]string{}, want: DefaultSettings()},
		"only preemption, lower case":  {data: map[string]string{KeyPreemption: "never"}, want: never},
		"some keys":                    {data: map[string]string{KeyGPUCapacity: "16", KeyMinRuntime: "1m"}, want: capped},
		"empty selector is every node": {data: map[string]string{KeyGPUNodeSelector: ""}, want: DefaultSettings()},
		"unknown keys are ignored":     {data: map[string]string{"future": "x"}, want: DefaultSettings()},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParsePublished(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Settings.Equal(tc.want) {
				t.Errorf("settings %s, want %s", got.Settings, tc.want)
			}
			if got.Head != "" || !got.HeadSince.IsZero() {
				t.Errorf("head %q since %s, want none", got.Head, got.HeadSince)
			}
		})
	}
}

func TestParsePublishedErrors(t *testing.T) {
	cases := map[string]string{
		KeyPreemption:           "Sometimes",
		KeyGPUCapacity:          "many",
		KeyGPUNodeSelector:      "gpu in (",
		KeyMaxHeadWait:          "soon",
		KeyMinRuntime:           "10",
		KeyUnschedulableTimeout: "5 minutes",
		KeyHeadSince:            "yesterday",
	}
	for key, value := range cases {
		t.Run(key, func(t *testing.T) {
			data := Published{Settings: DefaultSettings(), Head: "lab/a", HeadSince: t0}.Data()
			data[key] = value
			_, err := ParsePublished(data)
			if err == nil {
				t.Fatalf("ParsePublished with %s=%q: no error", key, value)
			}
			if !strings.Contains(err.Error(), key) {
				t.Errorf("error %q does not name the key %s", err, key)
			}
		})
	}
}
