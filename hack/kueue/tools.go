//go:build tools

// Package tools pins the Kueue command that hack/build-kueue.sh builds.
package tools

import (
	_ "sigs.k8s.io/kueue/cmd/kueue"
)
