package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/validation"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(cvlabv1alpha1.AddToScheme(scheme))
}

// mapper knows the few kinds the CLI uses, so that no discovery round trip is needed; a cluster
// without the CRD answers 404, which is then checked with discovery.
func mapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper([]schema.GroupVersion{corev1.SchemeGroupVersion, cvlabv1alpha1.GroupVersion})
	m.Add(cvlabv1alpha1.GroupVersion.WithKind("CvlabJob"), meta.RESTScopeNamespace)
	m.Add(corev1.SchemeGroupVersion.WithKind("Pod"), meta.RESTScopeNamespace)
	m.Add(corev1.SchemeGroupVersion.WithKind("Node"), meta.RESTScopeRoot)
	m.Add(corev1.SchemeGroupVersion.WithKind("Namespace"), meta.RESTScopeRoot)
	m.Add(corev1.SchemeGroupVersion.WithKind("ConfigMap"), meta.RESTScopeNamespace)
	return m
}

// root holds what every command shares: the kubeconfig flags, the config file, the clock.
type root struct {
	streams    genericiooptions.IOStreams
	kube       *genericclioptions.ConfigFlags
	kubeUser   string
	configPath string
	config     Config
	now        func() time.Time
	// settings flags (queue, why, top); applied over the config's cluster section, which applies
	// over the operator's published settings.
	preemption, nodeSelector string
	gpuCapacity              int32
	minRuntime, maxHeadWait  time.Duration
	// operatorNamespace is where the operator publishes its settings (queue, why, top).
	operatorNamespace string
}

// NewCommand builds `kubectl cvlab`. The kubeconfig flags are kubectl's (--kubeconfig,
// --context, -n/--namespace, ...), except that kubectl's --user is --kube-user here: --user is
// the queue's user.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	r := &root{streams: streams, now: time.Now}
	r.kube = genericclioptions.NewConfigFlags(true)
	r.kube.AuthInfoName = nil // --user is ours
	cmd := &cobra.Command{
		Use:   "kubectl-cvlab",
		Short: "Submit and follow jobs in the CVLab fair-share GPU queue",
		Long: `kubectl cvlab submits CvlabJobs and explains the lab's fair-share GPU queue.

A job on someone's 1st GPU ranks above any job on anyone's 2nd GPU, a 2nd above any 3rd, and so on;
queue and why run the operator's own engine on the cluster's jobs, pods and nodes, so their answers
are the operator's.`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl cvlab"},
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return r.loadConfig(cmd)
		},
	}
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	flags := cmd.PersistentFlags()
	r.kube.AddFlags(flags)
	flags.StringVar(&r.kubeUser, "kube-user", "", "The name of the kubeconfig user to use (kubectl's --user)")
	r.kube.AuthInfoName = &r.kubeUser
	flags.StringVar(&r.configPath, "config", "", "Config file with defaults (default $XDG_CONFIG_HOME/cvlab/config.yaml)")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w\nSee '%s --help'.", err, c.CommandPath())
	})
	_ = cmd.RegisterFlagCompletionFunc("namespace", func(c *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		_ = r.loadConfig(c)
		return r.completeNamespaces(c.Context(), prefix), cobra.ShellCompDirectiveNoFileComp
	})

	cmd.AddCommand(r.submitCommand(), r.queueCommand(), r.whyCommand(), r.cancelCommand(), r.logsCommand(), r.topCommand(),
		r.shellCommand(), r.portForwardCommand(), // connect.go
		r.simulateCommand()) // simulate.go
	return cmd
}

func (r *root) loadConfig(cmd *cobra.Command) error {
	path, required := r.configPath, r.configPath != ""
	if !required {
		path = DefaultConfigPath()
	}
	c, err := LoadConfig(path, required)
	if err != nil {
		return err
	}
	r.config = c
	return nil
}

// namespace is -n, else the config's namespace, else the kubeconfig context's. explicit tells
// whether the user chose it (then it goes into a --dry-run manifest).
func (r *root) namespace() (string, bool, error) {
	if r.kube.Namespace != nil && *r.kube.Namespace != "" {
		return *r.kube.Namespace, true, nil
	}
	if r.config.Namespace != "" {
		return r.config.Namespace, true, nil
	}
	ns, _, err := r.kube.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", false, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	return ns, false, nil
}

// me is the person running the command: the config's user, else the OS user.
func (r *root) me() string {
	return firstOf(r.config.User, osUserName())
}

