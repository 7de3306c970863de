package cli

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/directory"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

// directoryNote says, after a submit, which cluster account the job's pod will act as on the lab's
// storage when the job names none: its user's entry in the lab directory (the ConfigMap
// validation.DirectoryName in operatorNS, which every authenticated user may read), from which the
// operator fills it, or why there is none. "" when the job names its own account, or when there is
// no directory to read (a cluster without one, an older install): nothing changed there.
func directoryNote(ctx context.Context, c client.Reader, operatorNS string, job *cvlabv1alpha1.CvlabJob) string {
	if job.Spec.ClusterUser != nil {
		return ""
	}
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: operatorNS, Name: validation.DirectoryName}, &cm); err != nil {
		return ""
	}
	name := operatorNS + "/" + validation.DirectoryName
	d, _ := directory.Parse(cm.Data)
	user := job.Spec.User
	if id, ok := d.Lookup(user); ok {
		return fmt.Sprintf("Files: as %s, %s's entry in the lab directory (ConfigMap %s).", id, user, name)
	}
	if problem, bad := d.Problem(user); bad {
		return fmt.Sprintf("Files: as the image's default user: %s's entry in the lab directory (ConfigMap %s) is not valid (%s); ask a queue admin to fix it.",
			user, name, problem)
	}
	return fmt.Sprintf("Files: as the image's default user: the lab directory (ConfigMap %s) has no entry for %s; "+
		"ask a queue admin to add you, or give --cluster-user NAME:UID:GROUP:GID.", name, user)
}
