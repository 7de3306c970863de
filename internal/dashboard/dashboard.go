// Package dashboard serves the queue as people and programs read it: a server-rendered HTML page
// that updates itself live (Server-Sent Events), and a small read-only JSON API. Everything comes
// from the queueview.Store that the decision loop publishes into, so serving adds no load on the
// API server.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

//go:embed templates/*.html static/*
var assets embed.FS

// DefaultAddress is where the dashboard listens unless told otherwise.
const DefaultAddress = ":5336"

// ContentSecurityPolicy is sent with every response: the page loads its script and style from
// itself only, runs no inline script and may not be framed.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// maxFilter bounds the length of the user filter, in characters.
const maxFilter = 100

// Handler serves the dashboard (see the package comment). Create it with New.
type Handler struct {
	store       *queueview.Store
	now         func() time.Time
	loc         *time.Location
	title       string
	minInterval time.Duration
	heartbeat   time.Duration
	maxStreams  int32

	streams atomic.Int32
	tmpl    *template.Template
	static  map[string]staticFile
	mux     *http.ServeMux

	// The waiting jobs' estimated starts, computed at estAt (see addEstimates).
	estMu sync.Mutex
	estAt time.Time
	est   map[string]queueview.Estimate

	// The JSON and event id of the latest snapshot, shared by all event streams.
	encMu   sync.Mutex
	encSnap *queueview.Snapshot
	encData []byte
	encID   string
	encSeq  uint64
}

// Option tunes a Handler.
type Option func(*Handler)

// WithClock sets the time source used for "waiting for 12m" (default time.Now).
func WithClock(now func() time.Time) Option { return func(h *Handler) { h.now = now } }

// WithLocation sets the time zone of the timestamps shown (default time.Local).
func WithLocation(loc *time.Location) Option { return func(h *Handler) { h.loc = loc } }

// WithTitle sets the page title (default "CVLab GPU queue").
func WithTitle(title string) Option { return func(h *Handler) { h.title = title } }

// WithEventInterval sets the least time between two events of one stream (default 250ms): a
// burst of decisions is sent as its latest snapshot.
func WithEventInterval(d time.Duration) Option { return func(h *Handler) { h.minInterval = d } }

// WithHeartbeat sets how often an idle event stream sends a comment, so that proxies keep it
// open (default 25s).
func WithHeartbeat(d time.Duration) Option { return func(h *Handler) { h.heartbeat = d } }

// WithMaxStreams bounds the event streams open at once (default 256); more are refused with 503.
func WithMaxStreams(n int) Option { return func(h *Handler) { h.maxStreams = int32(n) } }

// New returns the dashboard's handler, serving from store.
func New(store *queueview.Store, opts ...Option) *Handler {
	h := &Handler{
		store: store, now: time.Now, loc: time.Local, title: "CVLab GPU queue",
		minInterval: 250 * time.Millisecond, heartbeat: 25 * time.Second, maxStreams: 256,
	}
	for _, o := range opts {
		o(h)
	}
	h.tmpl = template.Must(template.New("").Funcs(template.FuncMap{"plural": plural}).ParseFS(assets, "templates/*.html"))
	h.static = loadStatic()

	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", h.servePage)
	mux.HandleFunc("/fragment", h.serveFragment)
	mux.HandleFunc("/static/{file}", h.serveStatic)
	mux.HandleFunc("/api/v1/queue", h.serveQueue)
	mux.HandleFunc("/api/v1/users", h.serveUsers)
	mux.HandleFunc("/api/v1/nodes", h.serveNodes)
	mux.HandleFunc("/api/v1/preemptions", h.servePreemptions)
	mux.HandleFunc("/api/v1/events", h.serveEvents)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: see /api/v1/queue, users, nodes, preemptions, events")
	})
	h.mux = mux
	return h
}

// ServeHTTP serves GET and HEAD requests; the dashboard is read-only.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "the dashboard is read-only: use GET or HEAD")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// latest returns the snapshot, or writes the 503 that says there is none yet.
func (h *Handler) latest(w http.ResponseWriter) *queueview.Snapshot {
	snap, _ := h.store.Latest()
	if snap == nil {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "no queue decision yet: the operator has not finished its first decision (or is not running the queue); retry in a few seconds")
	}
	return snap
}

// filterOf is the ?user= filter of a request.
func filterOf(r *http.Request) string {
	f := []rune(strings.TrimSpace(r.URL.Query().Get("user")))
	return string(f[:min(len(f), maxFilter)])
}

// matches tells whether user passes the filter: a case-insensitive substring ("" passes all).
func matches(filter, user string) bool {
	return filter == "" || strings.Contains(strings.ToLower(user), strings.ToLower(filter))
}

// --- HTML

func (h *Handler) servePage(w http.ResponseWriter, r *http.Request) {
	h.render(w, "page", r)
}

func (h *Handler) serveFragment(w http.ResponseWriter, r *http.Request) {
	h.render(w, "fragment", r)
}

