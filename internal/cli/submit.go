package cli

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// SubmitOptions are the flags of `kubectl cvlab submit`.
type SubmitOptions struct {
	Name string
	// Namespace goes into the manifest's metadata; empty leaves it to the context (and out of a
	// --dry-run manifest, as kubectl does).
	Namespace   string
	Image       string
	GPUs        int32
	Priority    int32
	Data        []string // CLAIM:PATH[:ro]
	Ports       []string // PORT or NAME=PORT
	Env         []string // KEY=VALUE
	Timeout     string
	ClusterUser string // NAME:UID:GROUP:GID
	User        string
	WorkingDir  string
	CPU, Memory string
	// Command is what follows "--": the container's command and its arguments.
	Command []string
}

var (
	// The CRD's patterns (api/v1alpha1), checked here to fail before the round trip.
	reClaim   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	reTimeout = regexp.MustCompile(`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`)
)

// BuildJob turns submit's flags, over the config's defaults, into a CvlabJob. osUser is the
// login name, the owner when neither --user nor the config names one. Every invalid flag is
// reported, one per line.
func BuildJob(o SubmitOptions, c Config, osUser string) (*cvlabv1alpha1.CvlabJob, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	job := &cvlabv1alpha1.CvlabJob{
		TypeMeta:   metav1.TypeMeta{APIVersion: cvlabv1alpha1.GroupVersion.String(), Kind: "CvlabJob"},
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace},
	}
	if o.Name == "" {
		bad("a job name is required: kubectl cvlab submit NAME --image IMAGE -- COMMAND...")
	} else if msgs := validation.IsDNS1123Subdomain(o.Name); len(msgs) > 0 {
		bad("job name %q is invalid: %s", o.Name, strings.Join(msgs, "; "))
	}

	spec := &job.Spec
	spec.User = firstOf(o.User, c.User, osUser)
	switch {
	case spec.User == "":
		bad("--user is required: no user in the config file and no OS user name")
	case len(validation.IsValidLabelValue(spec.User)) > 0:
		bad("--user %q is not a valid user name: letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 63", spec.User)
	}
	spec.Image = firstOf(o.Image, c.Image)
	if spec.Image == "" {
		bad("--image is required (or set image: in the config file)")
	}
	if o.GPUs < 0 || o.GPUs > 64 {
		bad("--gpus must be between 0 and 64, not %d", o.GPUs)
	}
	spec.GPUs = o.GPUs
	if o.Priority < -1000 || o.Priority > 1000 {
		bad("--priority must be between -1000 and 1000, not %d", o.Priority)
	}
	spec.Priority = o.Priority
	if len(o.Command) > 0 {
		spec.Command = o.Command
	}
	spec.WorkingDir = o.WorkingDir

	// Data: the config's mounts, then the flags' (a flag with the same path replaces the
	// config's; --data none drops the config's).
	mounts := append([]cvlabv1alpha1.CvlabdataMount(nil), c.Data...)
	for _, d := range o.Data {
		if d == "none" {
			mounts = nil
			continue
		}
		m, err := parseData(d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		replaced := false
		for i := range mounts {
			if mounts[i].MountPath == m.MountPath {
				mounts[i], replaced = m, true
			}
		}
		if !replaced {
			mounts = append(mounts, m)
		}
	}
	seen := map[string]bool{}
	for _, m := range mounts {
		if seen[m.MountPath] {
			bad("--data: %s is mounted twice", m.MountPath)
		}
		seen[m.MountPath] = true
	}
	if len(mounts) > 16 {
		bad("--data: at most 16 mounts, not %d", len(mounts))
	}
	spec.Cvlabdata = mounts

	for _, p := range o.Ports {
		port, err := parsePort(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, q := range spec.Ports {
			if q.ContainerPort == port.ContainerPort {
				bad("--port %d is given twice", port.ContainerPort)
			}
		}
		spec.Ports = append(spec.Ports, port)
	}

	envSeen := map[string]bool{}
	for _, kv := range o.Env {
		k, val, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			bad("--env %q must be KEY=VALUE", kv)
			continue
		case len(validation.IsEnvVarName(k)) > 0:
			bad("--env %q: %q is not a valid variable name", kv, k)
			continue
		case envSeen[k]:
			bad("--env %s is given twice", k)
			continue
		}
		envSeen[k] = true
		spec.Env = append(spec.Env, corev1.EnvVar{Name: k, Value: val})
	}

	if o.Timeout != "" {
		d, err := time.ParseDuration(o.Timeout)
		switch {
		case err != nil || !reTimeout.MatchString(o.Timeout):
			bad("--timeout %q is not a duration such as 4h, 90m or 1h30m", o.Timeout)
		case d < time.Second:
			bad("--timeout must be at least 1s, not %s", o.Timeout)
		default:
			spec.Timeout = &metav1.Duration{Duration: d}
		}
	}

	// Neither flag nor config: no clusterUser, and the operator gives the pod the user's lab
	// directory entry (docs/security.md#the-lab-directory); "none" drops the config's for that.
	spec.ClusterUser = c.ClusterUser
	switch o.ClusterUser {
	case "":
	case "none":
		spec.ClusterUser = nil
	default:
		cu, err := parseClusterUser(o.ClusterUser)
		if err != nil {
			errs = append(errs, err)
		}
		spec.ClusterUser = cu
	}

	for _, r := range []struct {
		flag, value string
		name        corev1.ResourceName
	}{{"--cpu", o.CPU, corev1.ResourceCPU}, {"--memory", o.Memory, corev1.ResourceMemory}} {
		if r.value == "" {
			continue
		}
		q, err := resource.ParseQuantity(r.value)
		if err != nil || q.Sign() <= 0 {
			bad("%s %q is not a positive quantity such as 4, 500m or 16Gi", r.flag, r.value)
			continue
		}
		if spec.Resources.Requests == nil {
			spec.Resources.Requests = corev1.ResourceList{}
		}
		spec.Resources.Requests[r.name] = q
	}
	switch len(errs) {
	case 0:
		return job, nil
	case 1:
		return nil, errs[0]
	}
	lines := make([]string, len(errs))
	for i, e := range errs {
		lines[i] = "  - " + e.Error()
	}
	return nil, fmt.Errorf("%d problems with the flags:\n%s", len(errs), strings.Join(lines, "\n"))
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// parseData reads CLAIM:PATH, CLAIM:PATH:ro or CLAIM:PATH:rw.
func parseData(s string) (cvlabv1alpha1.CvlabdataMount, error) {
	parts := strings.Split(s, ":")
	usage := fmt.Errorf("--data %q must be CLAIM:PATH or CLAIM:PATH:ro, e.g. pv-cvlabdata1:/cvlabdata1:ro", s)
	if len(parts) < 2 || len(parts) > 3 {
		return cvlabv1alpha1.CvlabdataMount{}, usage
	}
	m := cvlabv1alpha1.CvlabdataMount{ClaimName: parts[0], MountPath: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return m, usage
		}
	}
	if !reClaim.MatchString(m.ClaimName) || len(m.ClaimName) > 253 {
		return m, fmt.Errorf("--data %q: %q is not a PersistentVolumeClaim name (lower-case letters, digits, '-' and '.')", s, m.ClaimName)
	}
	if !strings.HasPrefix(m.MountPath, "/") || len(m.MountPath) < 2 {
		return m, fmt.Errorf("--data %q: the mount path %q must be absolute, e.g. /cvlabdata1", s, m.MountPath)
	}
	return m, nil
}

