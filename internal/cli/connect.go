package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
	streamhttp "k8s.io/streaming/pkg/httpstream"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// `shell` and `port-forward` reach into a job's current pod: the pod is renamed at each admission
// (<job>-<n>), so the job's status.podName says which one, and only while the job runs. In a
// shared namespace only the job's owner and queue admins may (the admission policy job-pod-connect,
// docs/security.md); the refusal is shown as the cluster words it.

// defaultShell runs bash where the image has it, else sh.
var defaultShell = []string{"/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi"}

// ExitError is the exit status of a command run in a pod: kubectl-cvlab exits with it.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("command terminated with exit code %d", e.Code) }

// jobPod is the pod that a shell or a port-forward into job j reaches: its current pod, while the
// job runs. Otherwise the error says where the job stands and what to do.
func jobPod(j *cvlabv1alpha1.CvlabJob) (string, error) {
	st := &j.Status
	switch st.Phase {
	case cvlabv1alpha1.PhaseRunning:
		if st.PodName != "" {
			return st.PodName, nil
		}
		return "", fmt.Errorf("cvlabjob %q is running but its status names no pod yet: try again in a moment", j.Name)
	case cvlabv1alpha1.PhaseAdmitted:
		return "", fmt.Errorf("cvlabjob %q is admitted but its pod %s has not started yet: try again once kubectl cvlab queue shows it Running", j.Name, st.PodName)
	case cvlabv1alpha1.PhaseSucceeded, cvlabv1alpha1.PhaseFailed:
		return "", fmt.Errorf("cvlabjob %q has finished (%s): nothing runs in its pod any more; read its logs with kubectl cvlab logs %s", j.Name, phaseOf(j), j.Name)
	case cvlabv1alpha1.PhaseSuspended:
		return "", fmt.Errorf("cvlabjob %q is suspended and has no pod: set spec.suspend to false to queue it again", j.Name)
	}
	where := "waiting in the queue"
	if st.QueuePosition != nil {
		where += fmt.Sprintf(", position %d", *st.QueuePosition)
	}
	return "", fmt.Errorf("cvlabjob %q has no pod yet (%s): see kubectl cvlab why %s", j.Name, where, j.Name)
}

// forwardedPorts turns [LOCAL:]PORT arguments into portforward's LOCAL:REMOTE, where PORT is a
// number or the name of one of the job's spec.ports; LOCAL empty or 0 picks a free local port.
func forwardedPorts(j *cvlabv1alpha1.CvlabJob, args []string) ([]string, error) {
	out := make([]string, 0, len(args))
	for _, a := range args {
		local, remote, hasLocal := strings.Cut(a, ":")
		if !hasLocal {
			local, remote = "", a
		}
		n, err := strconv.Atoi(remote)
		if err != nil {
			found := false
			for _, p := range j.Spec.Ports {
				if p.Name != "" && p.Name == remote {
					n, found = int(p.ContainerPort), true
				}
			}
			if !found {
				return nil, fmt.Errorf("%q: %q is neither a port number nor the name of one of cvlabjob %q's ports%s", a, remote, j.Name, portNames(j))
			}
			if !hasLocal {
				local = strconv.Itoa(n) // "jupyter" forwards the same local port
			}
		} else if !hasLocal {
			local = remote
		}
		if len(validation.IsValidPortNum(n)) > 0 {
			return nil, fmt.Errorf("%q: the pod's port must be between 1 and 65535", a)
		}
		if local != "" {
			if l, err := strconv.Atoi(local); err != nil || l < 0 || l > 65535 {
				return nil, fmt.Errorf("%q: the local port must be a number between 0 and 65535 (0 or empty: any free port)", a)
			}
		}
		out = append(out, local+":"+strconv.Itoa(n))
	}
	return out, nil
}

func portNames(j *cvlabv1alpha1.CvlabJob) string {
	var names []string
	for _, p := range j.Spec.Ports {
		if p.Name != "" {
			names = append(names, fmt.Sprintf("%s=%d", p.Name, p.ContainerPort))
		}
	}
	if len(names) == 0 {
		return ""
	}
	return " (" + strings.Join(names, ", ") + ")"
}

