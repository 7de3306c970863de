//go:build !unix

package cli

import "os"

// notifyResize: no resize signal here; the pod's terminal keeps the size it started with.
func notifyResize() (resized <-chan os.Signal, stop func()) {
	return nil, func() {}
}
