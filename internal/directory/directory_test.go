package directory

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var alice = Identity{Name: "alice", UID: 123456, GroupName: "cvlab", GID: 11166}

func TestParse(t *testing.T) {
	cases := map[string]struct {
		data     map[string]string
		user     string
		want     *Identity // nil: no valid entry
		problem  string    // part of Problem(user)
		enforced bool
		errs     []string // parts of Parse's error; none: nil
	}{
		"no directory":         {data: nil, user: "alice"},
		"the shipped one":      {data: map[string]string{}, user: "alice"},
		"an entry":             {data: map[string]string{"alice": "name=alice uid=123456 groupName=cvlab gid=11166"}, user: "alice", want: &alice},
		"another user's entry": {data: map[string]string{"bob": "name=bob uid=1 groupName=cvlab gid=2"}, user: "alice"},
		"fields in any order, any blanks, unknown fields and words ignored": {
			data: map[string]string{"alice": "\n gid=11166\temail=alice@epfl.ch  groupName=cvlab\r\fname=alice phone=+41 slack=U0ALICE1  uid=123456 note\n"},
			user: "alice", want: &alice},
		"a value with '=' and unicode": {data: map[string]string{"erin.epfl.ch": "name=é=1 uid=0 groupName=ラボ gid=000000000000000007"},
			user: "erin.epfl.ch", want: &Identity{Name: "é=1", UID: 0, GroupName: "ラボ", GID: 7}},
		"64 characters": {data: map[string]string{"u": "name=" + strings.Repeat("é", 64) + " uid=1 groupName=g gid=1"},
			user: "u", want: &Identity{Name: strings.Repeat("é", 64), UID: 1, GroupName: "g", GID: 1}},
		"largest ids": {data: map[string]string{"u": "name=u uid=999999999999999999 groupName=g gid=1"},
			user: "u", want: &Identity{Name: "u", UID: 999999999999999999, GroupName: "g", GID: 1}},
		"a field missing": {data: map[string]string{"alice": "name=alice uid=123456 groupName=cvlab"}, user: "alice",
			problem: "gid is missing", errs: []string{"entry alice: gid is missing"}},
		"a field twice": {data: map[string]string{"alice": "name=alice uid=1 uid=2 groupName=cvlab gid=3"}, user: "alice",
			problem: "uid is given 2 times"},
		"a negative uid": {data: map[string]string{"alice": "name=alice uid=-1 groupName=cvlab gid=3"}, user: "alice",
			problem: `uid "-1" is not a number of at most 18 digits`},
		"19 digits": {data: map[string]string{"alice": "name=alice uid=1000000000000000000 groupName=cvlab gid=3"}, user: "alice",
			problem: `uid "1000000000000000000" is not a number`},
		"an empty name": {data: map[string]string{"alice": "name= uid=1 groupName=cvlab gid=3"}, user: "alice",
			problem: "name must have 1 to 64 characters"},
		"65 characters": {data: map[string]string{"alice": "name=alice uid=1 groupName=" + strings.Repeat("g", 65) + " gid=3"}, user: "alice",
			problem: "groupName must have 1 to 64 characters"},
		"everything wrong, said once per field": {data: map[string]string{"alice": "alice:123456:cvlab:11166"}, user: "alice",
			problem: "name is missing, uid is missing, groupName is missing, gid is missing (want \"name=<account> uid=<number> groupName=<group> gid=<number>\")"},
		"a bad entry keeps the good ones": {data: map[string]string{"alice": "name=alice uid=123456 groupName=cvlab gid=11166", "bob": "uid=x"},
			user: "alice", want: &alice, errs: []string{"entry bob: name is missing"}},
		"enforced":                    {data: map[string]string{"enforce": "true"}, user: "alice", enforced: true},
		"enforced, any case":          {data: map[string]string{"enforce": " TRUE\n"}, user: "alice", enforced: true},
		"not enforced":                {data: map[string]string{"enforce": "false"}, user: "alice"},
		"enforce empty":               {data: map[string]string{"enforce": ""}, user: "alice"},
		"enforce neither":             {data: map[string]string{"enforce": "yes"}, user: "alice", errs: []string{`enforce: "yes" is neither true nor false (taken as false)`}},
		"enforce is no user's entry":  {data: map[string]string{"enforce": "name=e uid=1 groupName=g gid=1"}, user: "enforce", errs: []string{`enforce: "name=e`}},
		"errors sorted by key":        {data: map[string]string{"zed": "", "adam": "", "enforce": "1"}, user: "x", errs: []string{"entry adam: ", "enforce: ", "entry zed: "}},
		"a user who is not there yet": {data: map[string]string{"alice": "name=alice uid=123456 groupName=cvlab gid=11166"}, user: "alice2"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d, err := Parse(tc.data)
			got, ok := d.Lookup(tc.user)
			switch {
			case tc.want == nil && ok:
				t.Errorf("Lookup(%q) = %+v, want no entry", tc.user, got)
			case tc.want != nil && !ok:
				t.Errorf("Lookup(%q): no entry, want %+v", tc.user, *tc.want)
			case tc.want != nil:
				if diff := cmp.Diff(*tc.want, got); diff != "" {
					t.Errorf("Lookup(%q) (-want +got):\n%s", tc.user, diff)
				}
			}
			p, bad := d.Problem(tc.user)
			if bad != (tc.problem != "") || !strings.Contains(p, tc.problem) {
				t.Errorf("Problem(%q) = %q, %v; want it to contain %q", tc.user, p, bad, tc.problem)
			}
			if d.Enforced() != tc.enforced {
				t.Errorf("Enforced() = %v, want %v", d.Enforced(), tc.enforced)
			}
			if tc.problem != "" && len(tc.errs) == 0 {
				tc.errs = []string{"entry " + tc.user + ": " + tc.problem}
			}
			if len(tc.errs) == 0 {
				if err != nil {
					t.Errorf("Parse: %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse: no error, want %q", tc.errs)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.errs) {
				t.Fatalf("Parse error has %d lines, want %d: %v", len(lines), len(tc.errs), err)
			}
			for i, want := range tc.errs {
				if !strings.Contains(lines[i], want) {
					t.Errorf("Parse error line %d = %q, want it to contain %q", i, lines[i], want)
				}
			}
		})
	}
}

