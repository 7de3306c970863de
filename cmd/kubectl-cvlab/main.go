// kubectl-cvlab is the `kubectl cvlab` plugin: submit jobs to the CVLab fair-share GPU queue,
// see the queue, and ask why a job waits. Put the binary on PATH and run `kubectl cvlab`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/epfl-cvlab/cvlab-queue/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	cmd := cli.NewCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	err := cmd.ExecuteContext(ctx)
	stop()
	var exit cli.ExitError
	if errors.As(err, &exit) {
		os.Exit(exit.Code) // the exit status of the command run in the pod (kubectl cvlab shell)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: "+err.Error())
		os.Exit(1)
	}
}
