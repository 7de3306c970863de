package notify

import (
	"bytes"
	htmltemplate "html/template"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// Message is what one user is told on one personal channel at once: their events grouped by
// kind, and the renderings every channel shares. Channels render their own markup from Groups.
type Message struct {
	User    string
	Contact Contact
	// Groups hold the events by kind, in the order of Kinds.
	Groups []Group
	// Subject is a one-line summary ("cvlab-queue: 3 of your jobs were preempted"), plain text.
	Subject string
	// Text is the plain-text rendering (the email's text part).
	Text string
	// Dashboard is the dashboard link for this user ("" without --dashboard-url).
	Dashboard string
}

// Group is a user's events of one kind.
type Group struct {
	Kind   Kind
	Events []Event
	// Jobs is the number of distinct jobs among Events.
	Jobs int
}

// Events lists every event of the message.
func (m Message) Events() []Event {
	var es []Event
	for _, g := range m.Groups {
		es = append(es, g.Events...)
	}
	return es
}

// groupEvents sorts events into groups by kind (in Kinds order), each by time then job.
func groupEvents(events []Event) []Group {
	var groups []Group
	for _, k := range Kinds {
		g := Group{Kind: k}
		jobs := map[JobRef]bool{}
		for _, e := range events {
			if e.Kind == k {
				g.Events = append(g.Events, e)
				jobs[JobRef{Namespace: e.Job.Namespace, Name: e.Job.Name}] = true
			}
		}
		if len(g.Events) == 0 {
			continue
		}
		sort.SliceStable(g.Events, func(i, j int) bool {
			a, b := g.Events[i], g.Events[j]
			if !a.At.Equal(b.At) {
				return a.At.Before(b.At)
			}
			return a.Job.Namespace+"/"+a.Job.Name < b.Job.Namespace+"/"+b.Job.Name
		})
		g.Jobs = len(jobs)
		groups = append(groups, g)
	}
	return groups
}

// sentences are the per-kind sentences, shared by every flavour: they hold no markup, so that the
// same source parses as text/template (plain, Slack, Mattermost) and html/template (email). User
// text goes through q (the flavour's escaper), commands through code, job references through job.
const sentences = `
{{- define "heading"}}{{if eq .Jobs 1}}Your job {{job (index .Events 0).Job}} {{verb .Kind 1}}{{else}}{{.Jobs}} of your jobs {{verb .Kind .Jobs}}{{end}}{{end}}

{{- define "summary"}}
{{- if eq .Kind "Preempted"}}{{job .Job}}{{with .Node}} on node {{q .}}{{end}}
  {{- if eq .Reason "IdleReclaimed"}} was stopped: its GPUs were idle{{template "idle-since" .}} and a waiting job took them.
  {{- else if eq .Reason "IdleSuspended"}} was suspended: its GPUs were idle{{template "idle-since" .}}.
  {{- else}} was preempted{{with .Preemptor}} for {{q .User}}'s job {{job .}}{{end}}.{{end}}
{{- else if eq .Kind "GPUIdle"}}The GPUs of {{job .Job}}{{with .Node}} on node {{q .}}{{end}} are idle{{with .IdlePercent}} (below {{.}}% use){{end}}{{template "idle-since" .}}.
{{- else if eq .Kind "Failed"}}
  {{- if eq .Reason "DeadlineExceeded"}}{{job .Job}} was stopped: it reached its timeout{{with .Timeout}} of {{dur .}}{{end}}.
  {{- else if eq .Reason "PodDeleted"}}{{job .Job}} failed: its pod was deleted{{with .Node}} on node {{q .}}{{end}}.
  {{- else if eq .Reason "InvalidSpec"}}{{job .Job}} cannot run: its spec is invalid.
  {{- else}}{{job .Job}} failed{{with exit .}} with exit code {{.}}{{end}}{{with .Node}} on node {{q .}}{{end}}.{{end}}
{{- else if eq .Kind "DeadlineSoon"}}{{job .Job}} stops at {{when .NextAt}}{{with .Timeout}}, when its timeout of {{dur .}} ends{{end}}.
{{- else if eq .Kind "Started"}}{{job .Job}} started{{with .Node}} on node {{q .}}{{end}}{{with .Waited}} after waiting {{dur .}}{{end}}.
{{- else if eq .Kind "Succeeded"}}{{job .Job}} succeeded.
{{- else}}{{job .Job}}: {{q .Kind}}.{{end}}
{{- end}}

{{- define "idle-since"}}{{if not .IdleSince.IsZero}} since {{when .IdleSince}}{{if .At.After .IdleSince}} ({{dur (.At.Sub .IdleSince)}}){{end}}{{end}}{{end}}

{{- define "next"}}
{{- if eq .Kind "Preempted"}}
  {{- if eq .Reason "IdleSuspended"}}It is back in the queue, held back{{with .NextAt | when}} until {{.}}{{end}}, then restarts by itself when its turn comes.
  {{- else}}It is back in the queue{{with .QueuePosition}} at position {{.}}{{end}} and restarts by itself when its turn comes.{{end}}
{{- else if eq .Kind "GPUIdle"}}
  {{- if eq .NextAction "Reclaim"}}Unless they get busy, they will be given to a waiting job{{with .NextAt | when}} at {{.}}{{end}}: your job is then stopped and put back in the queue. {{else if eq .NextAction "Suspend"}}Unless they get busy, your job will be stopped{{with .NextAt | when}} at {{.}}{{end}} and held back in the queue for a while. {{end}}Use the GPUs, or stop the job to free them: {{code (printf "kubectl delete cvlabjob -n %s %s" .Job.Namespace .Job.Name)}}
{{- else if eq .Kind "Failed"}}
  {{- if eq .Reason "InvalidSpec"}}Fix the spec and submit the job again.
  {{- else}}{{with .Pod}}Its last log lines: {{code (printf "kubectl logs -n %s %s --tail=50" $.Job.Namespace .)}}{{end}}{{end}}
{{- else if eq .Kind "DeadlineSoon"}}Save its work before then: the queue stops it at its timeout.
{{- else if eq .Kind "Started"}}Follow it: {{code (printf "kubectl cvlab logs -n %s %s -f" .Job.Namespace .Job.Name)}}
{{- end}}
{{- end}}`

// textLayout is the plain-text message (email text part); mention and markup free.
const textLayout = `{{define "message"}}Hello {{q .User}},
{{range .Groups}}
{{template "heading" .}}:
{{range .Events}}
- {{template "summary" .}}
{{- with .Detail}}
  Why: {{q .}}{{end}}
{{- if hasNext .}}
  {{template "next" .}}{{end}}
  Details: {{code (why .Job)}}
{{end}}{{end}}{{with .Dashboard}}
Dashboard: {{.}}
{{end}}
-- 
cvlab-queue. Choose which notifications a job sends with spec.notify.
{{end}}`

// slackLayout is a Slack (mrkdwn) message; mention is "<@MEMBERID> " or empty (the lab webhook).
const slackLayout = `{{define "message"}}{{.Mention}}{{range $i, $g := .Groups}}{{if $i}}
{{end}}*{{template "heading" $g}}*
{{range $g.Events}}• {{template "summary" .}}{{with .Detail}}
    Why: {{q .}}{{end}}{{if hasNext .}}
    {{template "next" .}}{{end}}
    Details: {{code (why .Job)}}
{{end}}{{end}}{{with .Dashboard}}<{{.}}|Dashboard>{{end}}{{end}}

{{- define "lab-event"}}{{q .Job.User}}: {{template "summary" .}}{{with .Detail}} — why: {{q .}}{{end}}{{if hasNext .}} — {{template "next" .}}{{end}} — details: {{code (why .Job)}}{{end}}`

// mattermostLayout is a Mattermost (Markdown) message; mention is "@name " or empty.
const mattermostLayout = `{{define "message"}}{{.Mention}}{{range $i, $g := .Groups}}{{if $i}}
{{end}}**{{template "heading" $g}}**
{{range $g.Events}}- {{template "summary" .}}{{with .Detail}}
  Why: {{q .}}{{end}}{{if hasNext .}}
  {{template "next" .}}{{end}}
  Details: {{code (why .Job)}}
{{end}}{{end}}{{with .Dashboard}}[Dashboard]({{.}}){{end}}{{end}}`

// htmlLayout is the email's HTML part; html/template escapes every value by context.
const htmlLayout = `{{define "message"}}<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Subject}}</title></head>
<body style="font-family: sans-serif; line-height: 1.4">
<p>Hello {{.User}},</p>
{{range .Groups}}<h3>{{template "heading" .}}</h3>
<ul>
{{range .Events}}<li><p>{{template "summary" .}}</p>
{{- with .Detail}}<p>Why: {{.}}</p>{{end}}
{{- if hasNext .}}<p>{{template "next" .}}</p>{{end}}
<p>Details: {{code (why .Job)}}</p></li>
{{end}}</ul>
{{end}}{{with .Dashboard}}<p><a href="{{.}}">Open the dashboard</a></p>
{{end}}<p style="color: #666">cvlab-queue. Choose which notifications a job sends with <code>spec.notify</code>.</p>
</body></html>
{{end}}`

// flavour is how one channel marks up text: q escapes user-controlled text, code shows a command.
type flavour struct {
	q    func(string) string
	code func(string) string
}

var (
	plainFlavour      = flavour{q: func(s string) string { return s }, code: func(s string) string { return s }}
	slackFlavour      = flavour{q: slackEscape, code: func(s string) string { return "`" + slackEscape(noBackticks(s)) + "`" }}
	mattermostFlavour = flavour{q: markdownEscape, code: func(s string) string { return "`" + noBackticks(s) + "`" }}
)

// renderer renders messages in one time zone.
type renderer struct {
	loc *time.Location
	// plain, slack, mattermost are text/template sets; html the email's HTML part.
	plain, slack, mattermost *template.Template
	html                     *htmltemplate.Template
}

func newRenderer(loc *time.Location) *renderer {
	if loc == nil {
		loc = time.Local
	}
	r := &renderer{loc: loc}
	r.plain = template.Must(template.New("").Funcs(r.textFuncs(plainFlavour)).Parse(sentences + textLayout))
	r.slack = template.Must(template.New("").Funcs(r.textFuncs(slackFlavour)).Parse(sentences + slackLayout))
	r.mattermost = template.Must(template.New("").Funcs(r.textFuncs(mattermostFlavour)).Parse(sentences + mattermostLayout))
	r.html = htmltemplate.Must(htmltemplate.New("").Funcs(r.htmlFuncs()).Parse(sentences + htmlLayout))
	return r
}

// commonFuncs are the functions whose results need no escaping of their own.
func (r *renderer) commonFuncs() map[string]any {
	return map[string]any{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.In(r.loc).Format("Mon 2 Jan 15:04 MST")
		},
		"dur": func(d time.Duration) string {
			if d >= time.Minute {
				d = d.Round(time.Minute)
			}
			return observe.ShortDuration(d)
		},
		"verb":    verb,
		"hasNext": hasNext,
		"exit": func(e Event) string {
			if e.ExitCode == nil {
				return ""
			}
			return strconv.Itoa(int(*e.ExitCode))
		},
		"why": func(j JobRef) string { return "kubectl cvlab why -n " + j.Namespace + " " + j.Name },
	}
}

