package queue_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

var fw *framework.Framework

func TestQueue(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Queue controller suite")
}

var _ = BeforeSuite(func() { fw = framework.Start() })
var _ = AfterSuite(func() { fw.Stop() })