func (h *Handler) render(w http.ResponseWriter, name string, r *http.Request) {
	snap, _ := h.store.Latest()
	data := h.build(snap, filterOf(r), h.now())
	var buf bytes.Buffer
	if err := h.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, "rendering the dashboard failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if snap == nil {
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write(buf.Bytes())
}

// --- static files

type staticFile struct {
	body        []byte
	contentType string
	etag        string
}

func loadStatic() map[string]staticFile {
	files := map[string]staticFile{}
	add := func(name, contentType string, body []byte) {
		sum := sha256.Sum256(body)
		files[name] = staticFile{body: body, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	css, err := fs.ReadFile(assets, "static/style.css")
	if err != nil {
		panic(err)
	}
	add("style.css", "text/css; charset=utf-8", append(css, widthClasses()...))
	js, err := fs.ReadFile(assets, "static/app.js")
	if err != nil {
		panic(err)
	}
	add("app.js", "text/javascript; charset=utf-8", js)
	return files
}

// widthClasses are the classes w-0 … w-100 that size the bars: the page sets widths with classes,
// as the Content-Security-Policy forbids inline styles.
func widthClasses() []byte {
	var b bytes.Buffer
	b.WriteString("\n/* bar widths, generated */\n")
	for i := 0; i <= 100; i++ {
		fmt.Fprintf(&b, ".w-%d{width:%d%%}\n", i, i)
	}
	return b.Bytes()
}

func (h *Handler) serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := h.static[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", f.contentType)
	w.Header().Set("ETag", f.etag)
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// --- JSON

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding the response failed")
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// ErrorResponse is the body of every JSON error.
type ErrorResponse struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	body, _ := json.Marshal(ErrorResponse{Error: msg})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// Cluster is the GPU accounting of the whole queue, shared by several responses.
type Cluster struct {
	Capacity  int32 `json:"capacity"`
	Used      int32 `json:"used"`
	Foreign   int32 `json:"foreign"`
	Free      int32 `json:"free"`
	NodeAware bool  `json:"nodeAware"`
}

// Summary counts the jobs a queue response lists.
type Summary struct {
	Jobs      int `json:"jobs"`
	GPUJobs   int `json:"gpuJobs"`
	Running   int `json:"running"`
	Admitted  int `json:"admitted"`
	Queued    int `json:"queued"`
	Suspended int `json:"suspended"`
	// GPUsInUse by Running and Admitted jobs; WaitingGPUs asked by Queued jobs.
	GPUsInUse   int32 `json:"gpusInUse"`
	WaitingGPUs int32 `json:"waitingGPUs"`
	// BeyondCapacity are the GPU jobs ranked past the capacity cut.
	BeyondCapacity int `json:"beyondCapacity"`
}

// QueueResponse is GET /api/v1/queue.
type QueueResponse struct {
	Time time.Time `json:"time"`
	Cluster
	// User is the ?user= filter applied, if any.
	User    string          `json:"user,omitempty"`
	Summary Summary         `json:"summary"`
	Jobs    []queueview.Job `json:"jobs"`
}

// UsersResponse is GET /api/v1/users.
type UsersResponse struct {
	Time     time.Time        `json:"time"`
	Capacity int32            `json:"capacity"`
	User     string           `json:"user,omitempty"`
	Users    []queueview.User `json:"users"`
}

// NodesResponse is GET /api/v1/nodes.
type NodesResponse struct {
	Time time.Time `json:"time"`
	Cluster
	Nodes []queueview.Node `json:"nodes"`
}

// PreemptionsResponse is GET /api/v1/preemptions.
type PreemptionsResponse struct {
	Time        time.Time              `json:"time"`
	User        string                 `json:"user,omitempty"`
	Preemptions []queueview.Preemption `json:"preemptions"`
}

func clusterOf(s *queueview.Snapshot) Cluster {
	return Cluster{Capacity: s.Capacity, Used: s.Used, Foreign: s.Foreign, Free: s.Free, NodeAware: s.NodeAware}
}

func filterJobs(jobs []queueview.Job, filter string) []queueview.Job {
	out := make([]queueview.Job, 0, len(jobs))
	for _, j := range jobs {
		if matches(filter, j.User) {
			out = append(out, j)
		}
	}
	return out
}

func summarize(jobs []queueview.Job) Summary {
	s := Summary{Jobs: len(jobs)}
	for _, j := range jobs {
		if j.GPUs > 0 {
			s.GPUJobs++
			if !j.InCapacity {
				s.BeyondCapacity++
			}
		}
		switch j.Phase {
		case "Running":
			s.Running++
			s.GPUsInUse += j.GPUs
		case "Admitted":
			s.Admitted++
			s.GPUsInUse += j.GPUs
		case "Queued":
			s.Queued++
			s.WaitingGPUs += j.GPUs
		case "Suspended":
			s.Suspended++
		}
	}
	return s
}

func (h *Handler) serveQueue(w http.ResponseWriter, r *http.Request) {
	snap := h.latest(w)
	if snap == nil {
		return
	}
	f := filterOf(r)
	jobs := filterJobs(snap.Jobs, f)
	h.addEstimates(snap, jobs)
	writeJSON(w, http.StatusOK, QueueResponse{Time: snap.Time, Cluster: clusterOf(snap), User: f, Summary: summarize(jobs), Jobs: jobs})
}

func (h *Handler) serveUsers(w http.ResponseWriter, r *http.Request) {
	snap := h.latest(w)
	if snap == nil {
		return
	}
	f := filterOf(r)
	users := make([]queueview.User, 0, len(snap.Users))
	for _, u := range snap.Users {
		if matches(f, u.User) {
			users = append(users, u)
		}
	}
	writeJSON(w, http.StatusOK, UsersResponse{Time: snap.Time, Capacity: snap.Capacity, User: f, Users: users})
}

func (h *Handler) serveNodes(w http.ResponseWriter, r *http.Request) {
	snap := h.latest(w)
	if snap == nil {
		return
	}
	writeJSON(w, http.StatusOK, NodesResponse{Time: snap.Time, Cluster: clusterOf(snap), Nodes: nonNil(snap.Nodes)})
}

func (h *Handler) servePreemptions(w http.ResponseWriter, r *http.Request) {
	snap := h.latest(w)
	if snap == nil {
		return
	}
	f := filterOf(r)
	ps := make([]queueview.Preemption, 0, len(snap.Preemptions))
	for _, p := range snap.Preemptions {
		if matches(f, p.PreemptorUser) || matches(f, p.VictimUser) {
			ps = append(ps, p)
		}
	}
	writeJSON(w, http.StatusOK, PreemptionsResponse{Time: snap.Time, User: f, Preemptions: ps})
}

// estimateMaxAge is how long estimated starts are served before they are computed again.
const estimateMaxAge = 5 * time.Second

// addEstimates sets the waiting jobs' estimated starts, computed on read (Snapshot.Estimate) at
// most every estimateMaxAge, whatever the decisions and the readers: an estimate is a simulation
// (0.15 s for 300 waiting jobs), which neither the decision loop nor each reader should pay. A job
// that started waiting since has none until the next computation. jobs are a copy of the
// snapshot's, which stays unchanged.
func (h *Handler) addEstimates(snap *queueview.Snapshot, jobs []queueview.Job) {
	if snap.Estimate == nil {
		return
	}
	h.estMu.Lock()
	if now := h.now(); h.est == nil || now.Sub(h.estAt) >= estimateMaxAge || now.Before(h.estAt) {
		h.estAt, h.est = now, snap.Estimate()
	}
	est := h.est
	h.estMu.Unlock()
	for i := range jobs {
		if e, ok := est[jobs[i].Namespace+"/"+jobs[i].Name]; ok && jobs[i].Phase == "Queued" {
			jobs[i].EstimatedStart = &e
		}
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// encoded returns the JSON of snap as events carry it (lists never null) and its event id, computed
// once per snapshot however many streams are open. The id is the decision time plus a sequence
// number, so that two snapshots never share one even with a clock that stands still.
func (h *Handler) encoded(snap *queueview.Snapshot) (data []byte, id string) {
	h.encMu.Lock()
	defer h.encMu.Unlock()
	if h.encSnap == snap {
		return h.encData, h.encID
	}
	c := *snap
	c.Jobs, c.Users, c.Nodes, c.Preemptions = nonNil(c.Jobs), nonNil(c.Users), nonNil(c.Nodes), nonNil(c.Preemptions)
	data, err := json.Marshal(&c)
	if err != nil { // cannot happen with these types
		data = []byte(`{}`)
	}
	h.encSeq++
	h.encSnap, h.encData, h.encID = snap, data, fmt.Sprintf("%d.%d", snap.Time.UnixNano(), h.encSeq)
	return h.encData, h.encID
}

// --- Server-Sent Events

// serveEvents streams the snapshot as an event named "snapshot" at once (or as soon as the first
// decision is published) and then each time the store changes.
func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	if h.streams.Add(1) > h.maxStreams {
		h.streams.Add(-1)
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, "too many open event streams")
		return
	}
	defer h.streams.Add(-1)

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	send := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second)) // not every writer supports it
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send([]byte("retry: 2000\n\n")) {
		return
	}
	ctx := r.Context()
	heartbeat := time.NewTicker(h.heartbeat)
	defer heartbeat.Stop()
	var last *queueview.Snapshot
	var lastSent time.Time
	for {
		snap, changed := h.store.Latest()
		if snap != nil && snap != last {
			if wait := h.minInterval - time.Since(lastSent); !lastSent.IsZero() && wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				continue // send the latest snapshot, which may have changed meanwhile
			}
			data, id := h.encoded(snap)
			var b bytes.Buffer
			b.WriteString("event: snapshot\nid: " + id + "\ndata: ")
			b.Write(data) // one line: json.Marshal writes no newline
			b.WriteString("\n\n")
			if !send(b.Bytes()) {
				return
			}
			last, lastSent = snap, time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-heartbeat.C:
			if !send([]byte(": keep-alive\n\n")) {
				return
			}
		}
	}
}