func TestContact(t *testing.T) {
	cases := map[string]struct {
		value string
		want  *Contact // nil: none
		errs  []string // parts of Parse's error; none: nil
	}{
		"none":                             {value: "name=alice uid=1 groupName=g gid=2"},
		"all three":                        {value: "name=alice uid=1 groupName=g gid=2 email=alice@epfl.ch slack=U024BE7LH mattermost=alice.s", want: &Contact{Email: "alice@epfl.ch", Slack: "U024BE7LH", Mattermost: "alice.s"}},
		"contact only, no account":         {value: "email=alice@epfl.ch", want: &Contact{Email: "alice@epfl.ch"}, errs: []string{"entry alice: name is missing"}},
		"a display name is refused":        {value: "email=Alice<alice@epfl.ch>", errs: []string{`email "Alice<alice@epfl.ch>" is not a bare address`}},
		"two recipients are refused":       {value: "email=a@x.ch,b@y.ch", errs: []string{"is not a bare address"}},
		"line breaks only separate fields": {value: "email=a@x.ch\r\nBcc:b@y.ch", want: &Contact{Email: "a@x.ch"}},
		"a mention is not a member ID":     {value: "slack=@alice mattermost=@alice", errs: []string{`slack "@alice" is not a Slack member ID`, `mattermost "@alice" is not a Mattermost username`}},
		"a channel mention is refused":     {value: "slack=<!channel> mattermost=all", errs: []string{"slack", "mattermost"}},
		"email twice: not messaged":        {value: "email=a@x.ch email=b@y.ch slack=U1234", want: &Contact{Slack: "U1234"}, errs: []string{"email is given 2 times"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d, err := Parse(map[string]string{"alice": tc.value})
			got, ok := d.Contact("alice")
			if tc.want == nil {
				if ok {
					t.Errorf("Contact = %+v, want none", got)
				}
			} else if diff := cmp.Diff(*tc.want, got); diff != "" || !ok {
				t.Errorf("Contact (-want +got, ok=%v):\n%s", ok, diff)
			}
			for _, e := range tc.errs {
				if err == nil || !strings.Contains(err.Error(), e) {
					t.Errorf("error %v, want it to say %q", err, e)
				}
			}
			if len(tc.errs) == 0 && err != nil && !strings.Contains(err.Error(), "is missing") {
				t.Errorf("unexpected error %v", err)
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	cases := map[string]struct {
		id           Identity
		format, text string
	}{
		"alice":  {id: alice, format: "name=alice uid=123456 groupName=cvlab gid=11166", text: "alice (uid 123456), group cvlab (gid 11166)"},
		"zeroes": {id: Identity{Name: "root", GroupName: "root"}, format: "name=root uid=0 groupName=root gid=0", text: "root (uid 0), group root (gid 0)"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := Format(tc.id); got != tc.format {
				t.Errorf("Format = %q, want %q", got, tc.format)
			}
			if got := tc.id.String(); got != tc.text {
				t.Errorf("String = %q, want %q", got, tc.text)
			}
			if got := FromClusterUser(tc.id.ClusterUser()); got != tc.id {
				t.Errorf("through spec.clusterUser: %+v, want %+v", got, tc.id)
			}
		})
	}
}

// FuzzParse: any ConfigMap data parses without panicking; every entry is either valid or has a
// problem, never both; a valid entry formats back to a value that parses to the same identity, so
// that an admin's `kubectl cvlab` or script can rewrite entries without changing them; and an
// identity that fits the rules round-trips through Format.
//
//	go test ./internal/directory -run '^$' -fuzz '^FuzzParse$' -fuzztime 60s
func FuzzParse(f *testing.F) {
	f.Add("alice", "name=alice uid=123456 groupName=cvlab gid=11166", "alice", int64(123456), "cvlab", int64(11166), "true")
	f.Add("bob", " gid=1\tuid=2 email=b@x name=bob groupName=g=h ", "b", int64(0), "g", int64(0), "TRUE ")
	f.Add("enforce", "name=x uid=1 groupName=g gid=1", "é", int64(999999999999999999), "ラボ", int64(1), "yes")
	f.Add("carol", "name= uid=01 uid=2 groupName=\u00a0 gid=+3", "a b", int64(-1), "", int64(1e18), "")
	f.Fuzz(func(t *testing.T, key, value, name string, uid int64, group string, gid int64, enforce string) {
		d, _ := Parse(map[string]string{key: value, KeyEnforce: enforce})
		id, ok := d.Lookup(key)
		_, bad := d.Problem(key)
		switch {
		case key == KeyEnforce && (ok || bad):
			t.Fatalf("the reserved key %q parsed as an entry", key)
		case key != KeyEnforce && ok == bad:
			t.Fatalf("entry %q: valid %v and with a problem %v", value, ok, bad)
		}
		if d.Enforced() != (strings.ToLower(strings.TrimSpace(enforce)) == "true") {
			t.Fatalf("enforce %q: Enforced() = %v", enforce, d.Enforced())
		}
		if ok {
			back, _ := Parse(map[string]string{key: Format(id)})
			if got, ok := back.Lookup(key); !ok || got != id {
				t.Fatalf("entry %q gives %+v, whose Format %q gives %+v, %v", value, id, Format(id), got, ok)
			}
		}

		want := Identity{Name: name, UID: uid, GroupName: group, GID: gid}
		d, _ = Parse(map[string]string{"u": Format(want)})
		got, ok := d.Lookup("u")
		// What fits comes back; what does not (a name with a blank, a negative id) never comes back
		// as itself: it is refused, or read as something else (the policy compares field by field).
		if roundTrip := ok && got == want; roundTrip != fits(want) {
			t.Fatalf("Format(%+v) = %q parses to %+v, %v (fits the rules: %v)", want, Format(want), got, ok, fits(want))
		}
	})
}

// fits tells whether an identity can be written in the directory: names of 1 to 64 characters
// without whitespace, ids of 0 to 18 digits. (A name may hold "=" or look like another field:
// Format writes it after its own "name=" or "groupName=".)
func fits(id Identity) bool {
	name := func(s string) bool {
		n := 0
		for _, r := range s {
			if isSpace(r) {
				return false
			}
			n++
		}
		return n >= 1 && n <= MaxNameLength
	}
	return name(id.Name) && name(id.GroupName) && id.UID >= 0 && id.UID <= 999999999999999999 && id.GID >= 0 && id.GID <= 999999999999999999
}

func TestHolders(t *testing.T) {
	data := map[string]string{
		"alice":   "name=alice uid=123456 groupName=cvlab gid=11166",
		"bob":     "uid=0123457 name=bob name=robert", // not valid, still bob's
		"carol":   "name=carol uid=x gid=123456",      // a gid is not a uid
		"enforce": "name=alice uid=1",                 // reserved: nobody's
	}
	cases := map[string]struct {
		name string
		uid  int64
		want []string
	}{
		"by uid":               {name: "x", uid: 123456, want: []string{"alice"}},
		"by name":              {name: "robert", uid: 9, want: []string{"bob"}},
		"leading zeros":        {name: "x", uid: 123457, want: []string{"bob"}},
		"both, sorted":         {name: "bob", uid: 123456, want: []string{"alice", "bob"}},
		"a gid":                {name: "x", uid: 11166},
		"nobody's":             {name: "dave", uid: 1},
		"a name with a blank":  {name: "alice ", uid: 7},
		"not a uid, no holder": {name: "x", uid: 0},
	}
	d, _ := Parse(data)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, d.Holders(tc.name, tc.uid)); diff != "" {
				t.Errorf("Holders(%q, %d) (-want +got):\n%s", tc.name, tc.uid, diff)
			}
		})
	}
}
