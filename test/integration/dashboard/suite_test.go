package dashboard_test

import (
	"os"
	"os/exec"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/epfl-cvlab/cvlab-queue/test/integration/framework"
)

var (
	fw *framework.Framework
	// chromium is the browser the specs drive.
	chromium string
)

func TestDashboard(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Queue dashboard suite (headless Chromium)")
}

var _ = BeforeSuite(func() {
	chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		if chromium, err = exec.LookPath("chromium"); err != nil {
			Skip("no Chromium at /usr/bin/chromium nor on PATH: install chromium: apt-get install -y chromium")
		}
	}
	fw = framework.Start()
})
var _ = AfterSuite(func() {
	if fw != nil {
		fw.Stop()
	}
})