// connectTarget reads the job, finds its pod, and the REST config and client to reach it.
func (r *root) connectTarget(ctx context.Context, name string) (*cvlabv1alpha1.CvlabJob, string, *rest.Config, *clients, error) {
	c, err := r.clients()
	if err != nil {
		return nil, "", nil, nil, err
	}
	cfg, err := r.kube.ToRESTConfig()
	if err != nil {
		return nil, "", nil, nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	j, err := r.getJob(ctx, c, name)
	if err != nil {
		return nil, "", nil, nil, err
	}
	pod, err := jobPod(j)
	if err != nil {
		return nil, "", nil, nil, err
	}
	return j, pod, cfg, c, nil
}

func (r *root) shellCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "shell JOB [-- COMMAND [ARGS...]]",
		Short: "Open a shell (or run COMMAND) in a running job's pod",
		Long: `Open a shell in the current pod of a running job: bash where the image has it, else sh; or run
COMMAND there. The terminal is interactive when standard input is one (else standard input is
passed through), and kubectl cvlab exits with the command's exit status.

Only the job's owner and queue admins may (the cluster refuses anyone else, saying so); everybody
may read its logs: kubectl cvlab logs JOB.`,
		Example: `  kubectl cvlab shell alice-train
  kubectl cvlab shell alice-train -- nvidia-smi`,
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			switch {
			case len(args) == 0 || dash == 0:
				return errors.New("a job name is required: kubectl cvlab shell JOB [-- COMMAND [ARGS...]]")
			case dash < 0 && len(args) > 1, dash > 1:
				return fmt.Errorf("unexpected arguments %q: put the command after --, e.g. kubectl cvlab shell %s -- nvidia-smi", args[1:], args[0])
			}
			return nil
		},
		ValidArgsFunction: r.completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			j, pod, cfg, c, err := r.connectTarget(ctx, args[0])
			if err != nil {
				return err
			}
			command := defaultShell
			if dash := cmd.ArgsLenAtDash(); dash > 0 && len(args) > dash {
				command = args[dash:]
			}
			fd, tty := terminal(r.streams.In)
			opts := &corev1.PodExecOptions{Container: ContainerName, Command: command, Stdin: true, Stdout: true, Stderr: !tty, TTY: tty}
			req := c.kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(j.Namespace).Name(pod).SubResource("exec").
				VersionedParams(opts, clientgoscheme.ParameterCodec)
			exec, err := newExecutor(cfg, req)
			if err != nil {
				return err
			}
			stream := remotecommand.StreamOptions{Stdin: r.streams.In, Stdout: r.streams.Out, Tty: tty}
			if tty {
				old, err := term.MakeRaw(fd)
				if err != nil {
					return fmt.Errorf("setting the terminal to raw mode: %w", err)
				}
				defer func() { _ = term.Restore(fd, old) }()
				sizes, stop := terminalSizes(ctx, fd)
				defer stop()
				stream.TerminalSizeQueue = sizes
			} else {
				stream.Stderr = r.streams.ErrOut
			}
			err = exec.StreamWithContext(ctx, stream)
			var exit utilexec.CodeExitError
			if errors.As(err, &exit) {
				return ExitError{Code: exit.Code}
			}
			return connectError(err, j, pod, "open a shell in")
		},
	}
}

func (r *root) portForwardCommand() *cobra.Command {
	var addresses []string
	cmd := &cobra.Command{
		Use:   "port-forward JOB [LOCAL:]PORT...",
		Short: "Forward local ports to a running job's pod (Jupyter, TensorBoard)",
		Long: `Forward local ports to the current pod of a running job until Ctrl-C. PORT is a port number or
the name of one of the job's ports (submit --port NAME=PORT); LOCAL is the local port (the same as
PORT when left out; ":PORT" or "0:PORT" picks a free one).

Only the job's owner and queue admins may (the cluster refuses anyone else, saying so).`,
		Example: `  kubectl cvlab port-forward alice-jupyter 8888
  kubectl cvlab port-forward alice-jupyter 9999:8888 6006`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return errors.New("a job and at least one port are required: kubectl cvlab port-forward JOB [LOCAL:]PORT...")
			}
			return nil
		},
		ValidArgsFunction: r.completeJobs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			j, pod, cfg, c, err := r.connectTarget(ctx, args[0])
			if err != nil {
				return err
			}
			ports, err := forwardedPorts(j, args[1:])
			if err != nil {
				return err
			}
			req := c.kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(j.Namespace).Name(pod).SubResource("portforward")
			dialer, err := newPortForwardDialer(cfg, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(r.streams.ErrOut, "Forwarding to pod %s of cvlabjob %q (Ctrl-C to stop)\n", pod, j.Name)
			fw, err := portforward.NewOnAddressesForStreamingWithContext(ctx, dialer, addresses, ports, nil, r.streams.Out, r.streams.ErrOut)
			if err != nil {
				return err
			}
			err = fw.ForwardPorts()
			if dialer.err != nil {
				err = dialer.err // its type, which ForwardPorts' message drops
			}
			if errors.Is(err, portforward.ErrLostConnectionToPod) {
				return fmt.Errorf("lost the connection to pod %s of cvlabjob %q: it stopped or was restarted; see kubectl cvlab why %s", pod, j.Name, j.Name)
			}
			return connectError(err, j, pod, "port-forward to")
		},
	}
	cmd.Flags().StringSliceVar(&addresses, "address", []string{"localhost"}, "Local addresses to listen on (comma-separated): localhost, IPs")
	return cmd
}