func (r *renderer) textFuncs(f flavour) template.FuncMap {
	m := r.commonFuncs()
	m["q"] = func(v any) string { return f.q(toString(v)) }
	m["code"] = f.code
	m["job"] = func(v any) string { return f.q(jobName(v)) }
	return m
}

func (r *renderer) htmlFuncs() htmltemplate.FuncMap {
	m := r.commonFuncs()
	m["q"] = toString // html/template escapes the result
	m["code"] = func(s string) htmltemplate.HTML {
		return htmltemplate.HTML("<code>" + htmltemplate.HTMLEscapeString(s) + "</code>")
	}
	m["job"] = jobName
	return m
}

// view is what the layouts render.
type view struct {
	Message
	// Mention starts a chat message: "<@U024BE7LH> ", "@name ", or "" (the lab-wide webhook).
	Mention string
}

func (r *renderer) text(t *template.Template, v view) (string, error) {
	var b bytes.Buffer
	err := t.ExecuteTemplate(&b, "message", v)
	return b.String(), err
}

func (r *renderer) htmlPart(m Message) (string, error) {
	var b bytes.Buffer
	err := r.html.ExecuteTemplate(&b, "message", view{Message: m})
	return b.String(), err
}

// hasNext tells whether the "next" sentence says anything for e, so layouts skip empty lines.
func hasNext(e Event) bool {
	switch e.Kind {
	case KindPreempted, KindGPUIdle, KindDeadlineSoon, KindStarted:
		return true
	case KindFailed:
		return e.Reason == "InvalidSpec" || e.Pod != ""
	}
	return false
}

