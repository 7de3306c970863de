package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

// The owners of the queue's pods, for the admission policy job-pod-connect
// (config/policies/job_pod_connect.yaml): only a job's owner and queue admins may exec into,
// attach to or port-forward to its pod. A CONNECT request names the pod but does not carry it, so
// the operator publishes each pod's owner in the policies' params ConfigMap
// (validation.ParamsName in its namespace), which the policy reads:
//
//	pod.<namespace>.<pod>: <the job's spec.user>
//
// A namespace is a DNS label (no dots), so the key is unambiguous. A key longer than a ConfigMap
// key's 253 characters (job names near their 242-character limit) is cut:
//
//	<"longpod.<namespace>.<pod>" cut at 253 characters>: one "<pod>=<user>" line per pod
//
// The operator owns these keys, and only them, with server-side apply as PodOwnersFieldManager:
// applying the whole current set removes the keys of pods that are gone, and leaves the keys of
// config/policies (kubectl, GitOps) and adminGroups (validation.FieldManager) alone.
//
// Entries are written before the pods of a decision are created, at most once per decision and
// only when the set changed (or every podOwnersResync, undoing a hand edit). When the write fails,
// the pods that needed it are not created in this decision: their jobs back off and start on a
// later decision, once their owners are published. A pod running without its entry would be open
// to anyone's exec; a start delayed by a few seconds is not a door. Where the ConfigMap does not
// exist (no policies installed, e.g. make run-local), nothing is written and pods are created as
// usual: no policy reads the entries there.

const (
	// PodOwnersFieldManager owns the pod owner keys of the params ConfigMap, and only them.
	PodOwnersFieldManager = "cvlab-queue-pod-owners"
	// PodOwnerKeyPrefix and PodOwnerLongKeyPrefix start the keys of pod owners.
	PodOwnerKeyPrefix     = "pod."
	PodOwnerLongKeyPrefix = "longpod."
	// maxConfigMapKey is the longest ConfigMap key.
	maxConfigMapKey = 253
	// podOwnersResync is how often the whole set is written again even when it did not change.
	podOwnersResync = 5 * time.Minute
	// podOwnersAbsentRetry is how often a missing ConfigMap is looked for again.
	podOwnersAbsentRetry = time.Minute
	// podOwnersTimeout bounds one write: a decision never waits longer for it.
	podOwnersTimeout = 10 * time.Second
)

// PodOwnerKey is the params key of the owner of pod namespace/name. long says it is a cut key,
// whose value holds one "<pod>=<user>" line per pod.
func PodOwnerKey(namespace, name string) (key string, long bool) {
	key = PodOwnerKeyPrefix + namespace + "." + name
	if len(key) <= maxConfigMapKey {
		return key, false
	}
	return (PodOwnerLongKeyPrefix + namespace + "." + name)[:maxConfigMapKey], true
}

// wantedPodOwners is the owner of every pod of the queue that is or may soon be running: each pod
// of a CvlabJob that has not finished (pending, running, or being deleted: exec works until its
// containers stop), each pod created but not shown by the cache yet (expected), and the pods this
// decision is about to create. The owner is the job's spec.user; for a pod whose job is gone, the
// user label the operator gave it (BuildPod). Pure: unit-tested.
func wantedPodOwners(pods []corev1.Pod, obs *observe.Observation, expected map[types.UID]observe.Expectation, creations []*lifecycle.Creation) map[types.NamespacedName]string {
	users := make(map[types.UID]string, len(obs.Views))
	for _, v := range obs.Views {
		users[v.Job.UID] = v.Job.Spec.User
	}
	owners := map[types.NamespacedName]string{}
	add := func(ns, name, user string) {
		if user != "" {
			owners[types.NamespacedName{Namespace: ns, Name: name}] = user
		}
	}
	for i := range pods {
		p := &pods[i]
		uid, ok := observe.JobOf(p)
		if !ok || cluster.PodFinished(p) {
			continue
		}
		user, known := users[uid]
		if !known {
			user = p.Labels[LabelUser]
		}
		add(p.Namespace, p.Name, user)
	}
	for _, v := range obs.Views {
		if exp, ok := expected[v.Job.UID]; ok && exp.Pod != "" {
			add(v.Job.Namespace, exp.Pod, v.Job.Spec.User)
		}
	}
	for _, c := range creations {
		add(c.View.Job.Namespace, lifecycle.PodName(c.View.Job, c.View.LastAdmission+1), c.View.Job.Spec.User)
	}
	return owners
}

// podOwnerData renders owners as the params ConfigMap's keys (PodOwnerKey).
func podOwnerData(owners map[types.NamespacedName]string) map[string]string {
	data := make(map[string]string, len(owners))
	long := map[string][]string{}
	for p, user := range owners {
		key, isLong := PodOwnerKey(p.Namespace, p.Name)
		if !isLong {
			data[key] = user
			continue
		}
		long[key] = append(long[key], p.Name+"="+user)
	}
	for key, lines := range long {
		slices.Sort(lines)
		data[key] = strings.Join(lines, "\n")
	}
	return data
}

