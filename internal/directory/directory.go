// Package directory reads the lab directory: the admin-maintained ConfigMap that maps each user
// name (a CvlabJob's spec.user) to the cluster account its pods act as on the lab's shared storage
// (spec.clusterUser: name, uid, groupName, gid). See docs/security.md#the-lab-directory.
//
// The admission policy config/policies/job_cluster_user.yaml reads the same ConfigMap in CEL; the
// two must agree on every entry. The format is chosen so that CEL can read it: each value is
// fields "key=value" separated by whitespace (space, tab, newline, carriage return, form feed:
// RE2's \s), e.g.
//
//	alice: "name=alice uid=123456 groupName=cvlab gid=11166"
//
// An entry is valid when name, uid, groupName and gid each appear exactly once, name and groupName
// have 1 to 64 characters, and uid and gid are 1 to 18 decimal digits. The contact fields email=,
// slack= (a Slack member ID) and mattermost= (a Mattermost username) say how the operator tells the
// user about their jobs (Contact); they are read whether or not the account fields are valid.
// Other fields and tokens without "=" are ignored, so that entries can grow. The key "enforce" is
// reserved: "true" (any case, blanks around it ignored) refuses jobs of users without a valid
// entry. Every entry, valid or not, holds the names and uids it names (Holders): a user without
// an entry may not take them.
package directory

import (
	"errors"
	"fmt"
	"maps"
	"net/mail"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
)

// Keys and fields of the directory.
const (
	// KeyEnforce is the reserved key: "true" refuses the jobs of users without a valid entry.
	KeyEnforce = "enforce"
	// The fields of an entry.
	FieldName      = "name"
	FieldUID       = "uid"
	FieldGroupName = "groupName"
	FieldGID       = "gid"
	// The contact fields.
	FieldEmail      = "email"
	FieldSlack      = "slack"
	FieldMattermost = "mattermost"
	// MaxNameLength is the longest name and groupName, as the CRD's spec.clusterUser allows.
	MaxNameLength = 64
)

// fields are an entry's fields in the order they are written and reported.
var fields = []string{FieldName, FieldUID, FieldGroupName, FieldGID}

// reID is what the policy accepts as a uid or gid (`matches('^[0-9]{1,18}$')` in CEL): at most 18
// digits, so that it always fits an int64.
var reID = regexp.MustCompile(`^[0-9]{1,18}$`)

// reSlack is a Slack member ID (U… for users, W… for Enterprise Grid users); reMattermost a
// Mattermost username (lower-case letters, digits, '.', '-' and '_', starting with a letter).
var (
	reSlack      = regexp.MustCompile(`^[UW][A-Z0-9]{2,20}$`)
	reMattermost = regexp.MustCompile(`^[a-z][a-z0-9._-]{2,21}$`)
)

// Contact is how to reach a user: each field empty when not given or not valid.
type Contact struct {
	Email      string
	Slack      string
	Mattermost string
}

// parseContact reads the contact fields of an entry; problems name the fields that are not valid
// (they are left out: the user is not messaged on that channel). A field given twice counts as not
// valid, as in the account fields.
func parseContact(value string) (Contact, []string) {
	var c Contact
	var problems []string
	seen := map[string]int{}
	for _, token := range strings.FieldsFunc(value, isSpace) {
		for _, f := range []string{FieldEmail, FieldSlack, FieldMattermost} {
			v, ok := strings.CutPrefix(token, f+"=")
			if !ok {
				continue
			}
			seen[f]++
			switch f {
			case FieldEmail:
				// A bare address only: no display name, no angle brackets, so that nothing in the
				// directory can add a recipient or a header.
				if a, err := mail.ParseAddress(v); err == nil && a.Name == "" && a.Address == v && len(v) <= 254 {
					c.Email = v
				} else {
					problems = append(problems, fmt.Sprintf("email %q is not a bare address", v))
				}
			case FieldSlack:
				if reSlack.MatchString(v) {
					c.Slack = v
				} else {
					problems = append(problems, fmt.Sprintf("slack %q is not a Slack member ID such as U024BE7LH", v))
				}
			case FieldMattermost:
				// @all, @channel and @here would tell the whole channel.
				if reMattermost.MatchString(v) && v != "all" && v != "channel" && v != "here" {
					c.Mattermost = v
				} else {
					problems = append(problems, fmt.Sprintf("mattermost %q is not a Mattermost username", v))
				}
			}
		}
	}
	for _, f := range []string{FieldEmail, FieldSlack, FieldMattermost} {
		if seen[f] > 1 {
			problems = append(problems, f+" is given "+strconv.Itoa(seen[f])+" times")
			switch f {
			case FieldEmail:
				c.Email = ""
			case FieldSlack:
				c.Slack = ""
			case FieldMattermost:
				c.Mattermost = ""
			}
		}
	}
	return c, problems
}