// verb is the heading's predicate for n jobs of a kind.
func verb(k Kind, n int) string {
	one := n == 1
	switch k {
	case KindPreempted:
		return pick(one, "was preempted", "were preempted")
	case KindGPUIdle:
		return pick(one, "is idle on its GPUs", "are idle on their GPUs")
	case KindFailed:
		return "failed"
	case KindDeadlineSoon:
		return pick(one, "reaches its timeout soon", "reach their timeout soon")
	case KindStarted:
		return "started"
	case KindSucceeded:
		return "succeeded"
	}
	return pick(one, "has news", "have news")
}

func pick(one bool, a, b string) string {
	if one {
		return a
	}
	return b
}

// subject is the plain one-line summary of a message.
func (r *renderer) subject(groups []Group) string {
	if len(groups) == 1 {
		var b bytes.Buffer
		if err := r.plain.ExecuteTemplate(&b, "heading", groups[0]); err == nil {
			return oneLine("cvlab-queue: " + strings.Replace(b.String(), "Your job", "your job", 1))
		}
	}
	n := 0
	for _, g := range groups {
		n += len(g.Events)
	}
	return "cvlab-queue: " + strconv.Itoa(n) + " notifications about your jobs"
}

// oneLine replaces control characters (a header must stay one line).
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// dashboardFor links the dashboard filtered to user (the dashboard has no per-job anchors; its
// ?user= filter shows the user's jobs).
func dashboardFor(base, user string) string {
	if base == "" {
		return ""
	}
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	q := u.Query()
	q.Set("user", user)
	u.RawQuery = q.Encode()
	return u.String()
}

func jobName(v any) string {
	switch j := v.(type) {
	case JobRef:
		return j.Namespace + "/" + j.Name
	case *JobRef:
		if j != nil {
			return j.Namespace + "/" + j.Name
		}
	}
	return ""
}

func toString(v any) string {
	switch s := v.(type) {
	case string:
		return s
	case Kind:
		return string(s)
	}
	return ""
}

// slackEscape escapes the three characters Slack gives meaning to in message text, so that user
// text cannot mention (<@U…>, <!channel>) or link (<http://…|x>).
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// wordJoiner is an invisible character that breaks @mentions and autolinks without changing
// what people read.
const wordJoiner = "\u2060"

// markdownEscape backslash-escapes Markdown's special characters and breaks @mentions and
// autolinks (@channel, http://) with a word joiner, so that user text is shown as written.
func markdownEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune("\\`*_{}[]()#+-.!|<>~&", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
		if r == '@' || r == ':' {
			b.WriteString(wordJoiner)
		}
	}
	return b.String()
}

// noBackticks keeps a command inside its code span.
func noBackticks(s string) string { return strings.ReplaceAll(s, "`", "'") }
