package cli

import (
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// ErrNotInstalled is the answer of a cluster without the CvlabJob API.
var ErrNotInstalled = errors.New("the CvlabJob API is not installed on this cluster: is the operator installed?")

// APIInstalled asks the API server's discovery whether it serves cvlabjobs.
func APIInstalled(d discovery.DiscoveryInterface) (bool, error) {
	list, err := d.ServerResourcesForGroupVersion(cvlabv1alpha1.GroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, r := range list.APIResources {
		if r.Name == "cvlabjobs" {
			return true, nil
		}
	}
	return false, nil
}

// Friendly turns an API error into a sentence for people. notFound names what was asked for
// ("cvlabjob \"x\" not found in namespace \"y\""); installed is asked only for a 404, to tell a
// missing job from a missing API.
func Friendly(err error, notFound string, installed func() (bool, error)) error {
	if err == nil {
		return nil
	}
	var noMatch *meta.NoKindMatchError
	var noResource *meta.NoResourceMatchError
	switch {
	case errors.As(err, &noMatch), errors.As(err, &noResource):
		return ErrNotInstalled
	case apierrors.IsNotFound(err):
		if installed != nil {
			if ok, derr := installed(); derr == nil && !ok {
				return ErrNotInstalled
			}
		}
		if notFound != "" {
			return errors.New(notFound)
		}
		return err
	case apierrors.IsForbidden(err):
		return fmt.Errorf("not allowed: %s", ErrorMessage(err))
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("not logged in to the cluster (%s): check your kubeconfig or log in again", ErrorMessage(err))
	}
	return err
}

// ErrorMessage is an API error's message without the object prefix: for a Forbidden error,
// `User "alice" cannot list resource "nodes" ...` rather than `nodes is forbidden: User ...`.
func ErrorMessage(err error) string {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, "is forbidden: "); ok {
		return after
	}
	return msg
}