// parsePort reads PORT or NAME=PORT.
func parsePort(s string) (corev1.ContainerPort, error) {
	name, num, named := strings.Cut(s, "=")
	if !named {
		name, num = "", s
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n > 65535 {
		return corev1.ContainerPort{}, fmt.Errorf("--port %q must be a port number between 1 and 65535 (or NAME=PORT)", s)
	}
	if named && len(validation.IsValidPortName(name)) > 0 {
		return corev1.ContainerPort{}, fmt.Errorf("--port %q: %q is not a valid port name (at most 15 lower-case letters, digits and '-')", s, name)
	}
	return corev1.ContainerPort{Name: name, ContainerPort: int32(n)}, nil
}

// parseClusterUser reads NAME:UID:GROUP:GID.
func parseClusterUser(s string) (*cvlabv1alpha1.ClusterUser, error) {
	usage := fmt.Errorf("--cluster-user %q must be NAME:UID:GROUP:GID, e.g. alice:123456:cvlab:11166", s)
	parts := strings.Split(s, ":")
	if len(parts) != 4 || parts[0] == "" || parts[2] == "" || len(parts[0]) > 64 || len(parts[2]) > 64 {
		return nil, usage
	}
	uid, err1 := strconv.ParseInt(parts[1], 10, 64)
	gid, err2 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return nil, usage
	}
	return &cvlabv1alpha1.ClusterUser{Name: parts[0], UID: uid, GroupName: parts[2], GID: gid}, nil
}

// Manifest renders a job as clean YAML for git: apiVersion, kind, metadata (name, and namespace
// when given) and spec, with the timeout as the user wrote it.
func Manifest(job *cvlabv1alpha1.CvlabJob, timeout string) ([]byte, error) {
	clean := &cvlabv1alpha1.CvlabJob{
		TypeMeta:   metav1.TypeMeta{APIVersion: cvlabv1alpha1.GroupVersion.String(), Kind: "CvlabJob"},
		ObjectMeta: metav1.ObjectMeta{Name: job.Name, Namespace: job.Namespace, Labels: job.Labels, Annotations: job.Annotations},
		Spec:       job.Spec,
	}
	data, err := json.Marshal(clean)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if spec, ok := m["spec"].(map[string]any); ok && timeout != "" && job.Spec.Timeout != nil {
		spec["timeout"] = timeout
	}
	return yaml.Marshal(m)
}
