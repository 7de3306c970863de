package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/lifecycle"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

var aliceAccount = &cvlabv1alpha1.ClusterUser{Name: "alice", UID: 123456, GroupName: "cvlab", GID: 11166}

// clusterEnv is the pod's CLUSTER_* variables.
func clusterEnv(p *corev1.Pod) map[string]string {
	env := map[string]string{}
	for _, e := range p.Spec.Containers[0].Env {
		if strings.HasPrefix(e.Name, "CLUSTER_") {
			env[e.Name] = e.Value
		}
	}
	return env
}

func TestBuildPodClusterUser(t *testing.T) {
	bob := &cvlabv1alpha1.ClusterUser{Name: "bob", UID: 123457, GroupName: "cvlab", GID: 11166}
	aliceEnv := map[string]string{"CLUSTER_USER": "alice", "CLUSTER_USER_ID": "123456", "CLUSTER_GROUP_NAME": "cvlab", "CLUSTER_GROUP_ID": "11166"}
	cases := map[string]struct {
		spec *cvlabv1alpha1.ClusterUser
		opts []PodOption
		want map[string]string
	}{
		"neither":                  {want: map[string]string{}},
		"the job's":                {spec: aliceAccount, want: aliceEnv},
		"the directory's":          {opts: []PodOption{WithDirectoryUser(aliceAccount)}, want: aliceEnv},
		"the job's over the dir's": {spec: aliceAccount, opts: []PodOption{WithDirectoryUser(bob)}, want: aliceEnv},
		"no entry":                 {opts: []PodOption{WithDirectoryUser(nil), nil}, want: map[string]string{}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			j := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Name: "j", Namespace: "lab"},
				Spec: cvlabv1alpha1.CvlabJobSpec{User: "alice", Image: "img", ClusterUser: tc.spec}}
			p := BuildPod(j, 1, "", "", tc.opts...)
			if diff := cmp.Diff(tc.want, clusterEnv(p)); diff != "" {
				t.Errorf("CLUSTER_* env (-want +got):\n%s", diff)
			}
			if (j.Spec.ClusterUser == nil) != (tc.spec == nil) {
				t.Errorf("the job's spec changed: %+v", j.Spec.ClusterUser)
			}
		})
	}
}

