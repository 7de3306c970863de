package v1alpha1_test

// Bad input at scale: random CvlabJobs go through what the API server does with a create request
// (the real CRD of config/crd/bases: strict decoding, defaults, OpenAPI schema, list-map keys, CEL
// rules), then, when accepted, through the operator: decoding as the informer does, the pod builder
// (controllers.BuildPod) and the engine (queue.Decide). Every input must be refused with an error
// that names its field, or give a pod the API server accepts (checked with apimachinery's
// validation functions, see validPod), and nothing may panic.
//
//	go test ./api/v1alpha1 -run '^$' -fuzz '^FuzzCvlabJobFields$' -fuzztime 60s
//	go test ./api/v1alpha1 -run '^$' -fuzz '^FuzzCvlabJobJSON$' -fuzztime 60s
//
// Plain `go test` runs the seeds below and testdata/fuzz/.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsvalidationcrd "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiextensionsvalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/controllers"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// ---------------------------------------------------------------------------------------------
// The API server, offline.

// apiServer validates CvlabJob create requests as kube-apiserver does with the CRD and the
// ValidatingAdmissionPolicy of config/policies/job_spec.yaml installed.
type apiServer struct {
	structural *structuralschema.Structural
	schema     apiextensionsvalidation.SchemaValidator
	cel        *cel.Validator
	jobSpec    validating.Validator
}

var (
	loadOnce sync.Once
	server   *apiServer
	loadErr  error
)

func crdServer(t testing.TB) *apiServer {
	loadOnce.Do(func() {
		server, loadErr = loadCRD(filepath.Join("..", "..", "config", "crd", "bases", "cvlab.epfl.ch_cvlabjobs.yaml"))
		if loadErr == nil {
			server.jobSpec, loadErr = loadPolicy(filepath.Join("..", "..", "config", "policies", "job_spec.yaml"))
		}
	})
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return server
}

func loadCRD(file string) (*apiServer, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(b, &crd); err != nil {
		return nil, err
	}
	// The API server's own checks of the CRD first: CEL rules that do not compile or whose
	// estimated cost is over budget make it refuse the whole CRD.
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(&crd)
	var internalCRD apiextensionsinternal.CustomResourceDefinition
	if err := apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&crd, &internalCRD, nil); err != nil {
		return nil, err
	}
	if errs := apiextensionsvalidationcrd.ValidateCustomResourceDefinition(context.Background(), &internalCRD); len(errs) > 0 {
		return nil, fmt.Errorf("the API server would refuse %s: %w", file, errs.ToAggregate())
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != cvlabv1alpha1.GroupVersion.Version {
			continue
		}
		internal := &apiextensionsinternal.JSONSchemaProps{}
		if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, internal, nil); err != nil {
			return nil, err
		}
		s, err := structuralschema.NewStructural(internal)
		if err != nil {
			return nil, err
		}
		validator, _, err := apiextensionsvalidation.NewSchemaValidator(internal)
		if err != nil {
			return nil, err
		}
		return &apiServer{structural: s, schema: validator, cel: cel.NewValidator(s, true, celconfig.PerCallLimit)}, nil
	}
	return nil, fmt.Errorf("%s has no version %s", file, cvlabv1alpha1.GroupVersion.Version)
}

// loadPolicy compiles a ValidatingAdmissionPolicy (without params) as the API server's admission
// plugin does.
func loadPolicy(file string) (validating.Validator, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var p admissionregistrationv1.ValidatingAdmissionPolicy
	if err := yaml.UnmarshalStrict(bytes.SplitN(b, []byte("\n---\n"), 2)[0], &p); err != nil {
		return nil, err
	}
	if p.Spec.ParamKind != nil || len(p.Spec.MatchConditions) > 0 {
		return nil, fmt.Errorf("%s: params and match conditions are not supported here", file)
	}
	compiler, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		return nil, err
	}
	vars := plugincel.OptionalVariableDeclarations{HasAuthorizer: true}
	var variables []plugincel.NamedExpressionAccessor
	for _, v := range p.Spec.Variables {
		variables = append(variables, &validating.Variable{Name: v.Name, Expression: v.Expression})
	}
	compiler.CompileAndStoreVariables(variables, vars, environment.StoredExpressions)
	validations := make([]plugincel.ExpressionAccessor, len(p.Spec.Validations))
	messages := make([]plugincel.ExpressionAccessor, len(p.Spec.Validations))
	for i, v := range p.Spec.Validations {
		validations[i] = &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason}
		if v.MessageExpression != "" {
			messages[i] = &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression}
		}
	}
	validator := validating.NewValidator(
		compiler.CompileCondition(validations, vars, environment.StoredExpressions), nil,
		compiler.CompileCondition(nil, vars, environment.StoredExpressions),
		compiler.CompileCondition(messages, plugincel.OptionalVariableDeclarations{}, environment.StoredExpressions),
		p.Spec.FailurePolicy, nil)
	if err := validator.CompileError(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return validator, nil
}