// Identity is a user's cluster account, as in a CvlabJob's spec.clusterUser.
type Identity struct {
	Name      string
	UID       int64
	GroupName string
	GID       int64
}

// ClusterUser is the identity as a CvlabJob's spec.clusterUser.
func (id Identity) ClusterUser() *cvlabv1alpha1.ClusterUser {
	return &cvlabv1alpha1.ClusterUser{Name: id.Name, UID: id.UID, GroupName: id.GroupName, GID: id.GID}
}

// FromClusterUser is the identity of a spec.clusterUser.
func FromClusterUser(cu *cvlabv1alpha1.ClusterUser) Identity {
	return Identity{Name: cu.Name, UID: cu.UID, GroupName: cu.GroupName, GID: cu.GID}
}

// String is the identity as people read it: "alice (uid 123456), group cvlab (gid 11166)".
func (id Identity) String() string {
	return fmt.Sprintf("%s (uid %d), group %s (gid %d)", id.Name, id.UID, id.GroupName, id.GID)
}

// Format renders id as a directory value, "name=alice uid=123456 groupName=cvlab gid=11166". It
// parses back to id when id is valid (names of 1 to 64 characters without whitespace, ids of at
// most 18 digits).
func Format(id Identity) string {
	return FieldName + "=" + id.Name + " " + FieldUID + "=" + strconv.FormatInt(id.UID, 10) + " " +
		FieldGroupName + "=" + id.GroupName + " " + FieldGID + "=" + strconv.FormatInt(id.GID, 10)
}

// Directory is a parsed lab directory. The zero value is an empty directory that enforces nothing,
// which is what a cluster without the ConfigMap has.
type Directory struct {
	entries  map[string]Identity
	problems map[string]string // user → why the entry is not valid
	enforced bool
	// names and uids are the accounts each entry names, valid or not: user → values.
	names map[string][]string
	uids  map[string][]int64
	// contacts are the users' valid contact fields.
	contacts map[string]Contact
}

// Parse reads the directory's ConfigMap data. It is tolerant: every valid entry is kept whatever
// else is wrong, unknown fields are ignored, and the error (nil when everything is fine) lists the
// entries that are not valid and an enforce value that is neither true nor false, one per key,
// sorted, for the operator's log and `kubectl cvlab`.
func Parse(data map[string]string) (Directory, error) {
	var d Directory
	var errs []error
	for _, user := range slices.Sorted(maps.Keys(data)) {
		value := data[user]
		if user == KeyEnforce {
			switch v := strings.ToLower(strings.TrimSpace(value)); {
			case isTrue(value):
				d.enforced = true
			case v != "false" && v != "":
				errs = append(errs, fmt.Errorf("%s: %q is neither true nor false (taken as false)", KeyEnforce, value))
			}
			continue
		}
		names, uids := accounts(value)
		if len(names) > 0 || len(uids) > 0 {
			if d.names == nil {
				d.names, d.uids = map[string][]string{}, map[string][]int64{}
			}
			d.names[user], d.uids[user] = names, uids
		}
		contact, cproblems := parseContact(value)
		if contact != (Contact{}) {
			if d.contacts == nil {
				d.contacts = map[string]Contact{}
			}
			d.contacts[user] = contact
		}
		for _, p := range cproblems {
			errs = append(errs, fmt.Errorf("entry %s: %s (ignored)", user, p))
		}
		id, problem := parseEntry(value)
		if problem != "" {
			if d.problems == nil {
				d.problems = map[string]string{}
			}
			d.problems[user] = problem
			errs = append(errs, fmt.Errorf("entry %s: %s", user, problem))
			continue
		}
		if d.entries == nil {
			d.entries = map[string]Identity{}
		}
		d.entries[user] = id
	}
	return d, errors.Join(errs...)
}