func osUserName() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if _, after, ok := strings.Cut(name, `\`); ok { // DOMAIN\user
		name = after
	}
	return name
}

type clients struct {
	c         client.Client
	kube      kubernetes.Interface
	discovery discovery.DiscoveryInterface
}

func (r *root) clients() (*clients, error) {
	cfg, err := r.kube.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme, Mapper: mapper()})
	if err != nil {
		return nil, err
	}
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &clients{c: c, kube: k, discovery: k.Discovery()}, nil
}

func (c *clients) installed() (bool, error) { return APIInstalled(c.discovery) }

func notFoundMessage(name, ns string) string {
	return fmt.Sprintf("cvlabjob %q not found in namespace %q", name, ns)
}

// getJob reads one job, with the errors people understand.
func (r *root) getJob(ctx context.Context, c *clients, name string) (*cvlabv1alpha1.CvlabJob, error) {
	ns, _, err := r.namespace()
	if err != nil {
		return nil, err
	}
	var j cvlabv1alpha1.CvlabJob
	if err := c.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &j); err != nil {
		return nil, Friendly(err, notFoundMessage(name, ns), c.installed)
	}
	return &j, nil
}

// addSettingsFlags adds the flags of the commands that decide: where the operator publishes its
// settings, and the operator's flags that change its decisions, to override them.
func (r *root) addSettingsFlags(fs *pflag.FlagSet) {
	fs.StringVar(&r.operatorNamespace, "operator-namespace", validation.DefaultNamespace,
		"The operator's namespace, where it publishes its settings (ConfigMap "+observe.PublishedName+")")
	fs.StringVar(&r.preemption, "preemption", "", "Override the operator's --preemption policy: FirstGPU, Rank or Never (default: the operator's published setting)")
	fs.Int32Var(&r.gpuCapacity, "gpu-capacity", -1, "Override the operator's --gpu-capacity (default: the operator's published setting)")
	fs.Lookup("gpu-capacity").DefValue = "" // "none", not -1, in the help
	fs.StringVar(&r.nodeSelector, "gpu-node-selector", "", "Override the operator's --gpu-node-selector (default: the operator's published setting)")
	fs.DurationVar(&r.minRuntime, "min-runtime", 0, "Override the operator's --min-runtime (default: the operator's published setting)")
	fs.DurationVar(&r.maxHeadWait, "max-head-wait", 0, "Override the operator's --max-head-wait (default: the operator's published setting)")
}

// settings are base (the operator's published settings, or its defaults) with the config's
// cluster section, then the flags given, over them.
func (r *root) settings(cmd *cobra.Command, base observe.Settings) (observe.Settings, error) {
	s, err := r.config.Cluster.Apply(base)
	if err != nil {
		return s, err
	}
	fs := cmd.Flags()
	if fs.Changed("preemption") {
		p, err := queue.ParsePolicy(r.preemption)
		if err != nil {
			return s, fmt.Errorf("--%w", err)
		}
		s.Preemption = p
	}
	if fs.Changed("gpu-capacity") {
		if r.gpuCapacity < 0 {
			return s, fmt.Errorf("--gpu-capacity must be 0 or more, not %d", r.gpuCapacity)
		}
		s.GPUCapacity = r.gpuCapacity
	}
	if fs.Changed("gpu-node-selector") {
		sel, err := labels.Parse(r.nodeSelector)
		if err != nil {
			return s, fmt.Errorf("--gpu-node-selector: %w", err)
		}
		s.NodeSelector = sel
	}
	if fs.Changed("min-runtime") {
		s.MinRuntime = r.minRuntime
	}
	if fs.Changed("max-head-wait") {
		s.MaxHeadWait = r.maxHeadWait
	}
	return s, nil
}

// decideWith are the settings to decide with on what was read: the operator's published ones (its
// defaults when they could not be read), overridden by the config's cluster section and the flags.
func (r *root) decideWith(cmd *cobra.Command, cl Cluster) (observe.Settings, error) {
	base := observe.DefaultSettings()
	if cl.Published != nil {
		base = cl.Published.Settings
	}
	return r.settings(cmd, base)
}

// readCluster lists what the queue depends on, cluster-wide, as the operator does, and reads
// what the operator publishes in operatorNS. Jobs must be readable; pods, nodes and the published
// settings are best effort.
func readCluster(ctx context.Context, c client.Reader, installed func() (bool, error), operatorNS string) (Cluster, error) {
	var cl Cluster
	var jobs cvlabv1alpha1.CvlabJobList
	if err := c.List(ctx, &jobs); err != nil {
		if apierrors.IsForbidden(err) {
			return cl, fmt.Errorf("%w (the queue is cluster-wide: reading it needs list on cvlabjobs in all namespaces)", Friendly(err, "", nil))
		}
		return cl, Friendly(err, "", installed)
	}
	cl.Jobs = jobs.Items
	cl.Published, cl.PublishedErr = readPublished(ctx, c, operatorNS)
	var pods corev1.PodList
	if err := c.List(ctx, &pods); err != nil {
		cl.PodsErr = err
	} else {
		cl.Pods = pods.Items
	}
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		cl.NodesErr = err
	} else {
		cl.Nodes = nodes.Items
	}
	return cl, nil
}

// readPublished reads what the operator publishes: the ConfigMap observe.PublishedName of its
// namespace, which every authenticated user may read. The error says why it could not be.
func readPublished(ctx context.Context, c client.Reader, ns string) (*observe.Published, error) {
	name := ns + "/" + observe.PublishedName
	var cm corev1.ConfigMap
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: observe.PublishedName}, &cm); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return nil, fmt.Errorf("ConfigMap %s not found: the operator predates published settings, or runs in another namespace (see --operator-namespace)", name)
		case apierrors.IsForbidden(err):
			return nil, fmt.Errorf("reading ConfigMap %s is not allowed: %s", name, ErrorMessage(err))
		}
		return nil, fmt.Errorf("reading ConfigMap %s: %w", name, err)
	}
	p, err := observe.ParsePublished(cm.Data)
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s: %w", name, err)
	}
	return &p, nil
}

func (r *root) view(cmd *cobra.Command) (*View, *clients, error) {
	// The flags are checked before anything is read.
	if _, err := r.settings(cmd, observe.DefaultSettings()); err != nil {
		return nil, nil, err
	}
	c, err := r.clients()
	if err != nil {
		return nil, nil, err
	}
	cl, err := readCluster(cmd.Context(), c.c, c.installed, r.operatorNamespace)
	if err != nil {
		return nil, c, err
	}
	s, err := r.decideWith(cmd, cl)
	if err != nil {
		return nil, c, err
	}
	return Observe(cl, s, r.now()), c, nil
}

func (r *root) submitCommand() *cobra.Command {
	var o SubmitOptions
	var dryRun, output string
	cmd := &cobra.Command{
		Use:   "submit NAME [--image IMAGE] [--gpus N] [flags] -- COMMAND [ARGS...]",
		Short: "Submit a job (a CvlabJob) to the queue",
		Long: `Submit a job: one container running COMMAND with N GPUs, once the fair-share queue gives it its turn.

Defaults for --user, --image, --data, --cluster-user and the namespace come from the config file
($XDG_CONFIG_HOME/cvlab/config.yaml, or --config), so that a daily submit is one short line.
Without --cluster-user, a job runs as your entry in the lab directory, if the lab keeps one: the
operator fills it when the job starts, and submit says which account that is.`,
		Example: `  # 2 GPUs, the lab's storage, a 12h limit
  kubectl cvlab submit alice-train --image ic-registry.epfl.ch/cvlab/lis/lab-base:gpu --gpus 2 \
      --data pv-cvlabdata2:/cvlabdata2 --timeout 12h -- python /cvlabdata2/home/alice/train.py --lr 3e-4

  # the same with the defaults of the config file
  kubectl cvlab submit alice-train --gpus 2 --timeout 12h -- python train.py --lr 3e-4

  # a manifest for git instead of a job
  kubectl cvlab submit alice-train --gpus 2 --dry-run=client -o yaml -- python train.py > alice-train.yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			switch {
			case len(args) == 0 || dash == 0:
				return errors.New("a job name is required: kubectl cvlab submit NAME --image IMAGE -- COMMAND [ARGS...]")
			case dash < 0 && len(args) > 1, dash > 1:
				return fmt.Errorf("unexpected arguments %q: put the command after --, e.g. kubectl cvlab submit %s -- python train.py", args[1:], args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			if dash := cmd.ArgsLenAtDash(); dash > 0 {
				o.Command = args[dash:]
			}
			switch dryRun {
			case "none", "client", "server":
			default:
				return fmt.Errorf(`--dry-run must be "none", "client" or "server", not %q`, dryRun)
			}
			switch output {
			case "", "yaml", "json", "name":
			default:
				return fmt.Errorf(`-o/--output must be yaml, json or name, not %q`, output)
			}
			ns, explicit, err := r.namespace()
			if err != nil {
				return err
			}
			if explicit {
				o.Namespace = ns
			}
			job, err := BuildJob(o, r.config, osUserName())
			if err != nil {
				return err
			}
			if dryRun == "client" {
				return printJob(r.streams.Out, job, o.Timeout, output)
			}
			c, err := r.clients()
			if err != nil {
				return err
			}
			job.Namespace = ns
			var opts []client.CreateOption
			if dryRun == "server" {
				opts = append(opts, client.DryRunAll)
			}
			if err := c.c.Create(cmd.Context(), job, opts...); err != nil {
				if apierrors.IsAlreadyExists(err) {
					return fmt.Errorf("cvlabjob %q already exists in namespace %q: pick another name, or cancel it first (kubectl cvlab cancel %s)", job.Name, ns, job.Name)
				}
				if apierrors.IsInvalid(err) {
					return fmt.Errorf("the cluster refused the job: %s", ErrorMessage(err))
				}
				return Friendly(err, "", c.installed)
			}
			if output != "" {
				job.ManagedFields = nil
				return printJob(r.streams.Out, job, "", output)
			}
			suffix := ""
			if dryRun == "server" {
				suffix = " (server dry run)"
			}
			fmt.Fprintf(r.streams.Out, "cvlabjob %q submitted to namespace %q%s: %s, %s.\nSee its place: kubectl cvlab why %s\n",
				job.Name, ns, suffix, job.Spec.User, gpus(job.Spec.GPUs), job.Name)
			if note := directoryNote(cmd.Context(), c.c, r.operatorNamespace, job); note != "" { // directory.go
				fmt.Fprintln(r.streams.Out, note)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.Image, "image", "", "Container image (default from the config file)")
	fs.Int32Var(&o.GPUs, "gpus", 0, "GPUs the job needs (0: a CPU-only job, which never waits)")
	fs.Int32Var(&o.Priority, "priority", 0, "Orders your own jobs, higher first (-1000..1000); never moves a job ahead of others' lower GPUs")
	fs.StringArrayVar(&o.Data, "data", nil, "Mount a lab PVC: CLAIM:PATH or CLAIM:PATH:ro (repeatable; added to the config's, 'none' drops the config's)")
	fs.StringArrayVar(&o.Ports, "port", nil, "Container port, PORT or NAME=PORT, e.g. 8888 for Jupyter (repeatable)")
	fs.StringArrayVar(&o.Env, "env", nil, "Environment variable KEY=VALUE (repeatable)")
	fs.StringVar(&o.Timeout, "timeout", "", "Longest run time once started, e.g. 4h or 90m (no limit by default)")
	fs.StringVar(&o.ClusterUser, "cluster-user", "", "Lab account for file permissions, NAME:UID:GROUP:GID (default from the config file, else your lab directory entry; 'none' drops the config's)")
	fs.StringVar(&r.operatorNamespace, "operator-namespace", validation.DefaultNamespace, "The operator's namespace, where the lab directory is (ConfigMap "+validation.DirectoryName+")")
	fs.StringVar(&o.User, "user", "", "Owner of the job; fair share counts GPUs per user (default from the config file, else your login name)")
	fs.StringVar(&o.WorkingDir, "workdir", "", "Working directory of the container")
	fs.StringVar(&o.CPU, "cpu", "", "CPU request, e.g. 4 or 500m")
	fs.StringVar(&o.Memory, "memory", "", "Memory request, e.g. 16Gi")
	fs.StringVar(&dryRun, "dry-run", "none", `"client": print the job instead of submitting it; "server": let the cluster check it without keeping it`)
	fs.Lookup("dry-run").NoOptDefVal = "client"
	fs.StringVarP(&output, "output", "o", "", "Print the job as yaml, json or name")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion("yaml", "json", "name"))
	_ = cmd.RegisterFlagCompletionFunc("dry-run", fixedCompletion("none", "client", "server"))
	return cmd
}

func fixedCompletion(values ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// printJob prints a job as clean YAML or JSON, or its name.
func printJob(w io.Writer, job *cvlabv1alpha1.CvlabJob, timeout, output string) error {
	switch output {
	case "name":
		_, err := fmt.Fprintf(w, "cvlabjob.cvlab.epfl.ch/%s\n", job.Name)
		return err
	case "json":
		data, err := Manifest(job, timeout)
		if err != nil {
			return err
		}
		j, err := yaml.YAMLToJSON(data)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", j)
		return err
	}
	data, err := Manifest(job, timeout)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

func (r *root) queueCommand() *cobra.Command {
	var f QueueFilter
	var output string
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Show the fair-share queue, where the capacity cut falls, and a summary",
		Long: `Show the active jobs in fair-share order: RANK is the place in the global order (running jobs
included), POS the place among waiting jobs (1 starts next). The line marks the capacity cut: the
jobs above it fit in the GPUs the queue can hold; those below wait, or run but may be preempted.

The ranks are computed by the operator's own observation and engine on the cluster's jobs, pods and
nodes, with the settings the operator publishes (ConfigMap ` + observe.PublishedName + ` in
--operator-namespace); the config file's cluster section and the flags override them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch output {
			case "", "wide", "json":
			default:
				return fmt.Errorf("-o/--output must be wide or json, not %q", output)
			}
			ns, _, err := r.namespace()
			if err != nil {
				return err
			}
			f.Namespace = ns
			v, _, err := r.view(cmd)
			if err != nil {
				return err
			}
			return Queue(v, f).Write(r.streams.Out, output, v.Settings, v.Now)
		},
	}
	cmd.Flags().BoolVarP(&f.AllNamespaces, "all-namespaces", "A", false, "Show the jobs of every namespace")
	cmd.Flags().StringVar(&f.User, "user", "", "Show only this user's jobs")
	cmd.Flags().StringVarP(&output, "output", "o", "", "wide (adds NODE and MESSAGE) or json")
	_ = cmd.RegisterFlagCompletionFunc("output", fixedCompletion("wide", "json"))
	_ = cmd.RegisterFlagCompletionFunc("user", func(c *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		return r.completeUsers(c, prefix), cobra.ShellCompDirectiveNoFileComp
	})
	r.addSettingsFlags(cmd.Flags())
	return cmd
}

func (r *root) whyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "why JOB",
		Short: "Explain where a job stands: its rank, the GPUs it waits for, what would let it start",
		Long: `Explain a job from the operator's engine: its rank and the part of the rule that put it there, the
GPUs free against those it needs and on which node it could fit, what would let it start (GPUs
freed, a smaller size), whether it may preempt and whom, and an estimated start: the operator's loop
run forward with jobs ending at their timeout or expected runtime (annotation
cvlab.epfl.ch/expected-runtime). For running, finished or suspended jobs, it says so.

It decides with the settings the operator publishes (ConfigMap ` + observe.PublishedName + ` in
--operator-namespace), which the config file's cluster section and the flags override (what-if:
--preemption=Never); a note says so when they differ, or when the operator's settings cannot be read.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: r.completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := r.settings(cmd, observe.DefaultSettings()); err != nil {
				return err // the flags are checked before anything is read
			}
			c, err := r.clients()
			if err != nil {
				return err
			}
			j, err := r.getJob(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			cl, err := readCluster(cmd.Context(), c.c, c.installed, r.operatorNamespace)
			if err != nil {
				// Without the whole queue, the operator's own words are all there is.
				fmt.Fprintf(r.streams.Out, "%s: phase %s. Operator's status: %s\n", Key(j), phaseOf(j), j.Status.Message)
				return fmt.Errorf("cannot explain more: %w", err)
			}
			if !slices.ContainsFunc(cl.Jobs, func(x cvlabv1alpha1.CvlabJob) bool { return x.UID == j.UID }) {
				cl.Jobs = append(cl.Jobs, *j) // created between the two reads
			}
			s, err := r.decideWith(cmd, cl)
			if err != nil {
				return err
			}
			_, err = io.WriteString(r.streams.Out, Explain(Observe(cl, s, r.now()), Key(j), r.me()))
			return err
		},
	}
	r.addSettingsFlags(cmd.Flags())
	return cmd
}