// admit runs the job-spec policy on a create of obj, as the ValidatingAdmissionPolicy plugin does.
func (s *apiServer) admit(obj map[string]any) field.ErrorList {
	u := &unstructured.Unstructured{Object: obj}
	gvk := cvlabv1alpha1.GroupVersion.WithKind("CvlabJob")
	gvr := cvlabv1alpha1.GroupVersion.WithResource("cvlabjobs")
	attrs := admission.NewAttributesRecord(u, nil, gvk, u.GetNamespace(), u.GetName(), gvr, "", admission.Create,
		&metav1.CreateOptions{}, false, &user.DefaultInfo{Name: "oidc:fuzz"})
	res := s.jobSpec.Validate(context.Background(), gvr, &admission.VersionedAttributes{Attributes: attrs, VersionedObject: admission.NewLazyObject(u), VersionedKind: gvk},
		nil, nil, celconfig.RuntimeCELCostBudget, nil)
	var errs field.ErrorList
	for _, d := range res.Decisions {
		switch {
		case d.Evaluation == validating.EvalError:
			errs = append(errs, field.InternalError(nil, fmt.Errorf("ValidatingAdmissionPolicy cvlab-queue-job-spec failed: %s", d.Message)))
		case d.Action == validating.ActionDeny:
			// The API server answers: ValidatingAdmissionPolicy 'cvlab-queue-job-spec' with binding
			// ... denied request: <message>; the message starts with the field.
			f, detail, _ := strings.Cut(d.Message, ": ")
			errs = append(errs, field.Invalid(field.NewPath(f), "", detail))
		}
	}
	return errs
}