// podOwnerWriter writes the owners into the params ConfigMap; used by the decision loop only.
type podOwnerWriter struct {
	client client.Client
	// reader reads from the API server: the manager has no right to cache ConfigMaps.
	reader client.Reader
	cm     types.NamespacedName

	// written is what the last successful write wrote, at writtenAt; nil before the first one.
	written   map[string]string
	writtenAt time.Time
	// present is set once the ConfigMap was seen to exist: a write then needs no check first.
	// absentAt is when it was last found missing (nothing is written for podOwnersAbsentRetry).
	present   bool
	absentAt  time.Time
	explained bool
}

// absent tells whether the ConfigMap was found missing less than podOwnersAbsentRetry ago.
func (w *podOwnerWriter) absent(now time.Time) bool {
	return !w.present && !w.absentAt.IsZero() && now.Sub(w.absentAt) < podOwnersAbsentRetry
}

// publish writes data when it changed. It returns an error when data could not be written,
// including when the manager may not (its Role is missing); a missing ConfigMap is no error
// (nothing reads the entries then).
func (w *podOwnerWriter) publish(ctx context.Context, data map[string]string, now time.Time) error {
	if w.written != nil && maps.Equal(data, w.written) && now.Sub(w.writtenAt) < podOwnersResync {
		return nil
	}
	if w.absent(now) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, podOwnersTimeout)
	defer cancel()
	if !w.present {
		// Server-side apply would create a missing ConfigMap: look first, so that the operator never
		// makes a params ConfigMap of its own where no policy is installed.
		var cm corev1.ConfigMap
		err := w.reader.Get(ctx, w.cm, &cm)
		if apierrors.IsNotFound(err) {
			if !w.explained {
				log.FromContext(ctx).Info("the owners of the queue's pods are not published: the admission policies' params do not exist, "+
					"so config/policies (job-pod-connect: only a job's owner may exec into its pod) is not installed here; "+
					"pods are created as usual; see docs/security.md", "configMap", w.cm.String())
				w.explained = true
			}
			w.absentAt, w.written = now, nil
			return nil
		}
		if apierrors.IsForbidden(err) {
			// The policies may be installed: creating pods whose owners are unknown to them would
			// leave them open to anyone's exec.
			return fmt.Errorf("the manager may not read ConfigMap %s, where it publishes the owners of the queue's pods: "+
				"give it its Role (config/rbac/admission_params_role.yaml): %w", w.cm, err)
		}
		if err != nil {
			return fmt.Errorf("reading ConfigMap %s to publish the owners of the queue's pods: %w", w.cm, err)
		}
		w.present = true
	}
	cm := corev1ac.ConfigMap(w.cm.Name, w.cm.Namespace)
	if len(data) > 0 {
		cm.WithData(data)
	}
	if err := w.client.Apply(ctx, cm, client.FieldOwner(PodOwnersFieldManager), client.ForceOwnership); err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			w.present = false // deleted meanwhile? look again next time
		}
		return fmt.Errorf("publishing the owners of the queue's pods in ConfigMap %s (read by the admission policy job-pod-connect): %w", w.cm, err)
	}
	if w.written == nil {
		log.FromContext(ctx).Info("publishing the owners of the queue's pods", "configMap", w.cm.String(), "pods", len(data))
	}
	w.written, w.writtenAt, w.explained = data, now, false
	return nil
}

// publishPodOwners publishes the owners of the queue's pods, those about to be created included,
// before they are created (see above). When that fails, the creations are marked failed (their
// jobs back off and are admitted again later) and the error is returned.
func (r *QueueReconciler) publishPodOwners(ctx context.Context, obs *observe.Observation, pods []corev1.Pod, creations []*lifecycle.Creation, now time.Time) error {
	if r.opts.PodOwnersNamespace == "" {
		return nil
	}
	if r.podOwners == nil {
		r.podOwners = &podOwnerWriter{client: r.client, reader: r.apiReader, cm: types.NamespacedName{Namespace: r.opts.PodOwnersNamespace, Name: validation.ParamsName}}
	}
	if r.podOwners.absent(now) {
		return nil // no policy reads them here; looked for again every podOwnersAbsentRetry
	}
	// The pods of this decision's observation (the caches' own: only read), the pods the cache
	// does not show yet (expected) and those about to be created. (Listing the cache again here
	// cost 25-300 ms per decision at 1,000 jobs: measured with make bench.)
	err := r.podOwners.publish(ctx, podOwnerData(wantedPodOwners(pods, obs, r.ledger.Expected, creations)), now)
	if err == nil {
		return nil
	}
	for _, c := range creations {
		c.Err = fmt.Errorf("its owner could not be published for the exec/attach/port-forward policy, so it is not created yet: %w", err)
	}
	return err
}
