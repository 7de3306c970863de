package directory_test

// The admission policy config/policies/job_cluster_user.yaml reads the lab directory in CEL; the
// operator and `kubectl cvlab` read it with Parse. Were they to disagree on an entry, the policy
// would accept a clusterUser the operator does not know, or refuse what the operator fills. These
// tests compile the policy with the API server's own admission code (as api/v1alpha1's fuzz tests
// do for job-spec) and check both readings against each other, on cases and on fuzzed entries:
//
//	go test ./internal/directory -run '^$' -fuzz '^FuzzPolicyAgreesWithParse$' -fuzztime 60s

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/apiserver/pkg/cel/environment"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/directory"
)

var (
	policyOnce sync.Once
	policy     validating.Validator
	policyErr  error
)

// clusterUserPolicy compiles the policy (its first document) as the API server's admission plugin
// does, with params and the authorizer.
func clusterUserPolicy(t testing.TB) validating.Validator {
	policyOnce.Do(func() {
		var b []byte
		b, policyErr = os.ReadFile(filepath.Join("..", "..", "config", "policies", "job_cluster_user.yaml"))
		if policyErr != nil {
			return
		}
		var p admissionregistrationv1.ValidatingAdmissionPolicy
		if policyErr = yaml.UnmarshalStrict(bytes.SplitN(b, []byte("\n---\n"), 2)[0], &p); policyErr != nil {
			return
		}
		compiler, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
		if err != nil {
			policyErr = err
			return
		}
		vars := plugincel.OptionalVariableDeclarations{HasParams: true, HasAuthorizer: true}
		var variables []plugincel.NamedExpressionAccessor
		for _, v := range p.Spec.Variables {
			variables = append(variables, &validating.Variable{Name: v.Name, Expression: v.Expression})
		}
		compiler.CompileAndStoreVariables(variables, vars, environment.StoredExpressions)
		validations := make([]plugincel.ExpressionAccessor, len(p.Spec.Validations))
		messages := make([]plugincel.ExpressionAccessor, len(p.Spec.Validations))
		for i, v := range p.Spec.Validations {
			validations[i] = &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason}
			messages[i] = &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression}
		}
		policy = validating.NewValidator(
			compiler.CompileCondition(validations, vars, environment.StoredExpressions), nil,
			compiler.CompileCondition(nil, vars, environment.StoredExpressions),
			compiler.CompileCondition(messages, plugincel.OptionalVariableDeclarations{HasParams: true}, environment.StoredExpressions),
			p.Spec.FailurePolicy, nil)
		policyErr = policy.CompileError()
	})
	if policyErr != nil {
		t.Fatal(policyErr)
	}
	return policy
}

// admins are the queue admins: the groups the authorizer lets deletecollection (cvlab-admin in the
// cluster; the API server's own privileged-groups authorizer here).
var admins = authorizerfactory.NewPrivilegedGroups("cvlab-admins")

// create runs the policy on requester creating a job of spec.user user with clusterUser cu (nil:
// omitted) against the directory data: the refusal messages, none when accepted. An evaluation
// error fails the test (the API server would refuse with an error that explains nothing).
func create(t *testing.T, data map[string]string, requester user.Info, specUser string, cu *cvlabv1alpha1.ClusterUser, env ...string) []string {
	t.Helper()
	spec := map[string]any{"user": specUser, "image": "x"}
	if len(env) > 0 {
		var list []any
		for _, name := range env {
			list = append(list, map[string]any{"name": name, "value": "1"})
		}
		spec["env"] = list
	}
	if cu != nil {
		spec["clusterUser"] = map[string]any{"name": cu.Name, "uid": cu.UID, "groupName": cu.GroupName, "gid": cu.GID}
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": cvlabv1alpha1.GroupVersion.String(), "kind": "CvlabJob",
		"metadata": map[string]any{"name": "j", "namespace": "lab"}, "spec": spec}}
	gvk := cvlabv1alpha1.GroupVersion.WithKind("CvlabJob")
	gvr := cvlabv1alpha1.GroupVersion.WithResource("cvlabjobs")
	attrs := admission.NewAttributesRecord(u, nil, gvk, "lab", "j", gvr, "", admission.Create, &metav1.CreateOptions{}, false, requester)
	params := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "cvlab-queue-system", Name: "cvlab-queue-lab-directory"}, Data: data}
	res := clusterUserPolicy(t).Validate(context.Background(), gvr,
		&admission.VersionedAttributes{Attributes: attrs, VersionedObject: admission.NewLazyObject(u), VersionedKind: gvk},
		runtime.Object(params), nil, celconfig.RuntimeCELCostBudget, admins)
	var msgs []string
	for _, d := range res.Decisions {
		switch {
		case d.Evaluation == validating.EvalError:
			t.Fatalf("the policy failed (%s) for directory %q, user %q, clusterUser %+v", d.Message, data, specUser, cu)
		case d.Action == validating.ActionDeny:
			msgs = append(msgs, d.Message)
		}
	}
	return msgs
}

