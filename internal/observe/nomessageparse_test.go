package observe

import (
	"bytes"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// whyNoMessageParsing is the rule the guard below enforces.
const whyNoMessageParsing = "status is output, never input: read the typed status fields, do not parse status.message"

// regexpAllowed are the files that may use regular expressions: they validate user input. Every
// other use is taken for what it was once: reading back the operator's state from the sentences
// of status.message (" on node ...", "backing off ... until ...").
var regexpAllowed = map[string]bool{
	"internal/cli/submit.go":          true, // validates a submitted claim name and timeout
	"internal/directory/directory.go": true, // validates the lab directory's numeric ids as its CEL policy does
}

// regexpSkipped are the directories, relative to the module root, that hold no source of the
// project's own. vendor, testdata and hidden directories are skipped wherever they are.
var regexpSkipped = map[string]bool{"bin": true, "bench/out": true}

// regexpUsers lists, as slash paths relative to root and sorted, the non-test Go files under root
// that import regexp (or a package under it) and are not allowed to.
func regexpUsers(root string, allowed map[string]bool) ([]string, error) {
	var users []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if rel != "." && (regexpSkipped[rel] || name == "vendor" || name == "testdata" ||
				strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") || allowed[rel] {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if importsRegexp(path, src) {
			users = append(users, rel)
		}
		return nil
	})
	slices.Sort(users)
	return users, err
}

// importsRegexp tells whether a Go file imports regexp or a package under it. A file that does
// not parse (being edited) is judged on its text.
func importsRegexp(path string, src []byte) bool {
	f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly)
	if err != nil {
		return bytes.Contains(src, []byte(`"regexp"`)) || bytes.Contains(src, []byte(`"regexp/`))
	}
	for _, imp := range f.Imports {
		p, err := strconv.Unquote(imp.Path.Value)
		if err == nil && (p == "regexp" || strings.HasPrefix(p, "regexp/")) {
			return true
		}
	}
	return false
}

// moduleRoot is the directory of the go.mod above the test's working directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// No code of the repository reads the operator's state back from status.message: the regular
// expressions that once did (in the CLI and the controllers) broke whenever a sentence changed.
func TestNoStatusMessageParsing(t *testing.T) {
	root := moduleRoot(t)
	users, err := regexpUsers(root, regexpAllowed)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range users {
		t.Errorf("%s uses regexp: %s (a file that only validates user input may be added to regexpAllowed in %s)",
			f, whyNoMessageParsing, "internal/observe/nomessageparse_test.go")
	}
	for f := range regexpAllowed {
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(f))); err != nil {
			t.Errorf("regexpAllowed names %s, which does not exist: drop it", f)
		}
	}
}

// The guard finds what it must, and only that.
func TestRegexpUsers(t *testing.T) {
	const bad = "package controllers\n\nimport \"regexp\"\n\n" +
		"var reNode = regexp.MustCompile(` on node (\\S+)`)\n\n" +
		"func nodeOf(message string) string {\n\tif m := reNode.FindStringSubmatch(message); m != nil {\n\t\treturn m[1]\n\t}\n\treturn \"\"\n}\n"
	files := map[string]string{
		"go.mod":                        "module example.com/m\n",
		"controllers/bad.go":            bad,
		"controllers/aliased.go":        "package controllers\n\nimport re \"regexp\"\n\nvar _ = re.MustCompile(`until (\\S+)`)\n",
		"controllers/syntax.go":         "package controllers\n\nimport \"regexp/syntax\"\n\nvar _ = syntax.Perl\n",
		"controllers/broken.go":         "package controllers\n\nimport \"regexp\"\n\nfunc half( {\n", // being edited
		"controllers/mentions.go":       "package controllers\n\n// regexp.MustCompile is not used here.\nvar s = \"regexp\"\n",
		"controllers/bad_test.go":       bad,
		"internal/cli/submit.go":        "package cli\n\nimport \"regexp\"\n\nvar _ = regexp.MustCompile(`^[a-z]+$`)\n",
		"bin/tool.go":                   bad,
		"bench/out/generated.go":        bad,
		"vendor/example.com/x/x.go":     bad,
		"internal/x/testdata/sample.go": bad,
		".git/hooks/x.go":               bad,
		"bench/cmd/ok.go":               "package main\n\nfunc main() {}\n",
	}
	root := t.TempDir()
	for name, src := range files {
		path := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := regexpUsers(root, regexpAllowed)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"controllers/aliased.go", "controllers/bad.go", "controllers/broken.go", "controllers/syntax.go"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("regexpUsers (-want +got):\n%s", diff)
	}
}