// isTrue is the policy's `params.data.enforce.trim().lowerAscii() == 'true'`.
func isTrue(v string) bool {
	v = strings.TrimSpace(v)
	if len(v) != 4 {
		return false
	}
	for i, want := range []byte("true") {
		c := v[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != want {
			return false
		}
	}
	return true
}

// isSpace is RE2's \s, the separator of the policy's `findAll('\\S+')`.
func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\f' || r == '\r'
}

// parseEntry reads one value; problem says why it is not a valid entry ("" when it is).
func parseEntry(value string) (Identity, string) {
	values := map[string][]string{}
	for _, token := range strings.FieldsFunc(value, isSpace) {
		for _, f := range fields {
			if v, ok := strings.CutPrefix(token, f+"="); ok {
				values[f] = append(values[f], v)
			}
		}
	}
	var id Identity
	var problems []string
	for _, f := range fields {
		vs := values[f]
		switch {
		case len(vs) == 0:
			problems = append(problems, f+" is missing")
			continue
		case len(vs) > 1:
			problems = append(problems, f+" is given "+strconv.Itoa(len(vs))+" times")
			continue
		}
		v := vs[0]
		switch f {
		case FieldName, FieldGroupName:
			if n := utf8.RuneCountInString(v); n < 1 || n > MaxNameLength {
				problems = append(problems, fmt.Sprintf("%s must have 1 to %d characters", f, MaxNameLength))
				continue
			}
			if f == FieldName {
				id.Name = v
			} else {
				id.GroupName = v
			}
		case FieldUID, FieldGID:
			if !reID.MatchString(v) {
				problems = append(problems, fmt.Sprintf("%s %q is not a number of at most 18 digits", f, v))
				continue
			}
			n, _ := strconv.ParseInt(v, 10, 64) // 18 digits always fit
			if f == FieldUID {
				id.UID = n
			} else {
				id.GID = n
			}
		}
	}
	if len(problems) > 0 {
		return Identity{}, strings.Join(problems, ", ") + ` (want "name=<account> uid=<number> groupName=<group> gid=<number>")`
	}
	return id, ""
}

// accounts are the names and uids an entry names, valid or not (the policy's
// `t == 'name=' + name` and `t.startsWith('uid=') && t.substring(4).matches(...) && int(...) == uid`).
func accounts(value string) (names []string, uids []int64) {
	for _, token := range strings.FieldsFunc(value, isSpace) {
		if v, ok := strings.CutPrefix(token, FieldName+"="); ok {
			names = append(names, v)
		}
		if v, ok := strings.CutPrefix(token, FieldUID+"="); ok && reID.MatchString(v) {
			n, _ := strconv.ParseInt(v, 10, 64)
			uids = append(uids, n)
		}
	}
	return names, uids
}

// Holders are the users, sorted, whose entries (valid or not) name the account name or the uid:
// someone without an entry may not take their account.
func (d Directory) Holders(name string, uid int64) []string {
	var users []string
	for _, user := range slices.Sorted(maps.Keys(d.names)) {
		if slices.Contains(d.names[user], name) || slices.Contains(d.uids[user], uid) {
			users = append(users, user)
		}
	}
	return users
}

// Lookup is the identity of user's valid entry.
func (d Directory) Lookup(user string) (Identity, bool) {
	id, ok := d.entries[user]
	return id, ok
}

// Problem says why user's entry is not valid; false when user has a valid entry or none.
func (d Directory) Problem(user string) (string, bool) {
	p, ok := d.problems[user]
	return p, ok
}

// Contact is how to reach user: false when the entry gives no valid contact field.
func (d Directory) Contact(user string) (Contact, bool) {
	c, ok := d.contacts[user]
	return c, ok
}

// Enforced tells whether the jobs of users without a valid entry are refused.
func (d Directory) Enforced() bool { return d.enforced }

// Len is the number of valid entries.
func (d Directory) Len() int { return len(d.entries) }
