package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	sim "github.com/epfl-cvlab/cvlab-queue/internal/simulate"
)

// StateFromCluster is the cluster's queue as a simulation's starting point (kubectl cvlab
// simulate --from-cluster, estimated starts): the GPU nodes less what pods outside the queue
// hold, the running jobs with their start and their end (start plus the expected runtime of
// annotation cvlab.epfl.ch/expected-runtime, or plus spec.timeout, or never), and the waiting
// jobs. Notes say what was assumed of which job.
func StateFromCluster(c Cluster, set observe.Settings, now time.Time) (sim.Config, sim.State, []string) {
	return sim.FromLive(Observe(c, set, now).live())
}

// live is the view as a prediction's input.
func (v *View) live() sim.Live {
	return sim.Live{Observation: v.Observation, Snapshot: cloneSnapshot(v.Snapshot), Settings: v.Settings}
}

// Predict estimates when the view's waiting jobs start, by running the operator's decision loop
// forward from now with no new job (simulate.Predict). It is computed when asked, never written.
func Predict(v *View) (sim.Prediction, error) { return sim.Predict(v.live()) }

// fromCluster is the starting point of `kubectl cvlab simulate --from-cluster`: the cluster's
// queue now (StateFromCluster), decided with the operator's published settings (its defaults when
// they cannot be read), which are the base the simulation's flags apply over, and its GPU nodes.
// What was assumed goes to standard error.
func (r *root) fromCluster(cmd *cobra.Command) (observe.Settings, sim.State, []corev1.Node, error) {
	c, err := r.clients()
	if err != nil {
		return observe.Settings{}, sim.State{}, nil, err
	}
	cl, err := readCluster(cmd.Context(), c.c, c.installed, r.operatorNamespace)
	if err != nil {
		return observe.Settings{}, sim.State{}, nil, err
	}
	if cl.NodesErr != nil {
		return observe.Settings{}, sim.State{}, nil, fmt.Errorf("--from-cluster needs the nodes: %s", ErrorMessage(cl.NodesErr))
	}
	base := observe.DefaultSettings()
	if cl.Published != nil {
		base = cl.Published.Settings
	}
	cfg, st, notes := StateFromCluster(cl, base, r.now())
	notes = append(settingsNotes(cl, base), notes...)
	for _, n := range notes {
		fmt.Fprintf(r.streams.ErrOut, "Note: %s\n", n)
	}
	return base, st, cfg.Nodes, nil
}
