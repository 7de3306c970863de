package memlimit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCgroup(t *testing.T) {
	cases := map[string]struct {
		files     map[string]string
		wantLimit int64
		wantOK    bool
	}{
		"cgroup v2 limit":            {files: map[string]string{"memory.max": "268435456\n"}, wantLimit: 268435456, wantOK: true},
		"cgroup v2 no limit":         {files: map[string]string{"memory.max": "max\n"}},
		"cgroup v1 limit":            {files: map[string]string{"memory/memory.limit_in_bytes": "536870912\n"}, wantLimit: 536870912, wantOK: true},
		"cgroup v1 no limit":         {files: map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}},
		"v2 wins over v1":            {files: map[string]string{"memory.max": "1000", "memory/memory.limit_in_bytes": "2000"}, wantLimit: 1000, wantOK: true},
		"no cgroup files":            {},
		"garbage":                    {files: map[string]string{"memory.max": "lots"}},
		"zero is not a usable limit": {files: map[string]string{"memory.max": "0"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			for f, content := range tc.files {
				p := filepath.Join(root, f)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			limit, ok := Cgroup(root)
			if limit != tc.wantLimit || ok != tc.wantOK {
				t.Errorf("Cgroup = %d, %v; want %d, %v", limit, ok, tc.wantLimit, tc.wantOK)
			}
		})
	}
}
