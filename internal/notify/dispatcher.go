// Package notify tells job owners, personally, about the moments that matter to them: their job
// was preempted, sits idle on its GPUs, failed, is about to reach its timeout, started after a long
// wait or succeeded. Email, Slack and Mattermost reach the owner; a generic JSON webhook receives
// every event of the lab.
//
// The controller computes which Events are due from the jobs' typed status and Offers them to the
// Dispatcher, as often as it likes: Offer never blocks, and an event whose key was already sent
// (or is being sent) is ignored. The Dispatcher groups a user's events over a short window into
// one message per channel, limits how many messages a user gets per hour (what is held back goes
// out later as one digest), and delivers each message on each channel in its own goroutine with
// retries, so that a dead mail server delays nothing else.
//
// Delivery is at least once: keys are recorded in the Store after their deliveries end, so a
// crash between a delivery and its record sends that message again after the restart; nothing
// due is lost, because what is due is recomputed from status and re-offered.
package notify

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
)

// Defaults of Config.
const (
	DefaultGroupWindow = time.Minute
	DefaultUserLimit   = 6
	DefaultUserPeriod  = time.Hour
	DefaultAttempts    = 5
	DefaultBackoff     = 10 * time.Second
	DefaultBuffer      = 1024
)

// Config configures a Dispatcher; zero values take the defaults.
type Config struct {
	// SMTP enables email (nil: no email).
	SMTP *SMTPConfig
	// SlackWebhookURL and MattermostWebhookURL are incoming webhooks of the lab's chat channel;
	// the owner is mentioned there. MattermostUsername optionally overrides the poster's name.
	SlackWebhookURL      string
	MattermostWebhookURL string
	MattermostUsername   string
	// WebhookURL receives every event of every user as JSON (--notify-webhook), one POST each.
	WebhookURL string
	// DashboardURL is linked from messages (the page filtered to the user).
	DashboardURL string
	// Location is the time zone of times in messages (default the operator's local zone).
	Location *time.Location

	// GroupWindow is how long a user's first event waits for more before the message goes out.
	GroupWindow time.Duration
	// UserLimit messages per UserPeriod at most reach one user (on each of their channels; a
	// token bucket: a burst of UserLimit, then one every UserPeriod/UserLimit). Events that
	// arrive meanwhile accumulate and go out as one digest when the budget allows.
	UserLimit  int
	UserPeriod time.Duration
	// Attempts per message and channel (default 5); Backoff before the 2nd, doubled each time.
	Attempts int
	Backoff  time.Duration
	// Buffer is how many offered events may wait to be taken in; beyond, Offer drops them.
	Buffer int
	// Retention: events older than this are ignored, since the Store prunes their keys after it.
	Retention time.Duration

	Store    Store
	Contacts Contacts
	// NoContact is called for each event whose owner has no contact for any configured personal
	// channel (the caller emits a Kubernetes Event, once per user); it must not block.
	NoContact  func(Event)
	Clock      clock.WithTicker
	Log        logr.Logger
	HTTPClient *http.Client
}

// Enabled tells whether any channel is configured.
func (c Config) Enabled() bool {
	return c.SMTP != nil || c.SlackWebhookURL != "" || c.MattermostWebhookURL != "" || c.WebhookURL != ""
}

// Dispatcher delivers offered events. It is a manager Runnable that runs on the leader only.
type Dispatcher struct {
	cfg      Config
	clock    clock.WithTicker
	log      logr.Logger
	personal []personal
	lab      Channel // the generic webhook, or nil
	r        *renderer

	mu    sync.Mutex
	inbox []Event
	known map[string]time.Time // key → when sent; zero while pending
	since time.Time
	wake  chan struct{}

	// owned by the Start goroutine
	users       map[string]*userState
	outstanding map[string]int // key → deliveries not ended
	results     chan result
	toRecord    []string
	recordWake  chan struct{}
	recordMu    sync.Mutex
}

// userState is one user's pending events and rate budget.
type userState struct {
	events  []Event
	flushAt time.Time // when the group window closes
	tokens  float64
	refill  time.Time // when tokens were last topped up
}

// result is the end of one delivery.
type result struct {
	channel string
	events  []Event
	err     error
}

