package validation

import (
	"slices"
	"testing"
)

func TestParseAdminGroups(t *testing.T) {
	cases := map[string]struct {
		in      string
		want    []string
		wantErr bool
	}{
		"the default":                 {in: DefaultAdminGroups, want: []string{"cvlab-admins"}},
		"empty means no admin group":  {in: "", want: nil},
		"blanks and empties dropped":  {in: " lab-heads, ,it-staff ,", want: []string{"lab-heads", "it-staff"}},
		"duplicates dropped":          {in: "a,b,a", want: []string{"a", "b"}},
		"service account groups kept": {in: "system:serviceaccounts:argocd", want: []string{"system:serviceaccounts:argocd"}},
		"control characters refused":  {in: "a\nb", wantErr: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParseAdminGroups(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("groups = %q, want %q", got, tc.want)
			}
		})
	}
}
