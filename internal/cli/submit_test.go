package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

var labConfig = Config{
	User: "alice", Namespace: "cvlab", Image: "ic-registry.epfl.ch/cvlab/lis/lab-base:gpu",
	Data: []cvlabv1alpha1.CvlabdataMount{
		{ClaimName: "pv-cvlabdata1", MountPath: "/cvlabdata1", ReadOnly: true},
		{ClaimName: "pv-cvlabdata2", MountPath: "/cvlabdata2"},
	},
	ClusterUser: &cvlabv1alpha1.ClusterUser{Name: "alice", UID: 123456, GroupName: "cvlab", GID: 11166},
}

func TestBuildJob(t *testing.T) {
	cases := map[string]struct {
		opts   SubmitOptions
		config Config
		osUser string
		want   cvlabv1alpha1.CvlabJob
	}{
		"every flag": {
			opts: SubmitOptions{Name: "train", Namespace: "lab", Image: "img:1", GPUs: 2, Priority: -5,
				Data:  []string{"pv-cvlabdata1:/cvlabdata1:ro", "pv-cvlabdata2:/cvlabdata2", "scratch:/scratch:rw"},
				Ports: []string{"8888", "tb=6006"}, Env: []string{"A=1", "B=x=y", "EMPTY="}, Timeout: "4h",
				ClusterUser: "bob:1000:cvlab:100", User: "bob", WorkingDir: "/work", CPU: "4", Memory: "16Gi",
				Command: []string{"python", "train.py", "--lr", "0.1"}},
			osUser: "root",
			want: cvlabv1alpha1.CvlabJob{
				ObjectMeta: metav1.ObjectMeta{Name: "train", Namespace: "lab"},
				Spec: cvlabv1alpha1.CvlabJobSpec{User: "bob", Priority: -5, Image: "img:1", GPUs: 2,
					Command: []string{"python", "train.py", "--lr", "0.1"}, WorkingDir: "/work",
					Env: []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "x=y"}, {Name: "EMPTY"}},
					Resources: cvlabv1alpha1.JobResources{Requests: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi")}},
					Cvlabdata: []cvlabv1alpha1.CvlabdataMount{{ClaimName: "pv-cvlabdata1", MountPath: "/cvlabdata1", ReadOnly: true},
						{ClaimName: "pv-cvlabdata2", MountPath: "/cvlabdata2"}, {ClaimName: "scratch", MountPath: "/scratch"}},
					ClusterUser: &cvlabv1alpha1.ClusterUser{Name: "bob", UID: 1000, GroupName: "cvlab", GID: 100},
					Ports:       []corev1.ContainerPort{{ContainerPort: 8888}, {Name: "tb", ContainerPort: 6006}},
					Timeout:     &metav1.Duration{Duration: 4 * time.Hour}},
			},
		},
		"the config's defaults make a one-line submit": {
			opts: SubmitOptions{Name: "train", GPUs: 1, Command: []string{"python", "train.py"}}, config: labConfig, osUser: "root",
			want: cvlabv1alpha1.CvlabJob{
				ObjectMeta: metav1.ObjectMeta{Name: "train"},
				Spec: cvlabv1alpha1.CvlabJobSpec{User: "alice", Image: labConfig.Image, GPUs: 1, Command: []string{"python", "train.py"},
					Cvlabdata: labConfig.Data, ClusterUser: labConfig.ClusterUser},
			},
		},
		"flags override the config; a mount on the same path replaces the config's": {
			opts: SubmitOptions{Name: "train", Image: "other", User: "carol", ClusterUser: "carol:7:lab:8",
				Data: []string{"pv-cvlabdata9:/cvlabdata2", "pv-x:/x:ro"}},
			config: labConfig,
			want: cvlabv1alpha1.CvlabJob{
				ObjectMeta: metav1.ObjectMeta{Name: "train"},
				Spec: cvlabv1alpha1.CvlabJobSpec{User: "carol", Image: "other",
					Cvlabdata: []cvlabv1alpha1.CvlabdataMount{{ClaimName: "pv-cvlabdata1", MountPath: "/cvlabdata1", ReadOnly: true},
						{ClaimName: "pv-cvlabdata9", MountPath: "/cvlabdata2"}, {ClaimName: "pv-x", MountPath: "/x", ReadOnly: true}},
					ClusterUser: &cvlabv1alpha1.ClusterUser{Name: "carol", UID: 7, GroupName: "lab", GID: 8}},
			},
		},
		"--data none drops the config's mounts": {
			opts: SubmitOptions{Name: "cpu-job", Data: []string{"none", "pv-x:/x"}}, config: labConfig,
			want: cvlabv1alpha1.CvlabJob{
				ObjectMeta: metav1.ObjectMeta{Name: "cpu-job"},
				Spec: cvlabv1alpha1.CvlabJobSpec{User: "alice", Image: labConfig.Image,
					Cvlabdata: []cvlabv1alpha1.CvlabdataMount{{ClaimName: "pv-x", MountPath: "/x"}}, ClusterUser: labConfig.ClusterUser},
			},
		},
		"--cluster-user none drops the config's: the lab directory's is used": {
			opts: SubmitOptions{Name: "j", ClusterUser: "none"}, config: labConfig,
			want: cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Name: "j"},
				Spec: cvlabv1alpha1.CvlabJobSpec{User: "alice", Image: labConfig.Image, Cvlabdata: labConfig.Data}},
		},
		"the OS user owns the job without --user or a config": {
			opts: SubmitOptions{Name: "j", Image: "img"}, osUser: "dave",
			want: cvlabv1alpha1.CvlabJob{ObjectMeta: metav1.ObjectMeta{Name: "j"}, Spec: cvlabv1alpha1.CvlabJobSpec{User: "dave", Image: "img"}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := BuildJob(tc.opts, tc.config, tc.osUser)
			if err != nil {
				t.Fatalf("BuildJob: %v", err)
			}
			tc.want.TypeMeta = metav1.TypeMeta{APIVersion: "cvlab.epfl.ch/v1alpha1", Kind: "CvlabJob"}
			if diff := cmp.Diff(&tc.want, got); diff != "" {
				t.Errorf("job (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBuildJobErrors(t *testing.T) {
	ok := SubmitOptions{Name: "j", Image: "img", User: "alice"}
	with := func(f func(*SubmitOptions)) SubmitOptions {
		o := ok
		f(&o)
		return o
	}
	cases := map[string]struct {
		opts   SubmitOptions
		osUser string
		want   string
	}{
		"no name":            {with(func(o *SubmitOptions) { o.Name = "" }), "", "a job name is required"},
		"bad name":           {with(func(o *SubmitOptions) { o.Name = "My_Job" }), "", `job name "My_Job" is invalid`},
		"no image":           {with(func(o *SubmitOptions) { o.Image = "" }), "", "--image is required (or set image: in the config file)"},
		"no user anywhere":   {with(func(o *SubmitOptions) { o.User = "" }), "", "--user is required"},
		"bad user":           {with(func(o *SubmitOptions) { o.User = "Alice Smith" }), "", `--user "Alice Smith" is not a valid user name`},
		"bad OS user":        {with(func(o *SubmitOptions) { o.User = "" }), "-root-", `--user "-root-" is not a valid user name`},
		"too many GPUs":      {with(func(o *SubmitOptions) { o.GPUs = 65 }), "", "--gpus must be between 0 and 64, not 65"},
		"negative GPUs":      {with(func(o *SubmitOptions) { o.GPUs = -1 }), "", "--gpus must be between 0 and 64, not -1"},
		"priority range":     {with(func(o *SubmitOptions) { o.Priority = 2000 }), "", "--priority must be between -1000 and 1000, not 2000"},
		"data without path":  {with(func(o *SubmitOptions) { o.Data = []string{"pv-cvlabdata1"} }), "", `--data "pv-cvlabdata1" must be CLAIM:PATH or CLAIM:PATH:ro`},
		"data bad mode":      {with(func(o *SubmitOptions) { o.Data = []string{"pv:/p:rx"} }), "", `--data "pv:/p:rx" must be CLAIM:PATH or CLAIM:PATH:ro`},
		"data bad claim":     {with(func(o *SubmitOptions) { o.Data = []string{"PV_1:/p"} }), "", `"PV_1" is not a PersistentVolumeClaim name`},
		"data relative path": {with(func(o *SubmitOptions) { o.Data = []string{"pv:data"} }), "", `the mount path "data" must be absolute`},
		"data twice":         {with(func(o *SubmitOptions) { o.Data = []string{"a:/d", "b:/e", "c:/d"} }), "", ""}, // same path: the last wins
		"port zero":          {with(func(o *SubmitOptions) { o.Ports = []string{"0"} }), "", `--port "0" must be a port number between 1 and 65535`},
		"port twice":         {with(func(o *SubmitOptions) { o.Ports = []string{"8888", "web=8888"} }), "", "--port 8888 is given twice"},
		"port bad name":      {with(func(o *SubmitOptions) { o.Ports = []string{"Jupyter Lab=8888"} }), "", `"Jupyter Lab" is not a valid port name`},
		"env without =":      {with(func(o *SubmitOptions) { o.Env = []string{"FOO"} }), "", `--env "FOO" must be KEY=VALUE`},
		"env bad name":       {with(func(o *SubmitOptions) { o.Env = []string{"1A=b"} }), "", `"1A" is not a valid variable name`},
		"env twice":          {with(func(o *SubmitOptions) { o.Env = []string{"A=1", "A=2"} }), "", "--env A is given twice"},
		"timeout words":      {with(func(o *SubmitOptions) { o.Timeout = "4 hours" }), "", `--timeout "4 hours" is not a duration such as 4h, 90m or 1h30m`},
		"timeout negative":   {with(func(o *SubmitOptions) { o.Timeout = "-1h" }), "", `--timeout "-1h" is not a duration`},
		"timeout too short":  {with(func(o *SubmitOptions) { o.Timeout = "500ms" }), "", "--timeout must be at least 1s, not 500ms"},
		"cluster user parts": {with(func(o *SubmitOptions) { o.ClusterUser = "alice:1" }), "", `--cluster-user "alice:1" must be NAME:UID:GROUP:GID`},
		"cluster user uid":   {with(func(o *SubmitOptions) { o.ClusterUser = "alice:x:cvlab:1" }), "", `--cluster-user "alice:x:cvlab:1" must be NAME:UID:GROUP:GID`},
		"bad memory":         {with(func(o *SubmitOptions) { o.Memory = "lots" }), "", `--memory "lots" is not a positive quantity`},
		"every problem listed": {with(func(o *SubmitOptions) { o.GPUs, o.Priority, o.Timeout = 99, -2000, "soon" }), "",
			"3 problems with the flags:\n  - --gpus must be between 0 and 64, not 99\n  - --priority must be between -1000 and 1000, not -2000\n  - --timeout \"soon\" is not a duration"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := BuildJob(tc.opts, Config{}, tc.osUser)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("BuildJob: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestManifest(t *testing.T) {
	job, err := BuildJob(SubmitOptions{Name: "train", Image: "img", GPUs: 2, Timeout: "90m", User: "alice",
		Command: []string{"python", "train.py"}}, Config{}, "")
	if err != nil {
		t.Fatal(err)
	}
	data, err := Manifest(job, "90m")
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: cvlab.epfl.ch/v1alpha1
kind: CvlabJob
metadata:
  name: train
spec:
  command:
  - python
  - train.py
  gpus: 2
  image: img
  priority: 0
  timeout: 90m
  user: alice
`
	if diff := cmp.Diff(want, string(data)); diff != "" {
		t.Errorf("manifest (-want +got):\n%s", diff)
	}
	var back cvlabv1alpha1.CvlabJob
	if err := yaml.UnmarshalStrict(data, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(job, &back); diff != "" {
		t.Errorf("parsed back (-want +got):\n%s", diff)
	}
}

func TestLoadConfig(t *testing.T) {
	cases := map[string]struct {
		content string
		want    Config
		wantErr string
	}{
		"full": {content: `
user: alice
namespace: cvlab
image: ic-registry.epfl.ch/cvlab/lis/lab-base:gpu
data:
- {claimName: pv-cvlabdata1, mountPath: /cvlabdata1, readOnly: true}
- {claimName: pv-cvlabdata2, mountPath: /cvlabdata2}
clusterUser: {name: alice, uid: 123456, groupName: cvlab, gid: 11166}
cluster:
  preemption: Rank
  gpuCapacity: 30
  gpuNodeSelector: cvlab.epfl.ch/gpu=true
  minRuntime: 5m
  maxHeadWait: 1h
`, want: func() Config {
			c := labConfig
			c.Cluster = ClusterConfig{Preemption: "Rank", GPUCapacity: ptr.To(int32(30)), GPUNodeSelector: "cvlab.epfl.ch/gpu=true", MinRuntime: "5m", MaxHeadWait: "1h"}
			return c
		}()},
		"empty":             {content: "", want: Config{}},
		"typo":              {content: "imgae: x\n", wantErr: `unknown field "imgae"`},
		"bad policy":        {content: "cluster: {preemption: Sometimes}\n", wantErr: `cluster.preemption: preemption must be FirstGPU, Rank or Never, not "Sometimes"`},
		"bad duration":      {content: "cluster: {minRuntime: ten}\n", wantErr: `cluster.minRuntime "ten" is not a duration`},
		"negative capacity": {content: "cluster: {gpuCapacity: -1}\n", wantErr: "cluster.gpuCapacity must be 0 or more"},
		"bad selector":      {content: "cluster: {gpuNodeSelector: 'a b'}\n", wantErr: "cluster.gpuNodeSelector"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadConfig(path, true)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("a missing default file is an empty config, a missing --config an error", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nope.yaml")
		if c, err := LoadConfig(missing, false); err != nil || !cmp.Equal(c, Config{}) {
			t.Errorf("default: %+v, %v", c, err)
		}
		if _, err := LoadConfig(missing, true); err == nil || !strings.Contains(err.Error(), "reading config") {
			t.Errorf("--config: %v", err)
		}
	})
}

func TestDefaultConfigPath(t *testing.T) {
	cases := map[string]struct{ xdg, home, want string }{
		"XDG_CONFIG_HOME":   {xdg: "/x", home: "/h", want: "/x/cvlab/config.yaml"},
		"~/.config without": {xdg: "", home: "/h", want: "/h/.config/cvlab/config.yaml"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Setenv("XDG_CONFIG_HOME", tc.xdg)
			t.Setenv("HOME", tc.home)
			if got := DefaultConfigPath(); got != tc.want {
				t.Errorf("DefaultConfigPath() = %q, want %q", got, tc.want)
			}
		})
	}
}

// The settings of queue, why and top: the operator's published settings (or its defaults), then
// the config file, then flags.
func TestSettingsPrecedence(t *testing.T) {
	cases := map[string]struct {
		config ClusterConfig
		args   []string
		base   *observe.Settings
		want   observe.Settings
	}{
		"operator's defaults": {want: observe.DefaultSettings()},
		"config": {config: ClusterConfig{Preemption: "never", GPUCapacity: ptr.To(int32(30)), MinRuntime: "1m", MaxHeadWait: "-1s"},
			want: observe.Settings{Preemption: queue.PreemptNever, GPUCapacity: 30, NodeSelector: labels.Everything(), MinRuntime: time.Minute, MaxHeadWait: -time.Second,
				UnschedulableTimeout: 5 * time.Minute, Idle: observe.DefaultSettings().Idle}},
		"flags over config": {config: ClusterConfig{Preemption: "Never", GPUCapacity: ptr.To(int32(30))},
			args: []string{"--preemption=Rank", "--gpu-capacity=8", "--min-runtime=2m", "--max-head-wait=0s"},
			want: observe.Settings{Preemption: queue.PreemptRank, GPUCapacity: 8, NodeSelector: labels.Everything(), MinRuntime: 2 * time.Minute,
				UnschedulableTimeout: 5 * time.Minute, Idle: observe.DefaultSettings().Idle}},
		"the operator's published settings, keys of the config over them": {config: ClusterConfig{MinRuntime: "1m"},
			base: &observe.Settings{Preemption: queue.PreemptNever, GPUCapacity: 12, NodeSelector: labels.Everything(), MinRuntime: time.Hour,
				MaxHeadWait: time.Hour, UnschedulableTimeout: time.Minute},
			want: observe.Settings{Preemption: queue.PreemptNever, GPUCapacity: 12, NodeSelector: labels.Everything(), MinRuntime: time.Minute,
				MaxHeadWait: time.Hour, UnschedulableTimeout: time.Minute}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := &root{config: Config{Cluster: tc.config}}
			cmd := r.queueCommand()
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			base := observe.DefaultSettings()
			if tc.base != nil {
				base = *tc.base
			}
			got, err := r.settings(cmd, base)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b labels.Selector) bool { return a.String() == b.String() })); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
		})
	}
	r := &root{}
	cmd := r.whyCommand()
	_ = cmd.ParseFlags([]string{"--preemption=Sometimes"})
	if _, err := r.settings(cmd, observe.DefaultSettings()); err == nil || err.Error() != `--preemption must be FirstGPU, Rank or Never, not "Sometimes"` {
		t.Errorf("bad --preemption: %v", err)
	}
}

// submit --dry-run=client runs without a cluster: the config file and the flags make the manifest.
func TestSubmitDryRunCommand(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KUBECONFIG", filepath.Join(dir, "no-kubeconfig"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	cfg := filepath.Join(dir, "cvlab.yaml")
	if err := os.WriteFile(cfg, []byte("user: alice\nnamespace: cvlab\nimage: lab-base:gpu\ndata: [{claimName: pv-cvlabdata2, mountPath: /cvlabdata2}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		args    []string
		want    string
		wantErr string
	}{
		"config defaults": {args: []string{"submit", "--config", cfg, "train", "--gpus", "2", "--dry-run=client", "-o", "yaml", "--", "python", "train.py"},
			want: "apiVersion: cvlab.epfl.ch/v1alpha1\nkind: CvlabJob\nmetadata:\n  name: train\n  namespace: cvlab\nspec:\n  command:\n  - python\n  - train.py\n  cvlabdata:\n  - claimName: pv-cvlabdata2\n    mountPath: /cvlabdata2\n  gpus: 2\n  image: lab-base:gpu\n  priority: 0\n  user: alice\n"},
		"-n over the config's namespace; bare --dry-run is client": {
			args: []string{"submit", "--config", cfg, "-n", "other", "train", "--dry-run", "-o", "name"}, want: "cvlabjob.cvlab.epfl.ch/train\n"},
		"no namespace in the manifest unless chosen": {
			args: []string{"submit", "train", "--image", "i", "--user", "bob", "--dry-run=client", "-o", "json"},
			want: `{"apiVersion":"cvlab.epfl.ch/v1alpha1","kind":"CvlabJob","metadata":{"name":"train"},"spec":{"gpus":0,"image":"i","priority":0,"user":"bob"}}` + "\n"},
		"command not after --":  {args: []string{"submit", "--config", cfg, "train", "python"}, wantErr: `unexpected arguments ["python"]: put the command after --`},
		"no name":               {args: []string{"submit", "--config", cfg, "--", "python"}, wantErr: "a job name is required"},
		"bad dry-run":           {args: []string{"submit", "--config", cfg, "train", "--dry-run=maybe"}, wantErr: `--dry-run must be "none", "client" or "server", not "maybe"`},
		"bad flag value":        {args: []string{"submit", "train", "--gpus", "two"}, wantErr: "invalid argument \"two\" for \"--gpus\" flag"},
		"missing --config file": {args: []string{"submit", "--config", filepath.Join(dir, "none.yaml"), "train"}, wantErr: "reading config"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			cmd := NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
			cmd.SetArgs(tc.args)
			err := cmd.Execute()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, errOut.String())
			}
			if diff := cmp.Diff(tc.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}