// create is a POST of body (JSON) as `kubectl apply` sends it (strict field validation). It returns
// the stored object, or the errors the API server would answer with.
func (s *apiServer) create(body []byte) (map[string]any, field.ErrorList) {
	// Decoded as the API server does: integers as int64, other numbers as float64.
	var obj map[string]any
	if err := utiljson.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, field.ErrorList{field.Invalid(field.NewPath("body"), string(body), "not a JSON object")}
	}
	// Strict decoding: unknown fields are errors, then dropped; then the schema's defaults.
	var errs field.ErrorList
	for _, p := range structuralpruning.PruneWithOptions(obj, s.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}) {
		// kube-apiserver: strict decoding error: unknown field "spec.gpu"
		errs = append(errs, field.Invalid(field.NewPath("body"), p, fmt.Sprintf("strict decoding error: unknown field %q", p)))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	structuraldefaulting.Default(obj, s.structural)

	// metadata (the name is a DNS subdomain for custom resources), schema, list maps, CEL.
	if md, ok := obj["metadata"].(map[string]any); ok {
		name, _ := md["name"].(string)
		for _, msg := range apimachineryvalidation.NameIsDNSSubdomain(name, false) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), name, msg))
		}
		for _, msg := range path.IsValidPathSegmentName(name) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), name, msg))
		}
	}
	errs = append(errs, apiextensionsvalidation.ValidateCustomResource(nil, obj, s.schema)...)
	errs = append(errs, schemaobjectmeta.Validate(context.Background(), nil, obj, s.structural, false)...)
	errs = append(errs, structurallisttype.ValidateListSetsAndMaps(nil, s.structural, obj)...)
	if len(errs) == 0 {
		celErrs, _ := s.cel.Validate(context.Background(), nil, s.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	// Validating admission comes after the object's own validation.
	if errs := s.admit(obj); len(errs) > 0 {
		return nil, errs
	}
	return obj, nil
}

// ---------------------------------------------------------------------------------------------
// The property.

// checkJob is the whole property for one request body.
func checkJob(t *testing.T, body []byte) {
	s := crdServer(t)
	obj, errs := s.create(body)
	if len(errs) > 0 {
		for _, e := range errs {
			// A clear error names the field (in its path, or in its text as kube-openapi's format
			// checks do: "... with format int32 in spec.priority") and says what is wrong.
			named := e.Field == "body"
			for _, root := range []string{"metadata", "spec", "apiVersion", "kind"} {
				named = named || strings.HasPrefix(e.Field, root) || strings.Contains(e.ErrorBody(), " in "+root+".") ||
					strings.HasPrefix(fmt.Sprint(e.Detail), root+".") // a rule of the root: "metadata.name: at most ..."
			}
			if !named || e.Type == field.ErrorTypeInternal || e.ErrorBody() == "" {
				t.Fatalf("unclear error %q (type %s) for\n%s", e.Error(), e.Type, body)
			}
		}
		return
	}

	// The operator reads what the API server stored, as JSON, like its informer.
	stored, err := json.Marshal(obj)
	if err != nil {
		t.Fatalf("stored object does not marshal: %v", err)
	}
	var job cvlabv1alpha1.CvlabJob
	if err := json.Unmarshal(stored, &job); err != nil {
		t.Fatalf("the API server accepts a job the operator cannot decode (its informer would fail for every job): %v\n%s", err, stored)
	}
	if job.Spec.User == "" {
		// Without the admission policies an optional spec.user could stay empty; with them it is
		// the requester's (config/policies/job_owner_default.yaml).
		job.Spec.User = "requester"
	}

	for _, p := range []*corev1.Pod{
		controllers.BuildPod(&job, 1, "", ""),
		controllers.BuildPod(&job, math.MaxInt32, "gpu-node-1", "gpu-node-1.lab.example"),
	} {
		if errs := validPod(p); len(errs) > 0 {
			podJSON, _ := json.Marshal(p)
			t.Fatalf("the API server accepts the job but refuses its pod:\n%s\njob: %s\npod: %s", errs.ToAggregate(), stored, podJSON)
		}
		if msg := gpuEnvLeak(&job, p); msg != "" {
			podJSON, _ := json.Marshal(p)
			t.Fatalf("GPUs around the queue: %s\njob: %s\npod: %s", msg, stored, podJSON)
		}
	}
	checkClusterUser(t, &job, stored)
	checkEngine(t, &job)
}

// checkClusterUser: the pod acts as the job's spec.clusterUser or, when the job names none, as the
// lab directory's account the operator hands BuildPod (controllers/directory.go), whatever
// spec.env says: the kubelet takes the last definition of a variable, and the operator's are last.
func checkClusterUser(t *testing.T, job *cvlabv1alpha1.CvlabJob, stored []byte) {
	fromDirectory := &cvlabv1alpha1.ClusterUser{Name: "from-directory", UID: 4242, GroupName: "lab", GID: 7}
	want := job.Spec.ClusterUser
	if want == nil {
		want = fromDirectory
	}
	p := controllers.BuildPod(job, 1, "", "", controllers.WithDirectoryUser(fromDirectory))
	if errs := validPod(p); len(errs) > 0 {
		t.Fatalf("the pod with the directory's account is refused:\n%s\njob: %s", errs.ToAggregate(), stored)
	}
	got := map[string]string{}
	for _, e := range p.Spec.Containers[0].Env {
		if strings.HasPrefix(e.Name, "CLUSTER_") {
			got[e.Name] = e.Value
		}
	}
	wantEnv := map[string]string{"CLUSTER_USER": want.Name, "CLUSTER_USER_ID": strconv.FormatInt(want.UID, 10),
		"CLUSTER_GROUP_NAME": want.GroupName, "CLUSTER_GROUP_ID": strconv.FormatInt(want.GID, 10)}
	for k, v := range wantEnv {
		if got[k] != v {
			t.Fatalf("the pod's %s is %q, want %q (the %s's account)\njob: %s", k, got[k], v,
				map[bool]string{true: "job", false: "directory"}[job.Spec.ClusterUser != nil], stored)
		}
	}
}

// gpuEnvLeak says how an accepted job's pod would reach GPUs through NVIDIA_VISIBLE_DEVICES, the
// variable the NVIDIA container runtime reads (case-sensitive): "" when it cannot. The job's
// spec.env may not name it (CRD rule); a CPU job's container ends with it set to void, a GPU
// job's leaves it to the device plugin (docs/security.md).
func gpuEnvLeak(job *cvlabv1alpha1.CvlabJob, p *corev1.Pod) string {
	for _, e := range job.Spec.Env {
		if e.Name == controllers.EnvNVIDIAVisibleDevices {
			return "the API server accepted spec.env setting " + e.Name
		}
	}
	var last *corev1.EnvVar
	for i, e := range p.Spec.Containers[0].Env {
		if e.Name == controllers.EnvNVIDIAVisibleDevices {
			last = &p.Spec.Containers[0].Env[i]
		}
	}
	switch {
	case job.Spec.GPUs == 0 && (last == nil || last.Value != "void" || last.ValueFrom != nil):
		return "a CPU job's container does not end with NVIDIA_VISIBLE_DEVICES=void (a CUDA image's \"all\" would show every GPU)"
	case job.Spec.GPUs > 0 && last != nil:
		return "a GPU job's container sets NVIDIA_VISIBLE_DEVICES itself (more GPUs than the device plugin allocated)"
	}
	return ""
}

// checkEngine runs the queue with the job among others, in pool and node-aware modes.
func checkEngine(t *testing.T, job *cvlabv1alpha1.CvlabJob) {
	now := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	me := queue.Job{Key: job.Namespace + "/" + job.Name, User: job.Spec.User, Priority: job.Spec.Priority,
		Created: now.Add(-time.Minute), GPUs: job.Spec.GPUs, State: queue.Waiting}
	others := []queue.Job{
		{Key: "lab/alice-1", User: "alice", GPUs: 2, Created: now.Add(-time.Hour), State: queue.Holding, Node: "n1", Started: now.Add(-time.Hour)},
		{Key: "lab/bob-1", User: "bob", GPUs: 1, Created: now.Add(-30 * time.Minute), State: queue.Holding, Node: "n2", Started: now.Add(-20 * time.Minute)},
		{Key: "lab/bob-2", User: "bob", GPUs: 4, Priority: 3, Created: now.Add(-10 * time.Minute), State: queue.Waiting},
		{Key: "lab/" + job.Spec.User + "-old", User: job.Spec.User, GPUs: 1, Created: now.Add(-2 * time.Hour), State: queue.Holding, Node: "n1", Started: now.Add(-2 * time.Hour)},
	}
	jobs := append([]queue.Job{me}, others...)
	for _, nodes := range [][]queue.Node{nil, {{Name: "n1", GPUs: 4}, {Name: "n2", GPUs: 4}}} {
		s := queue.Snapshot{Jobs: jobs, Nodes: nodes, Capacity: 8, Now: now, MaxHeadWait: 30 * time.Minute,
			Preemption: queue.PreemptFirstGPU, MinRuntime: 10 * time.Minute}
		d := queue.Decide(s)
		var gpuJobs int
		for _, j := range jobs {
			if j.GPUs > 0 {
				gpuJobs++
			}
		}
		if len(d.Order) != gpuJobs {
			t.Fatalf("%d GPU jobs but %d in the order", gpuJobs, len(d.Order))
		}
		var admitted int32
		for i, e := range d.Order {
			if e.Rank != i+1 {
				t.Fatalf("rank %d at place %d", e.Rank, i+1)
			}
			if e.State == queue.Holding || e.Admit {
				admitted += e.GPUs
			}
		}
		if admitted > s.Capacity || d.Free < 0 {
			t.Fatalf("over capacity: %d GPUs held or admitted of %d (free %d)", admitted, s.Capacity, d.Free)
		}
	}
}

// ---------------------------------------------------------------------------------------------
// The pod, as the API server validates it (the parts BuildPod fills), without k8s.io/kubernetes.

var (
	portProtocols        = sets.New(corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP)
	envFieldPaths        = sets.New("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs")
	envResourceFieldRefs = sets.New("limits.cpu", "limits.memory", "limits.ephemeral-storage", "requests.cpu", "requests.memory", "requests.ephemeral-storage")
)

func validPod(p *corev1.Pod) field.ErrorList {
	var errs field.ErrorList
	md := field.NewPath("metadata")
	for _, msg := range validation.IsDNS1123Subdomain(p.Name) {
		errs = append(errs, field.Invalid(md.Child("name"), p.Name, msg))
	}
	for _, msg := range validation.IsDNS1123Label(p.Namespace) {
		errs = append(errs, field.Invalid(md.Child("namespace"), p.Namespace, msg))
	}
	errs = append(errs, metav1validation.ValidateLabels(p.Labels, md.Child("labels"))...)
	errs = append(errs, apimachineryvalidation.ValidateAnnotations(p.Annotations, md.Child("annotations"))...)

	spec := field.NewPath("spec")
	if d := p.Spec.ActiveDeadlineSeconds; d != nil && (*d < 1 || *d > math.MaxInt32) {
		errs = append(errs, field.Invalid(spec.Child("activeDeadlineSeconds"), *d, validation.InclusiveRangeError(1, math.MaxInt32)))
	}
	if g := p.Spec.TerminationGracePeriodSeconds; g != nil && *g < 0 {
		errs = append(errs, field.Invalid(spec.Child("terminationGracePeriodSeconds"), *g, "must be >= 0"))
	}
	volumes := sets.New[string]()
	for i, v := range p.Spec.Volumes {
		vp := spec.Child("volumes").Index(i)
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			errs = append(errs, field.Invalid(vp.Child("name"), v.Name, msg))
		}
		if volumes.Has(v.Name) {
			errs = append(errs, field.Duplicate(vp.Child("name"), v.Name))
		}
		volumes.Insert(v.Name)
		if v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName == "" {
			errs = append(errs, field.Required(vp.Child("persistentVolumeClaim", "claimName"), ""))
		}
	}
	if a := p.Spec.Affinity; a != nil && a.NodeAffinity != nil {
		for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			for _, r := range term.MatchExpressions {
				for _, v := range r.Values {
					for _, msg := range validation.IsValidLabelValue(v) {
						errs = append(errs, field.Invalid(spec.Child("affinity"), v, msg))
					}
				}
			}
		}
	}
	for i := range p.Spec.Containers {
		errs = append(errs, validContainer(&p.Spec.Containers[i], volumes, spec.Child("containers").Index(i))...)
	}
	return errs
}

