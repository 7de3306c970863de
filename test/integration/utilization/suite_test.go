package utilization_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

var fw *framework.Framework

func TestUtilization(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "GPU utilisation and the idle policy suite")
}

var _ = BeforeSuite(func() { fw = framework.Start() })
var _ = AfterSuite(func() { fw.Stop() })