// terminal tells whether in is a terminal, and its descriptor.
func terminal(in io.Reader) (int, bool) {
	f, ok := in.(*os.File)
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

// sizeQueue tells the pod's terminal the local terminal's size: at once, then at each resize.
type sizeQueue chan remotecommand.TerminalSize

func (q sizeQueue) Next() *remotecommand.TerminalSize {
	s, ok := <-q
	if !ok {
		return nil
	}
	return &s
}

func terminalSizes(ctx context.Context, fd int) (remotecommand.TerminalSizeQueue, func()) {
	q := make(sizeQueue, 1)
	send := func() {
		if w, h, err := term.GetSize(fd); err == nil {
			select {
			case q <- remotecommand.TerminalSize{Width: uint16(w), Height: uint16(h)}:
			default: // the previous size is not read yet; the next resize brings the newest
			}
		}
	}
	send()
	resized, stopResized := notifyResize()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(q)
		for {
			select {
			case <-ctx.Done():
				return
			case <-resized:
				send()
			}
		}
	}()
	return q, func() { stopResized(); cancel(); <-done }
}

// newExecutor speaks WebSocket to the API server, falling back to SPDY as kubectl does (older
// servers, proxies, and roles that grant exec's create but not the get a WebSocket also needs).
func newExecutor(cfg *rest.Config, req *rest.Request) (remotecommand.Executor, error) {
	spdyExec, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, req.URL())
	if err != nil {
		return nil, err
	}
	// WebSocket needs GET (RFC 6455); the API server authorizes it as create, like POST.
	wsExec, err := remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, req.URL().String())
	if err != nil {
		return nil, err
	}
	return remotecommand.NewFallbackExecutor(wsExec, spdyExec, shouldFallback)
}

// recordingDialer keeps the error of the last dial: PortForwarder.ForwardPorts returns it as text.
type recordingDialer struct {
	streamhttp.Dialer
	err error
}

func (d *recordingDialer) Dial(protocols ...string) (streamhttp.Connection, string, error) {
	conn, protocol, err := d.Dialer.Dial(protocols...)
	d.err = err
	return conn, protocol, err
}

func newPortForwardDialer(cfg *rest.Config, req *rest.Request) (*recordingDialer, error) {
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	spdyDialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, req.URL())
	wsDialer, err := portforward.NewSPDYOverWebsocketDialerForStreaming(req.URL(), cfg)
	if err != nil {
		return nil, err
	}
	return &recordingDialer{Dialer: portforward.NewFallbackDialerForStreaming(wsDialer, spdyDialer, shouldFallback)}, nil
}

// shouldFallback: any failed upgrade but one whose answer no protocol changes (not logged in, no
// such pod). A 403 may be RBAC refusing the WebSocket's get while SPDY's create is granted.
func shouldFallback(err error) bool {
	if s, ok := apiStatus(err); ok {
		switch s.Status().Code {
		case http.StatusUnauthorized, http.StatusNotFound:
			return false
		}
	}
	return streamhttp.IsUpgradeFailure(err) || streamhttp.IsHTTPSProxyError(err)
}

// apiStatus is the API server's answer inside err, also when it refused a protocol upgrade.
func apiStatus(err error) (apierrors.APIStatus, bool) {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s, true
	}
	var upgrade *streamhttp.UpgradeFailureError
	if errors.As(err, &upgrade) && errors.As(upgrade.Cause, &s) {
		return s, true
	}
	return nil, false
}

// connectError says what went wrong reaching pod, the current pod of job j.
func connectError(err error, j *cvlabv1alpha1.CvlabJob, pod, what string) error {
	if err == nil {
		return nil
	}
	if s, ok := apiStatus(err); ok {
		se := &apierrors.StatusError{ErrStatus: s.Status()}
		switch {
		case apierrors.IsForbidden(se):
			return fmt.Errorf("not allowed to %s pod %s of cvlabjob %q: %s", what, pod, j.Name, ErrorMessage(se))
		case apierrors.IsNotFound(se):
			return fmt.Errorf("pod %s of cvlabjob %q is gone (stopped or restarted): see kubectl cvlab why %s", pod, j.Name, j.Name)
		case apierrors.IsUnauthorized(se):
			return Friendly(se, "", nil)
		}
		return fmt.Errorf("cannot %s pod %s of cvlabjob %q: %s", what, pod, j.Name, se.ErrStatus.Message)
	}
	// SPDY reports the API server's refusal of an upgrade as text: "unable to upgrade connection:
	// pods "x" is forbidden: ...".
	if msg := err.Error(); strings.Contains(msg, " is forbidden: ") {
		return fmt.Errorf("not allowed to %s pod %s of cvlabjob %q: %s", what, pod, j.Name, ErrorMessage(err))
	}
	return fmt.Errorf("cannot %s pod %s of cvlabjob %q: %w", what, pod, j.Name, err)
}