// The operator's copy of the directory: read at most every 30 s while pods are created, and again
// when a job newer than the copy has no entry in it (a newcomer's first job); kept over a failed
// read; never read per admission.
func TestLabDirectoryRefresh(t *testing.T) {
	const aliceEntry = "name=alice uid=123456 groupName=cvlab gid=11166"
	dirKey := client.ObjectKey{Namespace: "cvlab-queue-system", Name: validation.DirectoryName}
	// A job to start: its user, its own account or none, and its age.
	type toStart struct {
		user string
		cu   *cvlabv1alpha1.ClusterUser
		age  time.Duration
	}
	old := time.Hour
	alice, bob := toStart{user: "alice", age: old}, toStart{user: "bob", age: old}
	newAlice, newBob := toStart{user: "alice"}, toStart{user: "bob"}
	own := toStart{user: "carol", cu: &cvlabv1alpha1.ClusterUser{Name: "c", UID: 1, GroupName: "g", GID: 2}}
	type step struct {
		after time.Duration
		data  map[string]string // nil: the directory is absent
		err   error             // the Get fails
		jobs  []toStart
		// reads is how many Gets this step makes; want the jobs' accounts (nil: none), wantErr
		// identity's error for jobs without their own.
		reads   int
		want    []*cvlabv1alpha1.ClusterUser
		wantErr string
	}
	lab := map[string]string{"alice": aliceEntry}
	unavailable := apierrors.NewServiceUnavailable("etcd is down")
	none := (*cvlabv1alpha1.ClusterUser)(nil)
	cases := map[string][]step{
		"read once, then every 30 s while pods are created": {
			{data: lab, jobs: []toStart{alice}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{aliceAccount}},
			{after: 10 * time.Second, data: lab, jobs: []toStart{alice, alice, bob}, reads: 0, want: []*cvlabv1alpha1.ClusterUser{aliceAccount, aliceAccount, none}},
			{after: 25 * time.Second, data: lab, reads: 0},
			{after: time.Second, data: lab, jobs: []toStart{alice}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{aliceAccount}},
		},
		"a job naming its own account needs no entry": {
			{data: lab, jobs: []toStart{own}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{none}},
			{after: time.Second, data: lab, jobs: []toStart{own}, reads: 0, want: []*cvlabv1alpha1.ClusterUser{none}},
		},
		"a newcomer's first job: read again when a job without entry is newer than the copy": {
			{data: map[string]string{}, jobs: []toStart{alice}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{none}},
			{after: 2 * time.Second, data: lab, jobs: []toStart{alice}, reads: 0, want: []*cvlabv1alpha1.ClusterUser{none}},
			{after: 3 * time.Second, data: lab, jobs: []toStart{bob, newAlice}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{none, aliceAccount}},
			{after: time.Second, data: lab, jobs: []toStart{newBob, newBob}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{none, none}},
			{after: time.Second, data: lab, jobs: []toStart{{user: "bob", age: 10 * time.Second}}, reads: 0, want: []*cvlabv1alpha1.ClusterUser{none}},
		},
		"no directory: no account": {
			{data: nil, jobs: []toStart{alice}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{none}},
			{after: time.Second, data: nil, jobs: []toStart{alice}, reads: 0, want: []*cvlabv1alpha1.ClusterUser{none}},
		},
		"a failed first read holds back the jobs without account, not the others": {
			{err: unavailable, jobs: []toStart{alice, own}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{none, none},
				wantErr: "the job names no clusterUser and the lab directory cvlab-queue-system/cvlab-queue-lab-directory, which may hold alice's, could not be read yet: etcd is down"},
			{after: time.Second, data: lab, jobs: []toStart{alice}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{aliceAccount}},
		},
		"a failed later read keeps the last copy": {
			{data: lab, jobs: []toStart{alice}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{aliceAccount}},
			{after: 31 * time.Second, err: unavailable, jobs: []toStart{alice}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{aliceAccount}},
			{after: time.Second, data: lab, jobs: []toStart{alice}, reads: 0, want: []*cvlabv1alpha1.ClusterUser{aliceAccount}},
		},
		"forbidden (no Role): no directory": {
			{err: apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, validation.DirectoryName, errors.New("RBAC")),
				jobs: []toStart{alice}, reads: 1, want: []*cvlabv1alpha1.ClusterUser{none}},
		},
		"an invalid entry is no entry": {
			{data: map[string]string{"alice": "name=alice uid=me groupName=cvlab gid=1"}, jobs: []toStart{alice}, reads: 1,
				want: []*cvlabv1alpha1.ClusterUser{none}},
		},
	}
	for name, steps := range cases {
		t.Run(name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
			var cur step
			reads := 0
			reader := fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
					reads++
					if key != dirKey {
						t.Fatalf("read %s, want %s", key, dirKey)
					}
					switch {
					case cur.err != nil:
						return cur.err
					case cur.data == nil:
						return apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, key.Name)
					}
					obj.(*corev1.ConfigMap).Data = cur.data
					return nil
				}}).Build()
			d := newLabDirectory(reader, dirKey.Namespace, clk)
			for i, s := range steps {
				cur = s
				clk.Step(s.after)
				before := reads
				var creations []*lifecycle.Creation
				for k, js := range s.jobs {
					j := &cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", js.user, k), Namespace: "lab",
						CreationTimestamp: metav1.NewTime(clk.Now().Add(-js.age))}, Spec: cvlabv1alpha1.CvlabJobSpec{User: js.user, Image: "img", ClusterUser: js.cu}}
					creations = append(creations, &lifecycle.Creation{View: &observe.Job{Job: j}})
				}
				d.refresh(context.Background(), creations)
				if got := reads - before; got != s.reads {
					t.Errorf("step %d: %d reads, want %d", i, got, s.reads)
				}
				for k, c := range creations {
					j := c.View.Job
					got, err := d.identity(j)
					switch {
					case s.wantErr != "" && j.Spec.ClusterUser == nil:
						if err == nil || err.Error() != s.wantErr {
							t.Errorf("step %d, %s: error %v, want %q", i, j.Name, err, s.wantErr)
						}
					case err != nil:
						t.Errorf("step %d, %s: %v", i, j.Name, err)
					}
					if diff := cmp.Diff(s.want[k], got); diff != "" {
						t.Errorf("step %d, %s: account (-want +got):\n%s", i, j.Name, diff)
					}
				}
			}
		})
	}

	t.Run("no directory configured", func(t *testing.T) {
		var d *labDirectory
		j := &cvlabv1alpha1.CvlabJob{Spec: cvlabv1alpha1.CvlabJobSpec{User: "alice", Image: "img"}}
		d.refresh(context.Background(), []*lifecycle.Creation{{View: &observe.Job{Job: j}}})
		if got, err := d.identity(j); got != nil || err != nil {
			t.Errorf("identity = %+v, %v; want none", got, err)
		}
	})
}