func (r *root) cancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "cancel JOB...",
		Short:             "Cancel jobs: delete them (a running job's pod is stopped with its grace period)",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: r.completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := r.clients()
			if err != nil {
				return err
			}
			var errs []error
			for _, name := range args {
				j, err := r.getJob(cmd.Context(), c, name)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if err := c.c.Delete(cmd.Context(), j, client.Preconditions{UID: &j.UID}); err != nil {
					errs = append(errs, Friendly(err, notFoundMessage(j.Name, j.Namespace), c.installed))
					continue
				}
				what := "it held no GPU"
				switch j.Status.Phase {
				case cvlabv1alpha1.PhaseRunning, cvlabv1alpha1.PhaseAdmitted:
					grace := int64(60)
					if j.Spec.TerminationGracePeriodSeconds != nil {
						grace = *j.Spec.TerminationGracePeriodSeconds
					}
					what = fmt.Sprintf("its pod %s gets SIGTERM and %ds to stop, then its GPUs go to the next job", j.Status.PodName, grace)
				case cvlabv1alpha1.PhaseSucceeded, cvlabv1alpha1.PhaseFailed:
					what = "it had finished"
				}
				fmt.Fprintf(r.streams.Out, "cvlabjob %q cancelled (%s, %s)\n", j.Name, strings.ToLower(phaseOf(j)), what)
			}
			return errors.Join(errs...)
		},
	}
}