func validContainer(c *corev1.Container, volumes sets.Set[string], fp *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(c.Name) {
		errs = append(errs, field.Invalid(fp.Child("name"), c.Name, msg))
	}
	if c.Image == "" {
		errs = append(errs, field.Required(fp.Child("image"), ""))
	}
	for i, e := range c.Env {
		ep := fp.Child("env").Index(i)
		if e.Name == "" {
			errs = append(errs, field.Required(ep.Child("name"), ""))
		}
		for _, msg := range validation.IsRelaxedEnvVarName(e.Name) {
			errs = append(errs, field.Invalid(ep.Child("name"), e.Name, msg))
		}
		errs = append(errs, validEnvValueFrom(e, ep.Child("valueFrom"))...)
	}
	names := sets.New[string]()
	for i, port := range c.Ports {
		pp := fp.Child("ports").Index(i)
		if port.Name != "" {
			for _, msg := range validation.IsValidPortName(port.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
			if names.Has(port.Name) {
				errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
			}
			names.Insert(port.Name)
		}
		for _, msg := range validation.IsValidPortNum(int(port.ContainerPort)) {
			errs = append(errs, field.Invalid(pp.Child("containerPort"), port.ContainerPort, msg))
		}
		if port.HostPort != 0 {
			for _, msg := range validation.IsValidPortNum(int(port.HostPort)) {
				errs = append(errs, field.Invalid(pp.Child("hostPort"), port.HostPort, msg))
			}
		}
		if !portProtocols.Has(port.Protocol) {
			errs = append(errs, field.NotSupported(pp.Child("protocol"), port.Protocol, sets.List(portProtocols)))
		}
		if port.HostIP != "" {
			for _, msg := range validation.IsValidIP(pp.Child("hostIP"), port.HostIP) {
				errs = append(errs, msg)
			}
		}
	}
	rp := fp.Child("resources")
	for name, q := range c.Resources.Limits {
		if q.Sign() < 0 {
			errs = append(errs, field.Invalid(rp.Child("limits").Key(string(name)), q.String(), "must be greater than or equal to 0"))
		}
	}
	for name, q := range c.Resources.Requests {
		if q.Sign() < 0 {
			errs = append(errs, field.Invalid(rp.Child("requests").Key(string(name)), q.String(), "must be greater than or equal to 0"))
		}
		if l, ok := c.Resources.Limits[name]; ok && q.Cmp(l) > 0 {
			errs = append(errs, field.Invalid(rp.Child("requests").Key(string(name)), q.String(), "must be less than or equal to "+string(name)+" limit of "+l.String()))
		}
	}
	if g, ok := c.Resources.Limits[controllers.ResourceGPU]; ok && g.MilliValue()%1000 != 0 {
		errs = append(errs, field.Invalid(rp.Child("limits").Key(string(controllers.ResourceGPU)), g.String(), "must be an integer"))
	}
	mounts := sets.New[string]()
	for i, m := range c.VolumeMounts {
		mp := fp.Child("volumeMounts").Index(i)
		if !volumes.Has(m.Name) {
			errs = append(errs, field.NotFound(mp.Child("name"), m.Name))
		}
		if m.MountPath == "" {
			errs = append(errs, field.Required(mp.Child("mountPath"), ""))
		}
		if mounts.Has(m.MountPath) {
			errs = append(errs, field.Invalid(mp.Child("mountPath"), m.MountPath, "must be unique"))
		}
		mounts.Insert(m.MountPath)
	}
	return errs
}

func validEnvValueFrom(e corev1.EnvVar, fp *field.Path) field.ErrorList {
	vf := e.ValueFrom
	if vf == nil {
		return nil
	}
	var errs field.ErrorList
	sources := 0
	if r := vf.FieldRef; r != nil {
		sources++
		p, subscript, hasSubscript := strings.Cut(r.FieldPath, "[")
		switch {
		case r.APIVersion != "" && r.APIVersion != "v1":
			errs = append(errs, field.Invalid(fp.Child("fieldRef", "apiVersion"), r.APIVersion, "only v1"))
		case hasSubscript && (p == "metadata.labels" || p == "metadata.annotations") && strings.HasPrefix(subscript, "'") && strings.HasSuffix(subscript, "']"):
			for _, msg := range validation.IsQualifiedName(strings.TrimSuffix(strings.TrimPrefix(subscript, "'"), "']")) {
				errs = append(errs, field.Invalid(fp.Child("fieldRef"), r.FieldPath, msg))
			}
		case hasSubscript || !envFieldPaths.Has(r.FieldPath):
			errs = append(errs, field.NotSupported(fp.Child("fieldRef", "fieldPath"), r.FieldPath, sets.List(envFieldPaths)))
		}
	}
	if r := vf.ResourceFieldRef; r != nil {
		sources++
		if !envResourceFieldRefs.Has(r.Resource) {
			errs = append(errs, field.NotSupported(fp.Child("resourceFieldRef", "resource"), r.Resource, sets.List(envResourceFieldRefs)))
		}
		if r.ContainerName != "" && r.ContainerName != controllers.ContainerName {
			errs = append(errs, field.NotFound(fp.Child("resourceFieldRef", "containerName"), r.ContainerName))
		}
	}
	if r := vf.ConfigMapKeyRef; r != nil {
		sources++
		for _, msg := range validation.IsConfigMapKey(r.Key) {
			errs = append(errs, field.Invalid(fp.Child("configMapKeyRef", "key"), r.Key, msg))
		}
		if r.Name == "" {
			errs = append(errs, field.Required(fp.Child("configMapKeyRef", "name"), ""))
		}
	}
	if r := vf.SecretKeyRef; r != nil {
		sources++
		for _, msg := range validation.IsConfigMapKey(r.Key) {
			errs = append(errs, field.Invalid(fp.Child("secretKeyRef", "key"), r.Key, msg))
		}
		if r.Name == "" {
			errs = append(errs, field.Required(fp.Child("secretKeyRef", "name"), ""))
		}
	}
	if r := vf.FileKeyRef; r != nil {
		sources++
	}
	if sources != 1 {
		errs = append(errs, field.Invalid(fp, "", "must specify exactly one source"))
	}
	if e.Value != "" && sources > 0 {
		errs = append(errs, field.Invalid(fp, "", "may not be specified when `value` is not empty"))
	}
	return errs
}

// ---------------------------------------------------------------------------------------------
// The fuzz targets.

// jobBody is a create request for a CvlabJob named name with the given spec (JSON, maybe broken).
func jobBody(name string, spec []byte) []byte {
	n, _ := json.Marshal(name)
	return []byte(`{"apiVersion":"` + cvlabv1alpha1.GroupVersion.String() + `","kind":"CvlabJob","metadata":{"name":` + string(n) +
		`,"namespace":"lab"},"spec":` + string(spec) + `}`)
}

// FuzzCvlabJobJSON feeds raw spec bodies: whatever a client may send.
func FuzzCvlabJobJSON(f *testing.F) {
	samples, _ := filepath.Glob(filepath.Join("..", "..", "config", "samples", "*job.yaml"))
	for _, file := range samples {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var doc struct {
			Metadata struct{ Name string } `json:"metadata"`
			Spec     json.RawMessage       `json:"spec"`
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			f.Fatal(err)
		}
		f.Add(doc.Metadata.Name, []byte(doc.Spec))
	}
	for _, seed := range []struct{ name, spec string }{
		{"minimal", `{"user":"alice","image":"x"}`},
		{"no-user", `{"image":"x"}`},
		{"types", `{"user":7,"image":["x"],"gpus":"2","priority":1.5}`},
		{"unknown", `{"user":"a","image":"x","gpu":1}`},
		{"resources", `{"user":"a","image":"x","resources":{"requests":{"cpu":"500m","memory":"1Gi"},"limits":{"memory":"2Gi"}}}`},
		{"gpus-in-resources", `{"user":"a","image":"x","resources":{"limits":{"nvidia.com/gpu":"1"}}}`},
		{"env-from", `{"user":"a","image":"x","env":[{"name":"POD","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}},{"name":"TOKEN","valueFrom":{"secretKeyRef":{"name":"s","key":"token"}}}]}`},
		{"ports", `{"user":"a","image":"x","ports":[{"name":"jupyter","containerPort":8888},{"containerPort":6006,"protocol":"UDP","hostPort":16006}]}`},
		{"timeout", `{"user":"a","image":"x","timeout":"1h30m","terminationGracePeriodSeconds":0}`},
		{"mounts", `{"user":"a","image":"x","cvlabdata":[{"claimName":"pv-cvlabdata1","mountPath":"/a"},{"claimName":"pv-cvlabdata1","mountPath":"/a"}]}`},
		{"labels", `{"user":"a","image":"x","podLabels":{"team":"vision"},"podAnnotations":{"lab.epfl.ch/note":"hi"}}`},
		{strings.Repeat("a", 242), `{"user":"a","image":"x","gpus":64,"priority":-1000}`},
		// What the CRD alone lets through and the pod would not (config/policies/job_spec.yaml).
		{strings.Repeat("a", 250) + ".bc", `{"user":"a","image":"x"}`}, // pod name "aaa.-1"
		{"label-key", `{"user":"a","image":"x","podLabels":{"bad key":"v"}}`},
		{"label-value", `{"user":"a","image":"x","podLabels":{"k":"-v"}}`},
		{"annotation-key", `{"user":"a","image":"x","podAnnotations":{" ":""}}`},
		{"env-name", `{"user":"a","image":"x","env":[{"name":"A=B","value":"1"}]}`},
		{"env-both", `{"user":"a","image":"x","env":[{"name":"A","value":"1","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}}]}`},
		{"env-field", `{"user":"a","image":"x","env":[{"name":"A","valueFrom":{"fieldRef":{"fieldPath":"spec.containers"}}}]}`},
		{"env-label", `{"user":"a","image":"x","env":[{"name":"A","valueFrom":{"fieldRef":{"fieldPath":"metadata.labels['user']"}}}]}`},
		{"env-key", `{"user":"a","image":"x","env":[{"name":"A","valueFrom":{"secretKeyRef":{"name":"s","key":"a/b"}}}]}`},
		{"env-divisor", `{"user":"a","image":"x","env":[{"name":"A","valueFrom":{"resourceFieldRef":{"resource":"limits.cpu","divisor":"3"}}}]}`},
		{"port-name", `{"user":"a","image":"x","ports":[{"name":"Jupyter_Notebook","containerPort":8888}]}`},
		{"port-names", `{"user":"a","image":"x","ports":[{"name":"web","containerPort":80},{"name":"web","containerPort":81}]}`},
		{"port-protocol", `{"user":"a","image":"x","ports":[{"containerPort":80,"protocol":"HTTP"}]}`},
		{"host-ip", `{"user":"a","image":"x","ports":[{"containerPort":80,"hostPort":80,"hostIP":"localhost"}]}`},
		{"negative", `{"user":"a","image":"x","resources":{"requests":{"cpu":"-1"}}}`},
		{"over-limit", `{"user":"a","image":"x","resources":{"requests":{"memory":"2Gi"},"limits":{"memory":"1Gi"}}}`},
		{"huge-quantity", `{"user":"a","image":"x","resources":{"requests":{"cpu":"1e999999999"}}}`},
		{"timeout", `{"user":"a","image":"x","timeout":"600000h"}`},
		{"timeout-overflow", `{"user":"a","image":"x","timeout":"9999999999h"}`},
		// GPUs through the environment (gpuEnvLeak): refused by the CRD, or harmless to the runtime.
		{"nvidia-all", `{"user":"a","image":"pytorch/pytorch","env":[{"name":"NVIDIA_VISIBLE_DEVICES","value":"all"}]}`},
		{"nvidia-gpu-job", `{"user":"a","image":"x","gpus":1,"env":[{"name":"A","value":"1"},{"name":"NVIDIA_VISIBLE_DEVICES","value":"0,1,2,3"}]}`},
		{"nvidia-void", `{"user":"a","image":"x","env":[{"name":"NVIDIA_VISIBLE_DEVICES","value":"void"}]}`},
		{"nvidia-from", `{"user":"a","image":"x","env":[{"name":"NVIDIA_VISIBLE_DEVICES","valueFrom":{"configMapKeyRef":{"name":"c","key":"k"}}}]}`},
		{"nvidia-case", `{"user":"a","image":"x","env":[{"name":"nvidia_visible_devices","value":"all"},{"name":"Nvidia_Visible_Devices","value":"all"}]}`},
		{"nvidia-spaced", `{"user":"a","image":"x","env":[{"name":"NVIDIA_VISIBLE_DEVICES ","value":"all"}]}`},
		{"nvidia-others", `{"user":"a","image":"x","gpus":1,"env":[{"name":"CUDA_VISIBLE_DEVICES","value":"0,1"},{"name":"NVIDIA_DRIVER_CAPABILITIES","value":"all"}]}`},
		// spec.clusterUser (checkClusterUser): the schema's edges, and its variables through spec.env.
		{"cluster-user", `{"user":"a","image":"x","clusterUser":{"name":"alice","uid":123456,"groupName":"cvlab","gid":11166}}`},
		{"cluster-user-edges", `{"user":"a","image":"x","clusterUser":{"name":"` + strings.Repeat("é", 64) + `","uid":9223372036854775807,"groupName":"g h=1","gid":0}}`},
		{"cluster-user-bad", `{"user":"a","image":"x","clusterUser":{"name":"","uid":-1,"groupName":"g","gid":1.5}}`},
		{"cluster-user-partial", `{"user":"a","image":"x","clusterUser":{"name":"alice","uid":"123456"}}`},
		{"cluster-user-env", `{"user":"a","image":"x","env":[{"name":"CLUSTER_USER_ID","value":"0"},{"name":"CLUSTER_GROUP_ID","valueFrom":{"fieldRef":{"fieldPath":"metadata.uid"}}}]}`},
	} {
		f.Add(seed.name, []byte(seed.spec))
	}
	f.Fuzz(func(t *testing.T, name string, spec []byte) {
		checkJob(t, jobBody(name, spec))
	})
}

// FuzzCvlabJobFields builds specs field by field, so that most inputs are well-formed JSON and the
// fuzzer explores values: names, quantities, durations, ports, labels, environment variables.
func FuzzCvlabJobFields(f *testing.F) {
	type seed struct {
		name, user, image              string
		gpus, priority                 int32
		grace                          int64
		timeout                        string
		cpuReq, cpuLim, memReq, memLim string
		claim, mountPath               string
		envName, envValue, envField    string
		portName, protocol             string
		port, hostPort                 int32
		labelKey, labelValue           string
		annotationKey, annotationValue string
		suspend                        bool
		cuName, cuGroup                string // spec.clusterUser, when either is set
		cuUID, cuGID                   int64
	}
	add := func(s seed) {
		f.Add(s.name, s.user, s.image, s.gpus, s.priority, s.grace, s.timeout, s.cpuReq, s.cpuLim, s.memReq, s.memLim,
			s.claim, s.mountPath, s.envName, s.envValue, s.envField, s.portName, s.protocol, s.port, s.hostPort,
			s.labelKey, s.labelValue, s.annotationKey, s.annotationValue, s.suspend, s.cuName, s.cuUID, s.cuGroup, s.cuGID)
	}
	add(seed{name: "alice-train", user: "alice", image: "lab-base:gpu", gpus: 1, priority: 1, grace: 60, timeout: "24h",
		cpuReq: "2", memReq: "4Gi", memLim: "8Gi", claim: "pv-cvlabdata2", mountPath: "/cvlabdata2",
		envName: "PYTHONUNBUFFERED", envValue: "1", portName: "jupyter", port: 8888, labelKey: "team", labelValue: "vision",
		annotationKey: "cvlab.epfl.ch/simulated-runtime", annotationValue: "90s"})
	add(seed{name: "bob-cpu", user: "bob", image: "x", grace: -1})
	add(seed{name: "a", user: "A_b.c-9", image: "x", gpus: 64, priority: -1000, timeout: "1s", cpuLim: "100m",
		envName: "POD_NAME", envField: "metadata.name", port: 65535, hostPort: 1, protocol: "SCTP", suspend: true})
	add(seed{name: "neg", user: "carol", image: "x", priority: -5, cpuReq: "1", cpuLim: "2", memReq: "1e3", memLim: "1Ki"})
	// Environment names near NVIDIA_VISIBLE_DEVICES (gpuEnvLeak), for CPU and GPU jobs.
	add(seed{name: "cuda-cpu", user: "dave", image: "pytorch/pytorch", envName: "NVIDIA_VISIBLE_DEVICES", envValue: "all"})
	add(seed{name: "cuda-gpu", user: "dave", image: "pytorch/pytorch", gpus: 1, envName: "NVIDIA_VISIBLE_DEVICES", envValue: "0,1,2,3"})
	add(seed{name: "cuda-case", user: "dave", image: "x", envName: "nvidia_visible_devices", envValue: "all"})
	add(seed{name: "cuda-pod", user: "dave", image: "x", envName: "NVIDIA_VISIBLE_DEVICES", envField: "metadata.name"})
	add(seed{name: "cuda-mask", user: "dave", image: "x", gpus: 2, envName: "CUDA_VISIBLE_DEVICES", envValue: "1"})
	// spec.clusterUser (checkClusterUser): the lab's, odd names, the schema's edges, and its
	// variables set through spec.env too (the last definition wins, and the operator's is last).
	add(seed{name: "cu", user: "alice", image: "x", cuName: "alice", cuUID: 123456, cuGroup: "cvlab", cuGID: 11166})
	add(seed{name: "cu-odd", user: "erin.epfl.ch", image: "x", cuName: "é r=1\n", cuUID: math.MaxInt64, cuGroup: "ラボ ", cuGID: 0})
	add(seed{name: "cu-edges", user: "bob", image: "x", cuName: strings.Repeat("b", 65), cuUID: -1, cuGroup: "", cuGID: -1})
	add(seed{name: "cu-env", user: "bob", image: "x", envName: "CLUSTER_USER_ID", envValue: "123456", cuName: "bob", cuUID: 123457, cuGroup: "cvlab", cuGID: 11166})
	add(seed{name: "cu-env-only", user: "bob", image: "x", envName: "CLUSTER_USER_ID", envValue: "123456"})

	f.Fuzz(func(t *testing.T, name, user, image string, gpus, priority int32, grace int64, timeout, cpuReq, cpuLim, memReq, memLim,
		claim, mountPath, envName, envValue, envField, portName, protocol string, port, hostPort int32,
		labelKey, labelValue, annotationKey, annotationValue string, suspend bool, cuName string, cuUID int64, cuGroup string, cuGID int64) {
		spec := map[string]any{"image": image, "gpus": gpus, "priority": priority, "suspend": suspend}
		if user != "" {
			spec["user"] = user
		}
		if grace >= 0 {
			spec["terminationGracePeriodSeconds"] = grace
		}
		if timeout != "" {
			spec["timeout"] = timeout
		}
		res := map[string]any{}
		for k, v := range map[string]map[string]string{
			"requests": {"cpu": cpuReq, "memory": memReq},
			"limits":   {"cpu": cpuLim, "memory": memLim},
		} {
			list := map[string]any{}
			for r, q := range v {
				if q != "" {
					list[r] = q
				}
			}
			if len(list) > 0 {
				res[k] = list
			}
		}
		if len(res) > 0 {
			spec["resources"] = res
		}
		if claim != "" || mountPath != "" {
			spec["cvlabdata"] = []any{map[string]any{"claimName": claim, "mountPath": mountPath}}
		}
		if envName != "" {
			env := map[string]any{"name": envName, "value": envValue}
			if envField != "" {
				env["valueFrom"] = map[string]any{"fieldRef": map[string]any{"fieldPath": envField}}
			}
			spec["env"] = []any{env}
		}
		if port != 0 || portName != "" {
			p := map[string]any{"containerPort": port}
			if portName != "" {
				p["name"] = portName
			}
			if protocol != "" {
				p["protocol"] = protocol
			}
			if hostPort != 0 {
				p["hostPort"] = hostPort
			}
			spec["ports"] = []any{p}
		}
		if labelKey != "" {
			spec["podLabels"] = map[string]any{labelKey: labelValue}
		}
		if annotationKey != "" {
			spec["podAnnotations"] = map[string]any{annotationKey: annotationValue}
		}
		if cuName != "" || cuGroup != "" {
			spec["clusterUser"] = map[string]any{"name": cuName, "uid": cuUID, "groupName": cuGroup, "gid": cuGID}
		}
		b, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		checkJob(t, jobBody(name, b))
	})
}