// New builds a Dispatcher from cfg.
func New(cfg Config) (*Dispatcher, error) {
	if !cfg.Enabled() {
		return nil, errors.New("no notification channel configured")
	}
	if cfg.Store == nil {
		return nil, errors.New("notifications need a Store")
	}
	if cfg.GroupWindow <= 0 {
		cfg.GroupWindow = DefaultGroupWindow
	}
	if cfg.UserLimit <= 0 {
		cfg.UserLimit = DefaultUserLimit
	}
	if cfg.UserPeriod <= 0 {
		cfg.UserPeriod = DefaultUserPeriod
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = DefaultAttempts
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Contacts == nil {
		cfg.Contacts = func(string) (Contact, bool) { return Contact{}, false }
	}
	d := &Dispatcher{cfg: cfg, clock: cfg.Clock, log: cfg.Log, r: newRenderer(cfg.Location),
		known: map[string]time.Time{}, wake: make(chan struct{}, 1),
		users: map[string]*userState{}, outstanding: map[string]int{},
		results: make(chan result), recordWake: make(chan struct{}, 1)}
	if cfg.SMTP != nil {
		c, err := newEmailChannel(*cfg.SMTP, d.r)
		if err != nil {
			return nil, err
		}
		d.personal = append(d.personal, c)
	}
	if cfg.SlackWebhookURL != "" {
		d.personal = append(d.personal, &slackChannel{url: cfg.SlackWebhookURL, client: cfg.HTTPClient, r: d.r})
	}
	if cfg.MattermostWebhookURL != "" {
		d.personal = append(d.personal, &mattermostChannel{url: cfg.MattermostWebhookURL, username: cfg.MattermostUsername,
			client: cfg.HTTPClient, r: d.r})
	}
	if cfg.WebhookURL != "" {
		d.lab = &webhookChannel{url: cfg.WebhookURL, client: cfg.HTTPClient, r: d.r}
	}
	return d, nil
}

// NeedLeaderElection makes only the leader send: one message per transition, not one per replica.
func (d *Dispatcher) NeedLeaderElection() bool { return true }

// Since is when notifications were first enabled (zero until Start has loaded the Store):
// transitions before it are history, not news.
func (d *Dispatcher) Since() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.since
}

// Offer hands events over for delivery and returns at once. Events whose key was sent or is being
// sent are ignored; when the buffer is full the event is dropped (logged, counted), and the next
// Offer of it is taken again.
func (d *Dispatcher) Offer(events ...Event) {
	d.mu.Lock()
	var dropped []Event
	for _, e := range events {
		if _, seen := d.known[e.Key]; seen || e.Key == "" {
			continue
		}
		if len(d.inbox) >= d.cfg.Buffer {
			dropped = append(dropped, e)
			continue
		}
		d.known[e.Key] = time.Time{}
		d.inbox = append(d.inbox, e)
	}
	d.mu.Unlock()
	for _, e := range dropped {
		d.log.Info("notification buffer full, dropping", "key", e.Key, "job", e.Job.Namespace+"/"+e.Job.Name)
		for _, ch := range d.channels() {
			count(ch, e.Kind, resultDropped, 1)
		}
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// channels names the configured channels.
func (d *Dispatcher) channels() []string {
	var names []string
	for _, c := range d.personal {
		names = append(names, c.Name())
	}
	if d.lab != nil {
		names = append(names, d.lab.Name())
	}
	return names
}

// Start loads the sent log, then delivers until ctx ends. Events offered before the log is loaded
// wait for it, so nothing already sent goes out again.
func (d *Dispatcher) Start(ctx context.Context) error {
	log, err := d.load(ctx)
	if err != nil {
		return nil // ctx ended
	}
	d.mu.Lock()
	d.since = log.Since
	for k, t := range log.Sent {
		d.known[k] = t
	}
	// Offered before the load: drop what the log says was sent.
	inbox := d.inbox[:0]
	for _, e := range d.inbox {
		if _, sent := log.Sent[e.Key]; !sent {
			inbox = append(inbox, e)
		}
	}
	d.inbox = inbox
	d.mu.Unlock()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.recorder(ctx)
	}()

	timer := d.clock.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := d.clock.Now()
		d.take(ctx, &wg, now)
		next := d.flush(ctx, &wg, now)
		timer.Stop()
		var fire <-chan time.Time
		if !next.IsZero() {
			timer.Reset(next.Sub(d.clock.Now()))
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
		case <-fire:
		case res := <-d.results:
			d.ended(res)
		}
	}
}

// load reads the Store, retrying with backoff until it answers or ctx ends.
func (d *Dispatcher) load(ctx context.Context) (SentLog, error) {
	wait := d.cfg.Backoff
	for {
		log, err := d.cfg.Store.Load(ctx)
		if err == nil {
			if log.Sent == nil {
				log.Sent = map[string]time.Time{}
			}
			return log, nil
		}
		d.log.Error(err, "cannot load the notification log; notifications wait for it", "retryIn", wait)
		select {
		case <-ctx.Done():
			return SentLog{}, ctx.Err()
		case <-d.clock.After(wait):
		}
		wait = min(2*wait, 5*time.Minute)
	}
}

