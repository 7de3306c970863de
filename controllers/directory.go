package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/directory"
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

// The lab directory (docs/security.md#the-lab-directory): the admin-maintained ConfigMap that maps
// each user name to its cluster account. The policy cvlab-queue-job-cluster-user checks a job's
// spec.clusterUser against it at create time; here the operator gives the pod of a job that names
// no clusterUser its owner's account, at pod creation (the job's spec stays as written, so that
// GitOps sees no drift).

const (
	// directoryRefresh is how old the operator's copy of the directory may get: one Get of one
	// ConfigMap per period at most, and none while no pod is being created (API requests are what
	// a busy queue is short of). A changed entry reaches new pods within this time.
	directoryRefresh = 30 * time.Second
	// directoryCreationMargin covers the second-truncated creationTimestamp and clock skew: a copy
	// read less than this after a job was created may predate the entry the policy checked it
	// against.
	directoryCreationMargin = 2 * time.Second
)

// The manager's Role to get that one ConfigMap is config/rbac/lab_directory_role.yaml.

// labDirectory is the operator's copy of the directory. refresh runs on the decision loop's only
// worker before the decision's pods are created; the pod creators, which run concurrently, only
// read it.
type labDirectory struct {
	reader client.Reader
	key    client.ObjectKey
	clock  clock.PassiveClock

	dir    directory.Directory
	readAt time.Time
	// known: dir is the directory as last read, or known to be absent or unreadable by design
	// (NotFound, Forbidden: no directory, today's behaviour). Until then, jobs that name no
	// clusterUser do not start: their owner may have an entry.
	known bool
	// err is why the directory is not known yet.
	err error
	// said is the last state logged, so that each state is logged once.
	said string
}

// newLabDirectory reads validation.DirectoryName in namespace with reader (the manager's API
// reader: one ConfigMap is not worth an informer).
func newLabDirectory(reader client.Reader, namespace string, clk clock.PassiveClock) *labDirectory {
	return &labDirectory{reader: reader, key: client.ObjectKey{Namespace: namespace, Name: validation.DirectoryName}, clock: clk}
}

// refresh reads the directory again when the copy is too old for the pods about to be created:
// older than directoryRefresh, or older than a job that names no clusterUser and whose user has no
// entry in the copy (an admin may just have added them: a newcomer's first job). So at most one
// Get per decision that creates pods, and most decisions none: never one per admission.
func (d *labDirectory) refresh(ctx context.Context, creations []*lifecycle.Creation) {
	if d == nil || len(creations) == 0 {
		return
	}
	if d.known && d.clock.Since(d.readAt) < directoryRefresh && !d.misses(creations) {
		return
	}
	d.readAt = d.clock.Now()
	var cm corev1.ConfigMap
	err := d.reader.Get(ctx, d.key, &cm)
	logger := log.FromContext(ctx).WithValues("configMap", d.key.String())
	switch {
	case err == nil:
		dir, perr := directory.Parse(cm.Data)
		d.dir, d.known, d.err = dir, true, nil
		state := fmt.Sprintf("read: %d entries, enforced %v", dir.Len(), dir.Enforced())
		if perr != nil {
			state += "; " + perr.Error()
		}
		if state != d.said {
			if perr != nil {
				logger.Info("lab directory entries ignored: fix them with kubectl edit (docs/security.md#the-lab-directory)", "problems", perr.Error())
			}
			logger.Info("lab directory read", "entries", dir.Len(), "enforced", dir.Enforced())
		}
		d.said = state
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		// No directory here (or no Role to read it): jobs without clusterUser run without one, as
		// before the directory.
		d.dir, d.known, d.err = directory.Directory{}, true, nil
		state := "not found"
		if apierrors.IsForbidden(err) {
			state = "forbidden"
		}
		if state != d.said {
			logger.Info("no lab directory: the pods of jobs without spec.clusterUser get none (config/policies/lab_directory.yaml, "+
				"config/rbac/lab_directory_role.yaml; docs/security.md#the-lab-directory)", "error", err.Error())
		}
		d.said = state
	case d.known:
		// Keep the last copy: an entry seldom changes, and it is read again next period.
		log.FromContext(ctx).V(1).Info("reading the lab directory failed; keeping the last copy", "error", err.Error())
	default:
		d.err = err
		log.FromContext(ctx).V(1).Info("reading the lab directory failed", "error", err.Error())
	}
}

// misses tells whether a job about to start names no clusterUser, its user has no entry, and the
// copy may be older than the job.
func (d *labDirectory) misses(creations []*lifecycle.Creation) bool {
	for _, c := range creations {
		j := c.View.Job
		if j.Spec.ClusterUser != nil || d.readAt.After(j.CreationTimestamp.Add(directoryCreationMargin)) {
			continue
		}
		if _, ok := d.dir.Lookup(j.Spec.User); !ok {
			return true
		}
	}
	return false
}

// identity is the account the directory gives the pod of job: nil when the job names its own,
// when there is no directory, or when its user has no valid entry. An error when the directory
// could not be read yet: the job starts on a later decision rather than without its account.
func (d *labDirectory) identity(job *cvlabv1alpha1.CvlabJob) (*cvlabv1alpha1.ClusterUser, error) {
	if d == nil || job.Spec.ClusterUser != nil {
		return nil, nil
	}
	if !d.known {
		return nil, fmt.Errorf("the job names no clusterUser and the lab directory %s, which may hold %s's, could not be read yet: %v", d.key, job.Spec.User, d.err)
	}
	if id, ok := d.dir.Lookup(job.Spec.User); ok {
		return id.ClusterUser(), nil
	}
	return nil, nil
}

// PodOption is an option of BuildPod.
type PodOption func(*podOptions)

type podOptions struct {
	directoryUser *cvlabv1alpha1.ClusterUser
}

// WithDirectoryUser gives the pod cu, its owner's lab directory account, when the job names no
// clusterUser (nil: none).
func WithDirectoryUser(cu *cvlabv1alpha1.ClusterUser) PodOption {
	return func(o *podOptions) { o.directoryUser = cu }
}

// clusterUserOf is the account a job's pod acts as: the job's own spec.clusterUser (checked
// against the directory when the job was created), else the directory's.
func clusterUserOf(spec *cvlabv1alpha1.CvlabJobSpec, opts []PodOption) *cvlabv1alpha1.ClusterUser {
	if spec.ClusterUser != nil {
		return spec.ClusterUser
	}
	var o podOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o.directoryUser
}
