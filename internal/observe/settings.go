package observe

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// Settings are the operator's flags that change its decisions. The operator's flags default to
// DefaultSettings, it publishes the values it runs with (see Published), and the CLI decides with
// the published ones: one set of defaults, one spelling of each name.
type Settings struct {
	// Preemption is --preemption: which waiting jobs may evict running ones.
	Preemption queue.Policy
	// GPUCapacity is --gpu-capacity: the GPUs the queue hands out at most; negative: no bound
	// (without GPU nodes, the pool is then empty).
	GPUCapacity int32
	// NodeSelector is --gpu-node-selector: the nodes whose GPUs the queue hands out; nil or empty:
	// every node.
	NodeSelector labels.Selector
	// MaxHeadWait is --max-head-wait: how long the first waiting job may be passed by smaller jobs
	// behind it before it holds them back.
	MaxHeadWait time.Duration
	// MinRuntime is --min-runtime: jobs running for less are never evicted.
	MinRuntime time.Duration
	// UnschedulableTimeout is --unschedulable-timeout: how long an admitted pod may stay
	// unschedulable before its job is requeued.
	UnschedulableTimeout time.Duration
	// Idle is what the queue does with GPUs that sit idle (--idle-*).
	Idle IdleSettings
}

// IdleAction is --idle-action: what happens to a job whose GPUs stayed idle.
type IdleAction string

const (
	// IdleReclaim: after --idle-after and --idle-grace the job's GPUs count as free: it ranks last
	// for preemption and any waiting job that fits may evict it.
	IdleReclaim IdleAction = "Reclaim"
	// IdleWarn: only the warning (event, condition, owner told).
	IdleWarn IdleAction = "Warn"
	// IdleSuspend: the job is suspended after the grace instead of waiting for a preemptor.
	IdleSuspend IdleAction = "Suspend"
)

// IdleSettings are the operator's --idle-* and --utilization-interval flags.
type IdleSettings struct {
	// Threshold is --idle-threshold: a job's GPUs below this average percent are idle.
	Threshold int32
	// After is --idle-after: how long GPUs stay idle before the warning.
	After time.Duration
	// Grace is --idle-grace: how long after the warning before the action.
	Grace time.Duration
	// Action is --idle-action.
	Action IdleAction
	// Interval is --utilization-interval: how often a job's utilisation is measured and written
	// at most.
	Interval time.Duration
}

// ParseIdleAction reads --idle-action: Reclaim, Warn or Suspend (any case).
func ParseIdleAction(s string) (IdleAction, error) {
	for _, a := range []IdleAction{IdleReclaim, IdleWarn, IdleSuspend} {
		if strings.EqualFold(s, string(a)) {
			return a, nil
		}
	}
	return "", fmt.Errorf("idle-action must be Reclaim, Warn or Suspend, not %q", s)
}

// Defaults of the operator's decision flags.
const (
	DefaultMaxHeadWait          = 30 * time.Minute
	DefaultMinRuntime           = 10 * time.Minute
	DefaultUnschedulableTimeout = 5 * time.Minute
	DefaultGPUCapacity          = -1
	DefaultPreemption           = queue.PreemptFirstGPU
	DefaultIdleThreshold        = 5
	DefaultIdleAfter            = time.Hour
	DefaultIdleGrace            = 30 * time.Minute
	DefaultIdleAction           = IdleReclaim
	DefaultUtilizationInterval  = time.Minute
)

// DefaultSettings are the operator's defaults.
func DefaultSettings() Settings {
	return Settings{Preemption: DefaultPreemption, GPUCapacity: DefaultGPUCapacity, NodeSelector: labels.Everything(),
		MaxHeadWait: DefaultMaxHeadWait, MinRuntime: DefaultMinRuntime, UnschedulableTimeout: DefaultUnschedulableTimeout,
		Idle: IdleSettings{Threshold: DefaultIdleThreshold, After: DefaultIdleAfter, Grace: DefaultIdleGrace,
			Action: DefaultIdleAction, Interval: DefaultUtilizationInterval}}
}

// selector is the node selector, every node when unset.
func (s Settings) selector() labels.Selector {
	if s.NodeSelector == nil {
		return labels.Everything()
	}
	return s.NodeSelector
}

// String renders the settings as the operator's flags.
func (s Settings) String() string {
	var b strings.Builder
	b.WriteString("--preemption=" + s.Preemption.String())
	if s.GPUCapacity >= 0 {
		b.WriteString(" --gpu-capacity=" + strconv.Itoa(int(s.GPUCapacity)))
	}
	if s.NodeSelector != nil && !s.NodeSelector.Empty() {
		b.WriteString(" --gpu-node-selector=" + s.NodeSelector.String())
	}
	b.WriteString(" --min-runtime=" + ShortDuration(s.MinRuntime) + " --max-head-wait=" + ShortDuration(s.MaxHeadWait))
	return b.String()
}

// Equal tells whether two settings decide alike.
func (s Settings) Equal(o Settings) bool {
	return s.Preemption == o.Preemption && s.GPUCapacity == o.GPUCapacity && s.selector().String() == o.selector().String() &&
		s.MaxHeadWait == o.MaxHeadWait && s.MinRuntime == o.MinRuntime && s.UnschedulableTimeout == o.UnschedulableTimeout &&
		s.Idle == o.Idle
}

// ShortDuration renders a duration without zero units: 10m, 1h30m, 45s.
func ShortDuration(d time.Duration) string {
	if d < 0 {
		return d.String()
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// ParseNodeSelector reads --gpu-node-selector ("" is every node).
func ParseNodeSelector(s string) (labels.Selector, error) {
	if s == "" {
		return labels.Everything(), nil
	}
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("node selector %q: %w", s, err)
	}
	return sel, nil
}
