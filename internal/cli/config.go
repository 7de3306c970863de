package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// Config is the user's config file ($XDG_CONFIG_HOME/cvlab/config.yaml): defaults for submit,
// and overrides of the operator's settings for queue, why and top. Every field is optional.
type Config struct {
	// User is the owner of submitted jobs (--user); the OS user name when empty.
	User string `json:"user,omitempty"`
	// Namespace is used when -n is not given (before the kubeconfig context's namespace).
	Namespace string `json:"namespace,omitempty"`
	// Image is the default --image.
	Image string `json:"image,omitempty"`
	// Data are the default --data mounts, as in a CvlabJob's spec.cvlabdata.
	Data []cvlabv1alpha1.CvlabdataMount `json:"data,omitempty"`
	// ClusterUser is the default --cluster-user, as in a CvlabJob's spec.clusterUser.
	ClusterUser *cvlabv1alpha1.ClusterUser `json:"clusterUser,omitempty"`
	// Cluster overrides the settings the operator publishes (ConfigMap cvlab-queue-settings in its
	// namespace), which queue, why and top otherwise decide with: for a what-if, or an operator
	// that publishes none.
	Cluster ClusterConfig `json:"cluster,omitzero"`
}

// ClusterConfig mirrors the operator's flags that change its decisions; each key given overrides
// the operator's published value.
type ClusterConfig struct {
	// Preemption is --preemption: FirstGPU (default), Rank or Never.
	Preemption string `json:"preemption,omitempty"`
	// GPUCapacity is --gpu-capacity.
	GPUCapacity *int32 `json:"gpuCapacity,omitempty"`
	// GPUNodeSelector is --gpu-node-selector.
	GPUNodeSelector string `json:"gpuNodeSelector,omitempty"`
	// MinRuntime and MaxHeadWait are --min-runtime and --max-head-wait (Go durations).
	MinRuntime  string `json:"minRuntime,omitempty"`
	MaxHeadWait string `json:"maxHeadWait,omitempty"`
}

// DefaultConfigPath is $XDG_CONFIG_HOME/cvlab/config.yaml, or ~/.config/cvlab/config.yaml.
func DefaultConfigPath() string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "cvlab", "config.yaml")
}

// LoadConfig reads a config file. A missing file is an empty config unless required (the
// user named it with --config). Unknown fields are errors, so that typos do not go unnoticed.
func LoadConfig(path string, required bool) (Config, error) {
	var c Config
	if path == "" {
		return c, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !required {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("reading config: %w", err)
	}
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if _, err := c.Cluster.Settings(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Settings are the cluster section over the operator's defaults.
func (c ClusterConfig) Settings() (observe.Settings, error) {
	return c.Apply(observe.DefaultSettings())
}

// Apply sets the section's keys over s (the operator's published settings, or its defaults): the
// keys it leaves out keep their value in s.
func (c ClusterConfig) Apply(s observe.Settings) (observe.Settings, error) {
	if c.Preemption != "" {
		p, err := queue.ParsePolicy(c.Preemption)
		if err != nil {
			return s, fmt.Errorf("cluster.preemption: %w", err)
		}
		s.Preemption = p
	}
	if c.GPUCapacity != nil {
		if *c.GPUCapacity < 0 {
			return s, fmt.Errorf("cluster.gpuCapacity must be 0 or more, not %d", *c.GPUCapacity)
		}
		s.GPUCapacity = *c.GPUCapacity
	}
	if c.GPUNodeSelector != "" {
		sel, err := labels.Parse(c.GPUNodeSelector)
		if err != nil {
			return s, fmt.Errorf("cluster.gpuNodeSelector: %w", err)
		}
		s.NodeSelector = sel
	}
	for _, d := range []struct {
		name, value string
		into        *time.Duration
	}{{"minRuntime", c.MinRuntime, &s.MinRuntime}, {"maxHeadWait", c.MaxHeadWait, &s.MaxHeadWait}} {
		if d.value == "" {
			continue
		}
		v, err := time.ParseDuration(d.value)
		if err != nil {
			return s, fmt.Errorf("cluster.%s %q is not a duration such as 10m or 1h", d.name, d.value)
		}
		*d.into = v
	}
	return s, nil
}
