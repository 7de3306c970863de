package notifications_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

var fw *framework.Framework

func TestNotifications(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Personal notifications suite")
}

var _ = BeforeSuite(func() { fw = framework.Start() })
var _ = AfterSuite(func() { fw.Stop() })
