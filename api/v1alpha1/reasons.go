package v1alpha1

// Condition reasons of a CvlabJob. Each condition's reason is one of these (the Ready condition's
// reason is the phase).
const (
	// ReasonWaiting: the job waits in the queue (Queued, Admitted and Running conditions).
	ReasonWaiting = "Waiting"
	// ReasonSuspended: the job is held by spec.suspend.
	ReasonSuspended = "Suspended"
	// ReasonPodCreated: the job's pod was created (Admitted condition).
	ReasonPodCreated = "PodCreated"
	// ReasonPodRunning: the job's pod runs (Running condition).
	ReasonPodRunning = "PodRunning"
	// ReasonPodPending: the job's pod was created but has not started (Running condition).
	ReasonPodPending = "PodPending"
	// ReasonSucceeded: the job's pod exited with success (Finished condition).
	ReasonSucceeded = "Succeeded"
	// ReasonFailed: the job's pod failed (Finished, Stalled conditions).
	ReasonFailed = "Failed"
	// ReasonDeadlineExceeded: the job's pod was stopped after spec.timeout (Finished condition).
	ReasonDeadlineExceeded = "DeadlineExceeded"
	// ReasonPodDeleted: the job's pod was deleted by someone other than the queue before the job
	// finished (Finished condition).
	ReasonPodDeleted = "PodDeleted"
	// ReasonAdmitted: the job was given its GPUs (Queued condition turned False).
	ReasonAdmitted = "Admitted"
	// ReasonFinished: the job ended (Queued condition turned False).
	ReasonFinished = "Finished"
	// ReasonPreempted: the job's pod was evicted for a higher-ranked job (Preempted condition).
	ReasonPreempted = "Preempted"
	// ReasonReadmitted: a preempted or disrupted job was admitted again.
	ReasonReadmitted = "Readmitted"
	// ReasonPodEnded voids a preemption whose victim ended on its own before it was stopped.
	ReasonPodEnded = "PodEnded"
	// ReasonInvalidSpec fails a job whose stored spec the queue cannot run (stored before the
	// CRD validated it).
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonNodeLost: the job's pod was lost to its node (Disrupted condition).
	ReasonNodeLost = "NodeLost"
	// ReasonIdle: the job's GPUs have been idle for --idle-after; a warning (GPUIdle condition).
	ReasonIdle = "Idle"
	// ReasonReclaimable: the job's GPUs have been idle for --idle-after plus --idle-grace: they
	// count as free for the queue (GPUIdle condition; Preempted condition when it is evicted).
	ReasonReclaimable = "Reclaimable"
	// ReasonActive: the job's GPUs work again (GPUIdle condition turned False).
	ReasonActive = "Active"
)

// Event reasons of the events the operator emits on CvlabJobs (`kubectl get events`,
// `kubectl describe cvlabjob`).
const (
	// EventQueued: the job is waiting in the queue (again).
	EventQueued = "Queued"
	// EventAdmitted: the job was given its GPUs and a pod.
	EventAdmitted = "Admitted"
	// EventStarted: the job's pod started running.
	EventStarted = "Started"
	// EventSuspended: the job was suspended by its owner.
	EventSuspended = "Suspended"
	// EventFinished: the job ended (Normal when it succeeded, Warning when it failed).
	EventFinished = "Finished"
	// EventPreempted: the job's pod was evicted for a higher-ranked job (on the victim).
	EventPreempted = "Preempted"
	// EventPreempting: the job evicts a lower-ranked job to start (on the preemptor).
	EventPreempting = "Preempting"
	// EventUnschedulable: the job's pod could not be scheduled for --unschedulable-timeout and the
	// job went back to the queue.
	EventUnschedulable = "Unschedulable"
	// EventDisrupted: the job's pod was lost to its node and the job went back to the queue.
	EventDisrupted = "Disrupted"
	// EventGPUIdle: the job's GPUs have been idle for --idle-after (a Warning, to its owner).
	EventGPUIdle = "GPUIdle"
	// EventGPUReclaimed: the job's idle GPUs were given back: it was evicted for a waiting job, or
	// suspended (--idle-action=Suspend).
	EventGPUReclaimed = "GPUReclaimed"
	// EventNotNotified: the job's owner has no contact in the lab directory, so is not told about
	// it personally (once per user and manager start).
	EventNotNotified = "NotNotified"
)

// WaitingReason says, as a value, why a queued job waits; status.message says it in a sentence.
// +kubebuilder:validation:Enum=NoGPUsFree;NoNodeFits;NeverFits;HeadOfLine;Reserved;BackingOff;QuotaExceeded;Suspended
type WaitingReason string

const (
	// WaitingNoGPUsFree: fewer GPUs are free than the job needs.
	WaitingNoGPUsFree WaitingReason = "NoGPUsFree"
	// WaitingNoNodeFits: enough GPUs are free in all, but no single node has as many free.
	WaitingNoNodeFits WaitingReason = "NoNodeFits"
	// WaitingNeverFits: the job needs more GPUs than any node has (or than the queue may hand
	// out): it is never admitted as it is.
	WaitingNeverFits WaitingReason = "NeverFits"
	// WaitingHeadOfLine: the first job in line has waited --max-head-wait and now holds back every
	// job ranked below it, this one included.
	WaitingHeadOfLine WaitingReason = "HeadOfLine"
	// WaitingReserved: GPUs on status.reservedNode are promised to the job: it preempted
	// lower-ranked jobs, or waits for GPUs being freed there.
	WaitingReserved WaitingReason = "Reserved"
	// WaitingBackingOff: the job's last start failed (pod refused or unschedulable); it is tried
	// again at status.backoffUntil.
	WaitingBackingOff WaitingReason = "BackingOff"
	// WaitingQuotaExceeded: the queue's GPU capacity bound (--gpu-capacity) is reached although a
	// node may have free GPUs.
	WaitingQuotaExceeded WaitingReason = "QuotaExceeded"
	// WaitingSuspended: the job is held by spec.suspend.
	WaitingSuspended WaitingReason = "Suspended"
)
