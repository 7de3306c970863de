//go:build tools

// Package tools pins the Prometheus server so that hack/build-prometheus.sh can build it from the
// Go module proxy. Used by hack/build-prometheus.sh only.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
