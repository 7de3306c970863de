package scheduling_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

var fw *framework.Framework

func TestScheduling(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Capacity, placement and preemption suite")
}

var _ = BeforeSuite(func() { fw = framework.Start() })
var _ = AfterSuite(func() { fw.Stop() })
