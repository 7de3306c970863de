package notify

import "time"

// Kind is what a notification is about.
type Kind string

const (
	// KindPreempted: the job's pod was stopped for another job, or its idle GPUs taken back.
	KindPreempted Kind = "Preempted"
	// KindGPUIdle: the job's GPUs have been idle for --idle-after.
	KindGPUIdle Kind = "GPUIdle"
	// KindFailed: the job ended without success.
	KindFailed Kind = "Failed"
	// KindDeadlineSoon: a share of spec.timeout is left.
	KindDeadlineSoon Kind = "DeadlineSoon"
	// KindStarted: the job started after a long wait (on request).
	KindStarted Kind = "Started"
	// KindSucceeded: the job succeeded (on request).
	KindSucceeded Kind = "Succeeded"
)

// Kinds lists every kind, in the order messages present them.
var Kinds = []Kind{KindPreempted, KindGPUIdle, KindFailed, KindDeadlineSoon, KindStarted, KindSucceeded}

// JobRef names a job and its owner.
type JobRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	User      string `json:"user"`
	// UserGPUs are the owner's GPU ordinals the job covered, such as "3" or "2-3".
	UserGPUs string `json:"userGPUs,omitempty"`
}

// Event is one thing to tell one job's owner. Everything in it is typed data read from the job's
// status or pod; Detail is a sentence the operator rendered (shown, never parsed). It carries no
// environment values, commands or secrets, so nothing rendered from it can leak them.
type Event struct {
	// Key identifies the transition: "<job uid>.<kind>.<n>". The same transition always gives the
	// same key, which is how deliveries are deduplicated across restarts; it is a valid ConfigMap
	// data key.
	Key  string
	Kind Kind
	Job  JobRef
	// At is when the transition happened. Events from before Since (or older than the retention)
	// are history and never sent, so it must be set.
	At time.Time
	// Reason is a typed reason word. Preempted: Preempted | IdleReclaimed | IdleSuspended;
	// Failed: Failed | DeadlineExceeded | PodDeleted | InvalidSpec; GPUIdle: Idle | Reclaimable.
	Reason string
	// Detail is the operator's own sentence (status or condition message); may be empty.
	Detail string
	// Preemptor is the job that took the GPUs (Preempted by a job).
	Preemptor *JobRef
	Node      string
	// QueuePosition is the job's place in the queue now (Preempted; 0 unknown).
	QueuePosition int32
	// ExitCode is the container's exit code (Failed).
	ExitCode *int32
	// Pod is the job's pod, whose logs tell more (Failed, Started, DeadlineSoon).
	Pod string
	// IdleSince is when the GPUs went idle (GPUIdle and idle reclaims).
	IdleSince time.Time
	// IdlePercent is the utilisation threshold in % below which a GPU counts as idle (GPUIdle).
	IdlePercent int32
	// NextAction is what happens next to an idle job (GPUIdle): "Reclaim" | "Suspend" | "Warn".
	NextAction string
	// NextAt is when NextAction happens (GPUIdle), when the timeout ends (DeadlineSoon), or until
	// when a job suspended for idling is held back (Preempted, IdleSuspended).
	NextAt time.Time
	// Waited is how long the job waited before it started (Started).
	Waited time.Duration
	// Timeout is the job's spec.timeout (DeadlineSoon).
	Timeout time.Duration
}

// Contact is how to reach a user, from the lab directory ConfigMap (email=, slack=, mattermost=).
type Contact struct {
	Email string
	// Slack is a member ID such as U024BE7LH, mentioned as <@U024BE7LH>.
	Slack string
	// Mattermost is a username, mentioned as @name.
	Mattermost string
}

// Contacts looks up a user's contact; ok is false when the user has no entry or no contact fields.
type Contacts func(user string) (Contact, bool)