// take moves offered events to the lab webhook and to their owners' pending groups.
func (d *Dispatcher) take(ctx context.Context, wg *sync.WaitGroup, now time.Time) {
	d.mu.Lock()
	inbox := d.inbox
	d.inbox = nil
	since := d.since
	labDone := map[string]bool{}
	for _, e := range inbox {
		if _, ok := d.known[labKey(e.Key)]; ok {
			labDone[e.Key] = true
		}
	}
	d.mu.Unlock()
	for _, e := range inbox {
		if !slices.Contains(Kinds, e.Kind) {
			d.log.Error(nil, "notification of an unknown kind, not sent", "key", e.Key, "kind", e.Kind)
			continue
		}
		if e.At.Before(since) || e.At.Before(now.Add(-d.cfg.Retention)) {
			// History: before notifications existed, or past the Store's memory. Remembered here
			// (so re-offers are ignored cheaply) but not recorded: it is ignored by age anyway.
			d.log.V(1).Info("notification too old, not sent", "key", e.Key, "at", e.At)
			d.mu.Lock()
			d.known[e.Key] = now
			d.mu.Unlock()
			continue
		}
		if d.lab != nil && !labDone[e.Key] {
			d.outstanding[e.Key]++
			d.deliver(ctx, wg, d.lab, Message{User: e.Job.User, Groups: groupEvents([]Event{e}),
				Dashboard: dashboardFor(d.cfg.DashboardURL, e.Job.User)})
		}
		if len(d.personal) > 0 {
			d.outstanding[e.Key]++
			u := d.users[e.Job.User]
			if u == nil {
				u = &userState{tokens: float64(d.cfg.UserLimit), refill: now}
				d.users[e.Job.User] = u
			}
			if len(u.events) == 0 {
				u.flushAt = now.Add(d.cfg.GroupWindow)
			}
			u.events = append(u.events, e)
		}
	}
}

// flush sends the messages whose window closed and whose owner has budget; it returns when it
// must run next (zero: nothing waits).
func (d *Dispatcher) flush(ctx context.Context, wg *sync.WaitGroup, now time.Time) time.Time {
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	rate := float64(d.cfg.UserLimit) / float64(d.cfg.UserPeriod)
	for user, u := range d.users {
		u.tokens = math.Min(float64(d.cfg.UserLimit), u.tokens+float64(now.Sub(u.refill))*rate)
		u.refill = now
		if len(u.events) == 0 {
			if u.tokens >= float64(d.cfg.UserLimit) {
				delete(d.users, user) // a full budget is what a new user gets
			}
			continue
		}
		if now.Before(u.flushAt) {
			later(u.flushAt)
			continue
		}
		if u.tokens < 1 {
			later(now.Add(time.Duration(math.Ceil((1 - u.tokens) / rate))))
			continue
		}
		events := u.events
		u.events = nil
		if d.send(ctx, wg, user, events) {
			u.tokens--
		}
	}
	return next
}

// send delivers one message to user on each personal channel their contact reaches; false when
// none does.
func (d *Dispatcher) send(ctx context.Context, wg *sync.WaitGroup, user string, events []Event) bool {
	contact, _ := d.cfg.Contacts(user)
	groups := groupEvents(events)
	m := Message{User: user, Contact: contact, Groups: groups, Subject: d.r.subject(groups),
		Dashboard: dashboardFor(d.cfg.DashboardURL, user)}
	text, err := d.r.text(d.r.plain, view{Message: m})
	if err != nil {
		d.log.Error(err, "cannot render a notification", "user", user)
	}
	m.Text = text
	var reached []personal
	for _, c := range d.personal {
		if c.reaches(contact) {
			reached = append(reached, c)
		}
	}
	if len(reached) == 0 {
		for _, e := range events {
			for _, c := range d.personal {
				count(c.Name(), e.Kind, resultNoContact, 1)
			}
			if d.cfg.NoContact != nil {
				d.cfg.NoContact(e)
			}
		}
		d.ended(result{events: events})
		return false
	}
	for _, e := range events {
		d.outstanding[e.Key] += len(reached) - 1 // one was counted when the event was taken
	}
	for _, c := range reached {
		d.deliver(ctx, wg, c, m)
	}
	return true
}

