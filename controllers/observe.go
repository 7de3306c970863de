package controllers

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
)

// nodeCapacityKey sums up what of a node matters to the queue, to ignore heartbeat updates.
func nodeCapacityKey(n *corev1.Node) string {
	q := n.Status.Allocatable[ResourceGPU]
	return fmt.Sprintf("%v/%s/%s", cluster.NodeSchedulable(n), q.String(), labels.Set(n.Labels).String())
}
