package cli

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

// After a submit without a cluster account, the CLI says which one the job will act as: its
// user's lab directory entry, read with the user's own rights.
func TestDirectoryNote(t *testing.T) {
	const ns = "cvlab-queue-system"
	dir := func(data map[string]string) []client.Object {
		return []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: validation.DirectoryName}, Data: data}}
	}
	lab := map[string]string{"alice": "name=alice uid=123456 groupName=cvlab gid=11166 email=alice@epfl.ch"}
	cases := map[string]struct {
		objs   []client.Object
		getErr error
		user   string
		cu     *cvlabv1alpha1.ClusterUser
		want   string
	}{
		"an entry": {objs: dir(lab), user: "alice",
			want: "Files: as alice (uid 123456), group cvlab (gid 11166), alice's entry in the lab directory (ConfigMap cvlab-queue-system/cvlab-queue-lab-directory)."},
		"no entry": {objs: dir(lab), user: "bob",
			want: "Files: as the image's default user: the lab directory (ConfigMap cvlab-queue-system/cvlab-queue-lab-directory) has no entry for bob; " +
				"ask a queue admin to add you, or give --cluster-user NAME:UID:GROUP:GID."},
		"an entry that is not valid": {objs: dir(map[string]string{"alice": "name=alice uid=123456"}), user: "alice",
			want: "Files: as the image's default user: alice's entry in the lab directory (ConfigMap cvlab-queue-system/cvlab-queue-lab-directory) is not valid " +
				`(groupName is missing, gid is missing (want "name=<account> uid=<number> groupName=<group> gid=<number>")); ask a queue admin to fix it.`},
		"the job names its account": {objs: dir(lab), user: "alice", cu: &cvlabv1alpha1.ClusterUser{Name: "a", UID: 1, GroupName: "g", GID: 1}},
		"no directory":              {user: "alice"},
		"not readable": {objs: dir(lab), user: "alice",
			getErr: apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, validation.DirectoryName, errors.New("no"))},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c := fakeReader(newScenario(), tc.getErr, tc.objs...)
			job := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Name: "j", Namespace: "lab"},
				Spec: cvlabv1alpha1.CvlabJobSpec{User: tc.user, Image: "img", ClusterUser: tc.cu}}
			if got := directoryNote(context.Background(), c, ns, job); got != tc.want {
				t.Errorf("note\n  %q\nwant\n  %q", got, tc.want)
			}
		})
	}
}