// deliver tries m on c in its own goroutine, with backoff between attempts, and reports the end.
func (d *Dispatcher) deliver(ctx context.Context, wg *sync.WaitGroup, c Channel, m Message) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		wait := d.cfg.Backoff
		var err error
		for attempt := 1; attempt <= d.cfg.Attempts; attempt++ {
			if attempt > 1 {
				select {
				case <-ctx.Done():
					return
				case <-d.clock.After(wait):
				}
				wait *= 2
			}
			if err = c.Send(ctx, m); err == nil {
				break
			}
			if ctx.Err() != nil {
				return // shutting down: not recorded, so sent again after the restart
			}
			d.log.V(1).Info("notification attempt failed", "channel", c.Name(), "user", m.User, "attempt", attempt, "error", err.Error())
		}
		select {
		case d.results <- result{channel: c.Name(), events: m.Events(), err: err}:
		case <-ctx.Done():
		}
	}()
}

// ended accounts for the end of one delivery; events whose deliveries all ended are recorded.
func (d *Dispatcher) ended(res result) {
	if res.channel != "" {
		r := resultSent
		if res.err != nil {
			r = resultFailed
			d.log.Error(res.err, "notification not delivered", "channel", res.channel, "user", res.events[0].Job.User,
				"events", len(res.events), "attempts", d.cfg.Attempts)
		}
		for _, e := range res.events {
			count(res.channel, e.Kind, r, 1)
		}
	}
	var done []string
	for _, e := range res.events {
		if d.outstanding[e.Key]--; d.outstanding[e.Key] <= 0 {
			delete(d.outstanding, e.Key)
			done = append(done, e.Key)
		} else if res.channel == d.labName() {
			// The owner's message waits for its window: remember that the webhook has it, so a
			// restart meanwhile does not post it twice.
			done = append(done, labKey(e.Key))
		}
	}
	d.markSent(done)
}

// labKey records that the lab webhook got event key while its owner's message was pending. Event
// keys have three dot-separated parts, so this four-part key cannot collide with one.
func labKey(key string) string { return key + ".webhook" }

func (d *Dispatcher) labName() string {
	if d.lab == nil {
		return ""
	}
	return d.lab.Name()
}

// markSent remembers keys as sent and has the recorder write them.
func (d *Dispatcher) markSent(keys []string) {
	if len(keys) == 0 {
		return
	}
	now := d.clock.Now()
	d.mu.Lock()
	for _, k := range keys {
		d.known[k] = now
	}
	// Forget what the Store forgets: such events are ignored by age anyway.
	for k, t := range d.known {
		if !t.IsZero() && t.Before(now.Add(-d.cfg.Retention)) {
			delete(d.known, k)
		}
	}
	d.mu.Unlock()
	d.recordMu.Lock()
	d.toRecord = append(d.toRecord, keys...)
	d.recordMu.Unlock()
	select {
	case d.recordWake <- struct{}{}:
	default:
	}
}

// recorder writes sent keys to the Store in batches, off the delivery loop, retrying failures.
// When ctx ends it makes one last write, so that a graceful restart (a rolling update) re-sends
// nothing.
func (d *Dispatcher) recorder(ctx context.Context) {
	wait := d.cfg.Backoff
	for {
		select {
		case <-ctx.Done():
			d.recordMu.Lock()
			keys := d.toRecord
			d.recordMu.Unlock()
			if len(keys) > 0 {
				final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				if err := d.cfg.Store.Record(final, keys, d.clock.Now()); err != nil {
					d.log.Error(err, "sent notifications not recorded: they may be sent again after the restart", "keys", len(keys))
				}
			}
			return
		case <-d.recordWake:
		}
		d.recordMu.Lock()
		keys := d.toRecord
		d.toRecord = nil
		d.recordMu.Unlock()
		if len(keys) == 0 {
			continue
		}
		if err := d.cfg.Store.Record(ctx, keys, d.clock.Now()); err != nil {
			d.log.Error(err, "cannot record sent notifications; retrying", "keys", len(keys), "retryIn", wait)
			d.recordMu.Lock()
			d.toRecord = append(keys, d.toRecord...)
			d.recordMu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-d.clock.After(wait):
			}
			wait = min(2*wait, 5*time.Minute)
			select {
			case d.recordWake <- struct{}{}:
			default:
			}
			continue
		}
		wait = d.cfg.Backoff
	}
}

// String describes the configured channels, for the startup log.
func (d *Dispatcher) String() string {
	return fmt.Sprintf("notifications via %v", d.channels())
}
