// Package validation is the manager's side of the admission policies of config/policies, which
// validate who may submit, change and delete CvlabJobs and keep GPU pods in the queue
// (docs/security.md). The policies run in the API server as CEL; they read their params from one
// ConfigMap. The manager owns one key of it, adminGroups, and writes it from --admin-groups.
package validation

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// ParamsName is the policies' params ConfigMap as config/default installs it
	// (config/policies/params.yaml with the cvlab-queue- name prefix).
	ParamsName = "cvlab-queue-admission-params"
	// DefaultNamespace is the operator's namespace in config/default, used when the manager runs
	// outside the cluster.
	DefaultNamespace = "cvlab-queue-system"
	// KeyAdminGroups is the params key the manager writes: comma-separated group names whose
	// members may act for any user and run GPU pods outside the queue.
	KeyAdminGroups = "adminGroups"
	// DefaultAdminGroups is the default of --admin-groups.
	DefaultAdminGroups = "cvlab-admins"
	// FieldManager owns adminGroups in the ConfigMap's managed fields.
	FieldManager = "cvlab-queue-admin-groups"
	// DefaultResync is how often the leader writes adminGroups again, undoing a hand edit of the
	// key (the flag is the source of truth).
	DefaultResync = 5 * time.Minute
)

// ParseAdminGroups reads --admin-groups: comma-separated group names, blanks around them ignored,
// duplicates dropped. An empty value means no admin group.
func ParseAdminGroups(s string) ([]string, error) {
	var groups []string
	seen := map[string]bool{}
	for _, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if g == "" || seen[g] {
			continue
		}
		for _, r := range g {
			if r < 0x20 || r == 0x7f {
				return nil, fmt.Errorf("--admin-groups: group %q has a control character", g)
			}
		}
		seen[g] = true
		groups = append(groups, g)
	}
	return groups, nil
}

// OperatorNamespace is the namespace of the params ConfigMap: $POD_NAMESPACE, else the namespace
// of the pod's service account, else DefaultNamespace (out of the cluster).
func OperatorNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns
		}
	}
	return DefaultNamespace
}

// ParamsWriter writes the admin groups into the policies' params ConfigMap with server-side apply,
// owning that key only: the other keys stay with whoever applied config/policies (kubectl, a GitOps
// tool), and re-applying them never undoes the flag. As a manager Runnable it writes at start and
// every Resync, on the leader only.
type ParamsWriter struct {
	Client      client.Client
	Namespace   string
	Name        string
	AdminGroups []string
	// Resync defaults to DefaultResync.
	Resync time.Duration
	Log    logr.Logger
}

// Apply writes adminGroups once.
func (w *ParamsWriter) Apply(ctx context.Context) error {
	cm := corev1ac.ConfigMap(w.Name, w.Namespace).WithData(map[string]string{KeyAdminGroups: strings.Join(w.AdminGroups, ",")})
	if err := w.Client.Apply(ctx, cm, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("writing %s into ConfigMap %s/%s: %w", KeyAdminGroups, w.Namespace, w.Name, err)
	}
	return nil
}

// Start writes at once and then every Resync until ctx ends. Failures are logged and retried, never
// fatal: on a cluster without config/policies (make run-local) there is nothing to write to, and the
// queue must run anyway.
func (w *ParamsWriter) Start(ctx context.Context) error {
	resync := w.Resync
	if resync <= 0 {
		resync = DefaultResync
	}
	explained, written := false, false
	for {
		err := w.Apply(ctx)
		switch {
		case err == nil:
			log := w.Log.V(1)
			if !written {
				log = w.Log
			}
			log.Info("admission policy params written", "configMap", w.Namespace+"/"+w.Name, KeyAdminGroups, w.AdminGroups)
			explained, written = false, true
		case ctx.Err() != nil:
			return nil
		case (apierrors.IsNotFound(err) || apierrors.IsForbidden(err)) && !explained:
			// No policies here (or no RBAC for them): say once what that means.
			w.Log.Info("--admin-groups not applied: the admission policies' params cannot be written, so the policies of "+
				"config/policies are not installed here or the manager lacks its Role (config/rbac/admission_params_role.yaml); "+
				"see docs/security.md", "error", err.Error())
			explained = true
		case !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err):
			w.Log.Error(err, "--admin-groups not applied; retrying", "in", resync)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(resync):
		}
	}
}

// NeedLeaderElection makes only the leader write.
func (w *ParamsWriter) NeedLeaderElection() bool { return true }
