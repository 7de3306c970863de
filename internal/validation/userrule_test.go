package validation

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The username -> user name rule (docs/security.md#user-names) is CEL copied into every policy that
// needs it, between the markers below: policies cannot share variables. Every copy must be the same,
// or a person would be "alice" to one policy and someone else to another (job-owner-default sets
// spec.user, job-owner checks it, job-pod-connect compares it with the owner of a pod).
const (
	ruleStart = "# --- the username -> user name rule"
	ruleEnd   = "# --- end of the rule ---"
)

func TestUserNameRuleCopiesAreIdentical(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "config", "policies", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no policies in config/policies: %v", err)
	}
	copies := map[string]string{} // file -> the rule's lines
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		start, end := strings.Index(text, ruleStart), strings.Index(text, ruleEnd)
		switch {
		case start < 0 && end < 0:
			if strings.Contains(text, "variables.stripPrefixes") {
				t.Errorf("%s uses the user name rule without its markers (%q ... %q)", filepath.Base(f), ruleStart, ruleEnd)
			}
			continue
		case start < 0 || end < start || strings.Count(text, ruleStart) != 1 || strings.Count(text, ruleEnd) != 1:
			t.Errorf("%s: the user name rule must be between one %q line and one %q line", filepath.Base(f), ruleStart, ruleEnd)
			continue
		}
		// The marker line itself names the file to keep in sync with, which differs.
		body := text[start:end]
		copies[filepath.Base(f)] = body[strings.Index(body, "\n")+1:]
	}
	for _, must := range []string{"job_owner_default.yaml", "job_owner.yaml", "job_pod_connect.yaml"} {
		if _, ok := copies[must]; !ok {
			t.Errorf("%s has no copy of the user name rule", must)
		}
	}
	ref := copies["job_owner.yaml"]
	for f, c := range copies {
		if c != ref {
			t.Errorf("the user name rule of %s differs from job_owner.yaml's:\n%s\nwant:\n%s", f, c, ref)
		}
	}
}
