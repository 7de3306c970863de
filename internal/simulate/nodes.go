package simulate

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
)

// LabNodes is the default node file: the lab's 3 servers of 8 GPUs and 1 of 6, the local
// cluster's hack/kwok/nodes-lab.txt (TestLabNodesAreTheLocalCluster keeps them the same).
//
//go:embed nodes-lab.txt
var LabNodes string

// ReadNodes reads a node file, the format of the local cluster's NODE_FILE
// (hack/local-cluster.sh): one node per line, "name gpus [cpu (default 64)] [memory (default
// 512Gi)]", '#' starting a comment. The nodes are Ready, as the local cluster's kwok makes them.
func ReadNodes(r io.Reader) ([]corev1.Node, error) {
	var nodes []corev1.Node
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 || len(f) > 4 {
			return nil, fmt.Errorf("node file line %d: want \"name gpus [cpu] [memory]\", got %q", n, strings.TrimSpace(line))
		}
		gpus, err := strconv.ParseUint(f[1], 10, 31)
		if err != nil {
			return nil, fmt.Errorf("node %s: GPUs must be a number, got %q", f[0], f[1])
		}
		cpu, mem := "64", "512Gi"
		if len(f) > 2 {
			cpu = f[2]
		}
		if len(f) > 3 {
			mem = f[3]
		}
		res := corev1.ResourceList{cluster.ResourceGPU: *resource.NewQuantity(int64(gpus), resource.DecimalSI)}
		for name, v := range map[corev1.ResourceName]string{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem} {
			q, err := resource.ParseQuantity(v)
			if err != nil {
				return nil, fmt.Errorf("node %s: %s %q: %w", f[0], name, v, err)
			}
			res[name] = q
		}
		if seen[f[0]] {
			return nil, fmt.Errorf("node %s appears twice", f[0])
		}
		seen[f[0]] = true
		nodes = append(nodes, readyNode(f[0], res))
	}
	return nodes, sc.Err()
}

// readyNode is a Ready node named name, labelled with its hostname, with res allocatable.
func readyNode(name string, res corev1.ResourceList) corev1.Node {
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}},
		Status: corev1.NodeStatus{Capacity: res, Allocatable: res,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}},
	}
}