func (r *root) logsCommand() *cobra.Command {
	var follow bool
	var tail int64
	cmd := &cobra.Command{
		Use:               "logs JOB",
		Short:             "Print the logs of a job's current pod",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: r.completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := r.clients()
			if err != nil {
				return err
			}
			j, err := r.getJob(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			if j.Status.PodName == "" {
				where := phaseOf(j)
				if j.Status.QueuePosition != nil {
					where += fmt.Sprintf(", position %d", *j.Status.QueuePosition)
				}
				return fmt.Errorf("cvlabjob %q has no pod yet (%s): see kubectl cvlab why %s", j.Name, where, j.Name)
			}
			opts := &corev1.PodLogOptions{Container: ContainerName, Follow: follow}
			if tail >= 0 {
				opts.TailLines = &tail
			}
			stream, err := c.kube.CoreV1().Pods(j.Namespace).GetLogs(j.Status.PodName, opts).Stream(cmd.Context())
			if err != nil {
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("pod %q of cvlabjob %q is gone (%s): its logs went with it", j.Status.PodName, j.Name, phaseOf(j))
				}
				return Friendly(err, "", nil)
			}
			defer stream.Close()
			if _, err := io.Copy(r.streams.Out, stream); err != nil && cmd.Context().Err() == nil {
				return err
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "Follow the log as it is written")
	cmd.Flags().Int64Var(&tail, "tail", -1, "Lines of recent log to print; all by default")
	return cmd
}

func (r *root) topCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Who uses how many GPUs: per user, GPUs and jobs running and waiting",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, _, err := r.view(cmd)
			if err != nil {
				return err
			}
			return WriteTop(r.streams.Out, v)
		},
	}
	r.addSettingsFlags(cmd.Flags())
	return cmd
}