var (
	alice  = &user.DefaultInfo{Name: "oidc:alice", Groups: []string{"cvlab-users"}}
	carol  = &user.DefaultInfo{Name: "oidc:carol", Groups: []string{"cvlab-users", "cvlab-admins"}}
	aliceU = &cvlabv1alpha1.ClusterUser{Name: "alice", UID: 123456, GroupName: "cvlab", GID: 11166}
	bobU   = &cvlabv1alpha1.ClusterUser{Name: "bob", UID: 123457, GroupName: "cvlab", GID: 11166}
)

const (
	aliceEntry = "name=alice uid=123456 groupName=cvlab gid=11166"
	bobEntry   = "name=bob uid=123457 groupName=cvlab gid=11166"
	dirName    = "cvlab-queue-system/cvlab-queue-lab-directory"
)

func TestPolicy(t *testing.T) {
	lab := map[string]string{"alice": aliceEntry, "bob": bobEntry}
	enforced := map[string]string{"alice": aliceEntry, "enforce": "true"}
	cases := map[string]struct {
		data      map[string]string
		requester user.Info
		specUser  string
		cu        *cvlabv1alpha1.ClusterUser
		env       []string // names in spec.env
		want      string   // the refusal message; "" accepted
	}{
		"her own account":        {data: lab, requester: alice, specUser: "alice", cu: aliceU},
		"no clusterUser":         {data: lab, requester: alice, specUser: "alice"},
		"no directory":           {data: nil, requester: alice, specUser: "alice", cu: bobU},
		"no entry, not enforced": {data: map[string]string{"carol": "name=carol uid=1 groupName=g gid=1"}, requester: alice, specUser: "alice", cu: bobU},
		"no entry, bob's account": {data: map[string]string{"bob": bobEntry}, requester: alice, specUser: "alice", cu: bobU,
			want: `spec.clusterUser (name "bob", uid 123457) is the account of bob in the lab directory, which has no entry for "alice": you cannot run as someone else;` +
				` ask a queue admin (cvlab-admin) to add your entry to ConfigMap ` + dirName + `, or leave clusterUser out`},
		"no entry, bob's uid in a bad entry": {data: map[string]string{"bob": "uid=0123457", "dan": "name=bob"}, requester: alice, specUser: "alice",
			cu:   &cvlabv1alpha1.ClusterUser{Name: "al", UID: 123457, GroupName: "g", GID: 1},
			want: `spec.clusterUser (name "al", uid 123457) is the account of bob in the lab directory`},
		"no entry, bob's name": {data: map[string]string{"bob": bobEntry}, requester: alice, specUser: "alice",
			cu:   &cvlabv1alpha1.ClusterUser{Name: "bob", UID: 5, GroupName: "cvlab", GID: 11166},
			want: `spec.clusterUser (name "bob", uid 5) is the account of bob in the lab directory`},
		"no entry, bob's group is anyone's": {data: map[string]string{"bob": bobEntry}, requester: alice, specUser: "alice",
			cu: &cvlabv1alpha1.ClusterUser{Name: "al", UID: 5, GroupName: "cvlab", GID: 11166}},
		"a user named enforce has no entry": {data: lab, requester: alice, specUser: "enforce",
			cu: &cvlabv1alpha1.ClusterUser{Name: "e", UID: 9, GroupName: "g", GID: 9}},
		"bob's account": {data: lab, requester: alice, specUser: "alice", cu: bobU,
			want: `spec.clusterUser does not match the lab directory entry for "alice": name "bob" (the directory says "alice"), uid 123457 (the directory says 123456);` +
				` you can only run as your own cluster account: leave clusterUser out and the queue fills it from the directory,` +
				` or ask a queue admin (cvlab-admin) to correct ConfigMap ` + dirName},
		"one field off": {data: lab, requester: alice, specUser: "alice", cu: &cvlabv1alpha1.ClusterUser{Name: "alice", UID: 123456, GroupName: "cvlab", GID: 0},
			want: `spec.clusterUser does not match the lab directory entry for "alice": gid 0 (the directory says 11166);`},
		"a queue admin sets anyone's account": {data: lab, requester: carol, specUser: "alice", cu: bobU},
		"a bad entry": {data: map[string]string{"alice": "name=alice uid=x groupName=cvlab gid=1"}, requester: alice, specUser: "alice", cu: aliceU,
			want: `the lab directory entry for "alice" is not valid (uid "x" is not a number of at most 18 digits), so spec.clusterUser cannot be checked:` +
				` ask a queue admin (cvlab-admin) to fix ConfigMap ` + dirName + ` (key alice: "name=<account> uid=<number> groupName=<group> gid=<number>"), or leave clusterUser out`},
		"a bad entry, no clusterUser": {data: map[string]string{"alice": "name=alice"}, requester: alice, specUser: "alice"},
		"enforced, with an entry":     {data: enforced, requester: alice, specUser: "alice"},
		"enforced, without an entry": {data: enforced, requester: alice, specUser: "bob",
			want: `no lab directory entry for bob; ask an admin to add you (ConfigMap ` + dirName + ` has enforce: "true": jobs run only as accounts it lists)`},
		"enforced, a bad entry": {data: map[string]string{"alice": "name=alice name=al uid=1 groupName=g", "enforce": "True"}, requester: alice, specUser: "alice",
			want: `the lab directory entry for alice is not valid (name is given 2 times, gid is missing) and the directory is enforced (enforce: "true"); ask an admin to fix it in ConfigMap ` + dirName},
		"enforced, for a queue admin": {data: enforced, requester: carol, specUser: "bob", cu: bobU},
		"enforce false":               {data: map[string]string{"enforce": "false"}, requester: alice, specUser: "alice", cu: bobU},
		"clusterUser through spec.env": {data: lab, requester: alice, specUser: "alice", env: []string{"A", "CLUSTER_USER_ID", "CLUSTER_GROUP_ID"},
			want: `spec.env sets CLUSTER_USER_ID, CLUSTER_GROUP_ID, the variables of spec.clusterUser, and the lab directory has an entry for "alice":` +
				` leave them out and the queue sets them from the directory, or set spec.clusterUser (it must match the directory)`},
		"through spec.env, a bad entry": {data: map[string]string{"alice": "uid=1"}, requester: alice, specUser: "alice", env: []string{"CLUSTER_USER"},
			want: `spec.env sets CLUSTER_USER, the variables of spec.clusterUser, and the lab directory has an entry for "alice"`},
		"through spec.env, no entry":          {data: map[string]string{"bob": bobEntry}, requester: alice, specUser: "alice", env: []string{"CLUSTER_USER_ID"}},
		"through spec.env, for a queue admin": {data: lab, requester: carol, specUser: "alice", env: []string{"CLUSTER_USER_ID"}},
		"other variables":                     {data: lab, requester: alice, specUser: "alice", env: []string{"CLUSTER", "cluster_user_id", "USER"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			msgs := create(t, tc.data, tc.requester, tc.specUser, tc.cu, tc.env...)
			switch {
			case tc.want == "" && len(msgs) > 0:
				t.Fatalf("refused: %q", msgs)
			case tc.want == "":
			case len(msgs) != 1:
				t.Fatalf("got %d refusals %q, want one: %q", len(msgs), msgs, tc.want)
			case !strings.HasPrefix(msgs[0], tc.want):
				t.Fatalf("refusal\n  %q\nwant it to start with\n  %q", msgs[0], tc.want)
			}
		})
	}
}

