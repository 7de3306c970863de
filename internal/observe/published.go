package observe

import (
	"fmt"
	"strconv"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// PublishedName is the ConfigMap, in the operator's namespace, where the operator publishes the
// settings it decides with and the part of its memory that no job's status holds (the head of
// the line and since when). Every authenticated user may read it (config/rbac), so that
// `kubectl cvlab why` decides as the operator does.
const PublishedName = "cvlab-queue-settings"

// Keys of the published ConfigMap.
const (
	KeyPreemption           = "preemption"
	KeyGPUCapacity          = "gpuCapacity"
	KeyGPUNodeSelector      = "gpuNodeSelector"
	KeyMaxHeadWait          = "maxHeadWait"
	KeyMinRuntime           = "minRuntime"
	KeyUnschedulableTimeout = "unschedulableTimeout"
	KeyIdleThreshold        = "idleThreshold"
	KeyIdleAfter            = "idleAfter"
	KeyIdleGrace            = "idleGrace"
	KeyIdleAction           = "idleAction"
	KeyUtilizationInterval  = "utilizationInterval"
	KeyHead                 = "head"
	KeyHeadSince            = "headSince"
)

// Published is what the operator publishes: its settings, and the first waiting job of its last
// decision with the time it became first (the head-of-line clock of --max-head-wait).
type Published struct {
	Settings  Settings
	Head      string
	HeadSince time.Time
}

// Data renders p as the ConfigMap's data.
func (p Published) Data() map[string]string {
	d := map[string]string{
		KeyPreemption:           p.Settings.Preemption.String(),
		KeyGPUCapacity:          strconv.Itoa(int(p.Settings.GPUCapacity)),
		KeyGPUNodeSelector:      "",
		KeyMaxHeadWait:          p.Settings.MaxHeadWait.String(),
		KeyMinRuntime:           p.Settings.MinRuntime.String(),
		KeyUnschedulableTimeout: p.Settings.UnschedulableTimeout.String(),
		KeyIdleThreshold:        strconv.Itoa(int(p.Settings.Idle.Threshold)),
		KeyIdleAfter:            p.Settings.Idle.After.String(),
		KeyIdleGrace:            p.Settings.Idle.Grace.String(),
		KeyIdleAction:           string(p.Settings.Idle.Action),
		KeyUtilizationInterval:  p.Settings.Idle.Interval.String(),
		KeyHead:                 p.Head,
		KeyHeadSince:            "",
	}
	if p.Settings.NodeSelector != nil {
		d[KeyGPUNodeSelector] = p.Settings.NodeSelector.String()
	}
	if p.Head != "" && !p.HeadSince.IsZero() {
		d[KeyHeadSince] = p.HeadSince.UTC().Format(time.RFC3339Nano)
	}
	return d
}

// ParsePublished reads the ConfigMap's data. Keys that are missing keep their defaults; a value
// that does not parse is an error naming the key.
func ParsePublished(data map[string]string) (Published, error) {
	p := Published{Settings: DefaultSettings(), Head: data[KeyHead]}
	var err error
	if v, ok := data[KeyPreemption]; ok {
		if p.Settings.Preemption, err = queue.ParsePolicy(v); err != nil {
			return p, fmt.Errorf("%s: %w", KeyPreemption, err)
		}
	}
	if v, ok := data[KeyGPUCapacity]; ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return p, fmt.Errorf("%s %q is not a number", KeyGPUCapacity, v)
		}
		p.Settings.GPUCapacity = int32(n)
	}
	if v, ok := data[KeyGPUNodeSelector]; ok {
		if p.Settings.NodeSelector, err = ParseNodeSelector(v); err != nil {
			return p, fmt.Errorf("%s: %w", KeyGPUNodeSelector, err)
		}
	}
	if v, ok := data[KeyIdleThreshold]; ok {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return p, fmt.Errorf("%s %q is not a number", KeyIdleThreshold, v)
		}
		p.Settings.Idle.Threshold = int32(n)
	}
	if v, ok := data[KeyIdleAction]; ok && v != "" {
		if p.Settings.Idle.Action, err = ParseIdleAction(v); err != nil {
			return p, fmt.Errorf("%s: %w", KeyIdleAction, err)
		}
	}
	for key, into := range map[string]*time.Duration{KeyMaxHeadWait: &p.Settings.MaxHeadWait,
		KeyMinRuntime: &p.Settings.MinRuntime, KeyUnschedulableTimeout: &p.Settings.UnschedulableTimeout,
		KeyIdleAfter: &p.Settings.Idle.After, KeyIdleGrace: &p.Settings.Idle.Grace, KeyUtilizationInterval: &p.Settings.Idle.Interval} {
		if v, ok := data[key]; ok {
			if *into, err = time.ParseDuration(v); err != nil {
				return p, fmt.Errorf("%s %q is not a duration", key, v)
			}
		}
	}
	if v := data[KeyHeadSince]; v != "" {
		if p.HeadSince, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return p, fmt.Errorf("%s %q is not a time", KeyHeadSince, v)
		}
	}
	return p, nil
}