// completeJobs lists the namespace's job names for shell completion.
func (r *root) completeJobs(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if cmd.Name() != "cancel" && len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if err := r.loadConfig(cmd); err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ns, _, err := r.namespace()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	c, err := r.clients()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ctx, cancel := context.WithTimeout(contextOf(cmd), 5*time.Second)
	defer cancel()
	var jobs cvlabv1alpha1.CvlabJobList
	if err := c.c.List(ctx, &jobs, client.InNamespace(ns)); err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for _, j := range jobs.Items {
		if strings.HasPrefix(j.Name, prefix) && !slices.Contains(args, j.Name) {
			out = append(out, j.Name)
		}
	}
	slices.Sort(out)
	return out, cobra.ShellCompDirectiveNoFileComp
}

func (r *root) completeUsers(cmd *cobra.Command, prefix string) []string {
	if r.loadConfig(cmd) != nil {
		return nil
	}
	c, err := r.clients()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(contextOf(cmd), 5*time.Second)
	defer cancel()
	var jobs cvlabv1alpha1.CvlabJobList
	if c.c.List(ctx, &jobs) != nil {
		return nil
	}
	var out []string
	for _, j := range jobs.Items {
		if strings.HasPrefix(j.Spec.User, prefix) && !slices.Contains(out, j.Spec.User) {
			out = append(out, j.Spec.User)
		}
	}
	slices.Sort(out)
	return out
}

func (r *root) completeNamespaces(ctx context.Context, prefix string) []string {
	c, err := r.clients()
	if err != nil {
		return nil
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var list corev1.NamespaceList
	if c.c.List(ctx, &list) != nil {
		return nil
	}
	var out []string
	for _, n := range list.Items {
		if strings.HasPrefix(n.Name, prefix) {
			out = append(out, n.Name)
		}
	}
	return out
}

func contextOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