// FuzzPolicyAgreesWithParse: for any entries of alice (the requester; none when "") and bob, and any
// clusterUser the CRD accepts, the policy refuses exactly when Parse says so: a valid entry that
// differs, an entry that is not valid while a clusterUser is given, no entry and bob's account, no
// valid entry in an enforced directory. Never an evaluation error; never a queue admin.
func FuzzPolicyAgreesWithParse(f *testing.F) {
	f.Add(aliceEntry, bobEntry, "alice", int64(123456), "cvlab", int64(11166), true, "")
	f.Add(aliceEntry, bobEntry, "alice", int64(123457), "cvlab", int64(11166), true, "true")
	f.Add("", bobEntry, "bob", int64(1), "cvlab", int64(11166), true, "")
	f.Add("", "uid=0123457 uid=x name=b name=", "b2", int64(123457), "cvlab", int64(11166), true, "")
	f.Add(" gid=7\tname=é=1 email=a@b uid=007 groupName=ラボ\n", "", "é=1", int64(7), "ラボ", int64(7), true, " TRUE ")
	f.Add("name=a uid=1 uid=1 groupName=g gid=1", "name=a", "a", int64(1), "g", int64(1), false, "true")
	f.Add("name= uid=-1 groupName=g gid=1e3", "uid=-1", "x", int64(0), "g", int64(0), true, "false")
	f.Add("name=a\u00a0b uid=1 groupName=g gid=1", "", "a\u00a0b", int64(1), "g", int64(1), true, "")
	f.Add("name="+strings.Repeat("é", 65)+" uid=999999999999999999 groupName=g gid=1", "", "a", int64(999999999999999999), "g", int64(1), true, "")
	f.Fuzz(func(t *testing.T, entry, bobsEntry, name string, uid int64, group string, gid int64, withCU bool, enforce string) {
		// What the API server can hold: valid UTF-8, and a clusterUser within the CRD's schema.
		// alice's entry "" is no entry.
		entry, bobsEntry, enforce = strings.ToValidUTF8(entry, "\uFFFD"), strings.ToValidUTF8(bobsEntry, "\uFFFD"), strings.ToValidUTF8(enforce, "\uFFFD")
		name, group = strings.ToValidUTF8(name, "\uFFFD"), strings.ToValidUTF8(group, "\uFFFD")
		var cu *cvlabv1alpha1.ClusterUser
		if withCU {
			if n, g := utf8.RuneCountInString(name), utf8.RuneCountInString(group); n < 1 || n > 64 || g < 1 || g > 64 || uid < 0 || gid < 0 {
				return
			}
			cu = &cvlabv1alpha1.ClusterUser{Name: name, UID: uid, GroupName: group, GID: gid}
		}
		data := map[string]string{"bob": bobsEntry, "enforce": enforce}
		if entry != "" {
			data["alice"] = entry
		}

		d, _ := directory.Parse(data)
		id, ok := d.Lookup("alice")
		_, bad := d.Problem("alice")
		var want []string
		if cu != nil && ok && id != directory.FromClusterUser(cu) {
			want = append(want, "does not match the lab directory entry")
		}
		if cu != nil && bad {
			want = append(want, "is not valid")
		}
		if cu != nil && !ok && !bad && len(d.Holders(cu.Name, cu.UID)) > 0 {
			want = append(want, "is the account of "+strings.Join(d.Holders(cu.Name, cu.UID), ", "))
		}
		if d.Enforced() && !ok {
			want = append(want, "is not valid")
		}
		got := create(t, data, alice, "alice", cu)
		if len(got) != len(want) {
			t.Fatalf("entry %q, enforce %q, clusterUser %+v: the policy says %q, Parse says %q (valid %v %+v)", entry, enforce, cu, got, want, ok, id)
		}
		for i := range want {
			if !strings.Contains(got[i], want[i]) {
				t.Fatalf("entry %q, clusterUser %+v: refusal %q, want %q", entry, cu, got[i], want[i])
			}
		}
		if got := create(t, data, carol, "alice", cu); len(got) > 0 {
			t.Fatalf("a queue admin refused: %q", got)
		}
	})
}
