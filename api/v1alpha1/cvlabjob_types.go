package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CvlabJobSpec is what a researcher asks for: one container, some GPUs, the lab's data.
// Like a Job's pod template it cannot be changed after creation, except priority, suspend and
// notify.
// +kubebuilder:validation:XValidation:rule="has(self.command) == has(oldSelf.command) && has(self.args) == has(oldSelf.args) && has(self.workingDir) == has(oldSelf.workingDir) && has(self.env) == has(oldSelf.env) && has(self.gpus) == has(oldSelf.gpus) && has(self.resources) == has(oldSelf.resources) && has(self.cvlabdata) == has(oldSelf.cvlabdata) && has(self.clusterUser) == has(oldSelf.clusterUser) && has(self.ports) == has(oldSelf.ports) && has(self.timeout) == has(oldSelf.timeout) && has(self.terminationGracePeriodSeconds) == has(oldSelf.terminationGracePeriodSeconds) && has(self.podLabels) == has(oldSelf.podLabels) && has(self.podAnnotations) == has(oldSelf.podAnnotations)",message="spec is immutable after creation except priority, suspend and notify: delete the job and create a new one"
type CvlabJobSpec struct {
	// user is the researcher who owns the job; fair share counts GPUs per user.
	// It must be a valid Kubernetes label value (it becomes the pod's `user` label).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="user is immutable"
	User string `json:"user"`

	// priority orders the jobs of one user: higher first (the seed's `priority` label).
	// It only reorders the user's own jobs; it never moves a job ahead of other users' lower
	// GPU ordinals. It may be changed at any time.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=-1000
	// +kubebuilder:validation:Maximum=1000
	Priority int32 `json:"priority"`

	// image is the container image to run.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="image is immutable"
	Image string `json:"image"`

	// command is the container's entrypoint; the image's ENTRYPOINT when empty.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="command is immutable"
	Command []string `json:"command,omitempty"`

	// args are the arguments to the entrypoint; the image's CMD when empty.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="args is immutable"
	Args []string `json:"args,omitempty"`

	// workingDir is the container's working directory; the image's when empty.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="workingDir is immutable"
	WorkingDir string `json:"workingDir,omitempty"`

	// env are environment variables for the container.
	// NVIDIA_VISIBLE_DEVICES is not allowed: the NVIDIA container runtime would hand the container
	// the GPUs it names, around the queue. Ask for GPUs with gpus; a CPU job's pod gets
	// NVIDIA_VISIBLE_DEVICES=void, which hides the GPUs a CUDA image's "all" would show.
	// (Only that exact name is read by the runtime: environment names are case-sensitive.
	// CUDA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES are allowed: they choose among, or
	// configure, the GPUs the container already has and give access to none.)
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:XValidation:rule="!self.exists(e, e.name == 'NVIDIA_VISIBLE_DEVICES')",message="env may not set NVIDIA_VISIBLE_DEVICES: the NVIDIA container runtime would give the container the GPUs it names, around the queue; ask for GPUs with spec.gpus (the device plugin then sets it to the GPUs the queue gave; a CPU job's pod gets NVIDIA_VISIBLE_DEVICES=void)"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="env is immutable"
	Env []corev1.EnvVar `json:"env,omitempty"`

	// gpus is the number of GPUs (`nvidia.com/gpu`) the job needs; 0 for a CPU-only job, which
	// never waits. A job with N GPUs covers N consecutive GPU ordinals of its user.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=64
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="gpus is immutable"
	GPUs int32 `json:"gpus"`

	// resources are the container's cpu, memory and ephemeral-storage requests and limits.
	// GPUs are asked for with spec.gpus, not here.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="resources is immutable"
	Resources JobResources `json:"resources,omitempty,omitzero"`

	// cvlabdata mounts the lab's shared storage (PersistentVolumeClaims such as
	// `pv-cvlabdata1`) into the container. Each mountPath may appear once.
	// +optional
	// +listType=map
	// +listMapKey=mountPath
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="cvlabdata is immutable"
	Cvlabdata []CvlabdataMount `json:"cvlabdata,omitempty"`

	// clusterUser is the lab account the container runs file operations as. It becomes the
	// environment variables CLUSTER_USER, CLUSTER_USER_ID, CLUSTER_GROUP_NAME and
	// CLUSTER_GROUP_ID, which the lab images read to set up file permissions on cvlabdata.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="clusterUser is immutable"
	ClusterUser *ClusterUser `json:"clusterUser,omitempty"`

	// ports the container listens on (for example Jupyter's 8888), for port-forwarding.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(p, p.containerPort >= 1 && p.containerPort <= 65535)",message="containerPort must be between 1 and 65535"
	// +kubebuilder:validation:XValidation:rule="self.all(p, !has(p.hostPort) || (p.hostPort >= 1 && p.hostPort <= 65535))",message="hostPort must be between 1 and 65535"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="ports is immutable"
	Ports []corev1.ContainerPort `json:"ports,omitempty"`

	// timeout bounds the job's run time once its pod starts (a Go duration such as "12h" or
	// "90m"); it becomes the pod's activeDeadlineSeconds. No limit when empty.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="timeout must be at least 1s"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="timeout is immutable"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// terminationGracePeriodSeconds is how long the job's container gets between SIGTERM and
	// SIGKILL when its pod is stopped (preempted, suspended or deleted), so that training can
	// checkpoint. Default 60.
	// +optional
	// +kubebuilder:default=60
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="terminationGracePeriodSeconds is immutable"
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`

	// suspend holds the job: a suspended job is never admitted, and suspending a running job
	// stops its pod and puts the job back in the queue. Set it back to false to resume.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// notify lists the moments its owner is told about personally, by email and chat (the lab
	// directory's email=, slack= and mattermost= fields): Preempted (its pod was stopped for
	// another job or its idle GPUs taken back), GPUIdle (its GPUs sat idle for the operator's
	// --idle-after), Failed, DeadlineSoon (a share of spec.timeout is left), Started (after a
	// wait longer than the operator's --notify-started-after) and Succeeded; or [None]. Empty:
	// the lab's defaults (the operator's --notify). It may be changed at any time, unlike the
	// rest of the spec: it decides who is told, never what the queue does.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=7
	// +kubebuilder:validation:XValidation:rule="!self.exists(k, k == 'None') || size(self) == 1",message="notify: None means no message and cannot be combined with other kinds"
	Notify []NotifyKind `json:"notify,omitempty"`

	// podLabels are added to the pod's labels. The labels `user`, `priority` and
	// `cvlab.epfl.ch/job` are set by the operator and cannot be given here.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="!('user' in self) && !('priority' in self) && !('cvlab.epfl.ch/job' in self)",message="podLabels cannot set user, priority or cvlab.epfl.ch/job: the operator sets them"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="podLabels is immutable"
	PodLabels map[string]string `json:"podLabels,omitempty"`

	// podAnnotations are added to the pod's annotations.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="podAnnotations is immutable"
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`
}

// NotifyKind is a moment a job's owner can be told about personally.
// +kubebuilder:validation:Enum=Preempted;GPUIdle;Failed;DeadlineSoon;Started;Succeeded;None
type NotifyKind string

// The kinds of personal notifications (spec.notify).
const (
	NotifyPreempted    NotifyKind = "Preempted"
	NotifyGPUIdle      NotifyKind = "GPUIdle"
	NotifyFailed       NotifyKind = "Failed"
	NotifyDeadlineSoon NotifyKind = "DeadlineSoon"
	NotifyStarted      NotifyKind = "Started"
	NotifySucceeded    NotifyKind = "Succeeded"
	// NotifyNone, alone, turns personal notifications off for the job.
	NotifyNone NotifyKind = "None"
)

// JobResources are the container's compute resources other than GPUs.
// +kubebuilder:validation:XValidation:rule="!has(self.requests) || self.requests.all(k, k in ['cpu', 'memory', 'ephemeral-storage'])",message="requests may name cpu, memory and ephemeral-storage only; ask for GPUs with spec.gpus"
// +kubebuilder:validation:XValidation:rule="!has(self.limits) || self.limits.all(k, k in ['cpu', 'memory', 'ephemeral-storage'])",message="limits may name cpu, memory and ephemeral-storage only; ask for GPUs with spec.gpus"
type JobResources struct {
	// requests are the amounts the scheduler reserves for the container.
	// +optional
	// +kubebuilder:validation:MaxProperties=3
	Requests corev1.ResourceList `json:"requests,omitempty"`

	// limits are the most the container may use.
	// +optional
	// +kubebuilder:validation:MaxProperties=3
	Limits corev1.ResourceList `json:"limits,omitempty"`
}

// CvlabdataMount mounts one PersistentVolumeClaim of the lab's shared storage.
type CvlabdataMount struct {
	// claimName is the PersistentVolumeClaim in the job's namespace, such as `pv-cvlabdata1`.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	ClaimName string `json:"claimName"`

	// mountPath is where the volume appears in the container, such as `/cvlabdata1`.
	// +required
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/`
	MountPath string `json:"mountPath"`

	// readOnly mounts the volume read-only.
	// +optional
	ReadOnly bool `json:"readOnly,omitempty"`
}

// ClusterUser is the lab account whose identity the container takes on for file permissions.
type ClusterUser struct {
	// name is the account name (CLUSTER_USER).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	Name string `json:"name"`

	// uid is the numeric user id (CLUSTER_USER_ID).
	// +required
	// +kubebuilder:validation:Minimum=0
	UID int64 `json:"uid"`

	// groupName is the group name (CLUSTER_GROUP_NAME).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	GroupName string `json:"groupName"`

	// gid is the numeric group id (CLUSTER_GROUP_ID).
	// +required
	// +kubebuilder:validation:Minimum=0
	GID int64 `json:"gid"`
}

// JobPhase is a summary of where the job stands.
// +kubebuilder:validation:Enum=Queued;Suspended;Admitted;Running;Succeeded;Failed
type JobPhase string

const (
	// PhaseQueued jobs wait for their fair-share turn.
	PhaseQueued JobPhase = "Queued"
	// PhaseSuspended jobs are held by their owner (spec.suspend) and never admitted.
	PhaseSuspended JobPhase = "Suspended"
	// PhaseAdmitted jobs have a pod that has not started yet.
	PhaseAdmitted JobPhase = "Admitted"
	// PhaseRunning jobs have a running pod.
	PhaseRunning JobPhase = "Running"
	// PhaseSucceeded jobs' pods exited with success.
	PhaseSucceeded JobPhase = "Succeeded"
	// PhaseFailed jobs' pods failed, hit the timeout, or vanished.
	PhaseFailed JobPhase = "Failed"
)

// Condition types of a CvlabJob.
const (
	// ConditionQueued is True while the job waits for its turn.
	ConditionQueued = "Queued"
	// ConditionAdmitted is True once the job was given its GPUs and a pod.
	ConditionAdmitted = "Admitted"
	// ConditionRunning is True while the job's pod runs.
	ConditionRunning = "Running"
	// ConditionPreempted is True when the job's pod was evicted for a higher-ranked job and the
	// job went back to the queue; its message names the preemptor and why.
	ConditionPreempted = "Preempted"
	// ConditionReady summarises health for GitOps tools (kstatus): True while the job runs and
	// once it succeeded; False while it waits, is suspended or starting, and when it failed.
	ConditionReady = "Ready"
	// ConditionFinished is True once the job ended; its reason says how
	// (Succeeded, Failed, DeadlineExceeded, PodDeleted, InvalidSpec).
	ConditionFinished = "Finished"
	// ConditionStalled is True once the job failed, with the Finished condition's reason and
	// message; absent otherwise. kstatus (Flux health checks) computes a Stalled=True object as
	// Failed.
	ConditionStalled = "Stalled"
	// ConditionGPUIdle is True while a running job's GPUs have been idle (below
	// --idle-threshold) for --idle-after: reason Idle while it is only a warning, Reclaimable once
	// its GPUs count as free for the queue (any waiting job that fits may evict it); False (reason
	// Active) once its GPUs work again.
	ConditionGPUIdle = "GPUIdle"
	// ConditionDisrupted is True while a job waits again because its pod was lost to its node
	// (node deleted or NotReady, kubelet eviction, drain): not its owner's doing.
	ConditionDisrupted = "Disrupted"
)

// GPUUtilization is what a running job's GPUs did over one measuring window.
type GPUUtilization struct {
	// percent is the average utilisation of the job's GPUs over the window, 0-100
	// (DCGM_FI_PROF_GR_ENGINE_ACTIVE, or DCGM_FI_DEV_GPU_UTIL where profiling metrics are off).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Percent int32 `json:"percent"`

	// memoryUsedMiB is the GPU memory in use (DCGM_FI_DEV_FB_USED), summed over the job's GPUs.
	// +optional
	MemoryUsedMiB int64 `json:"memoryUsedMiB,omitempty"`

	// window is what the average is over, such as "5m".
	// +kubebuilder:validation:Type=string
	Window metav1.Duration `json:"window"`

	// measuredAt is when it was measured.
	MeasuredAt metav1.Time `json:"measuredAt"`
}

// EvictionReason says why the queue stopped a job's pod.
// +kubebuilder:validation:Enum=Preempted;IdleReclaimed;IdleSuspended;Unschedulable
type EvictionReason string

const (
	// EvictionPreempted: a higher-ranked waiting job took the job's GPUs.
	EvictionPreempted EvictionReason = "Preempted"
	// EvictionIdleReclaimed: the job's GPUs sat idle past --idle-after and --idle-grace, and a
	// waiting job took them.
	EvictionIdleReclaimed EvictionReason = "IdleReclaimed"
	// EvictionIdleSuspended: the job's GPUs sat idle past --idle-after and --idle-grace, and
	// --idle-action=Suspend stopped it.
	EvictionIdleSuspended EvictionReason = "IdleSuspended"
	// EvictionUnschedulable: its pod stayed unschedulable for --unschedulable-timeout.
	EvictionUnschedulable EvictionReason = "Unschedulable"
)

// Eviction is one stop of a job's pod by the queue.
type Eviction struct {
	// reason says why the pod was stopped.
	// +required
	Reason EvictionReason `json:"reason"`

	// preemptor is the job given the GPUs, "namespace/name"; empty when none was.
	// +optional
	Preemptor string `json:"preemptor,omitempty"`

	// preemptorUser is the preemptor's owner.
	// +optional
	PreemptorUser string `json:"preemptorUser,omitempty"`

	// node is where the stopped pod ran.
	// +optional
	Node string `json:"node,omitempty"`

	// admission is the number of the admission whose pod was stopped (status.admissions then).
	// +optional
	Admission int32 `json:"admission,omitempty"`

	// time is when the queue stopped it.
	// +required
	Time metav1.Time `json:"time"`
}

// CvlabJobStatus is the queue's view of the job. Only the operator writes it.
type CvlabJobStatus struct {
	// phase summarises the job: Queued, Suspended, Admitted, Running, Succeeded or Failed.
	// +optional
	Phase JobPhase `json:"phase,omitempty"`

	// queuePosition is the job's place among the waiting jobs: 1 is the next to be admitted.
	// Absent when the job is not waiting.
	// +optional
	QueuePosition *int32 `json:"queuePosition,omitempty"`

	// rank is the job's place in the global fair-share order of all active GPU jobs, running
	// ones included (1 is first). Absent for CPU-only, suspended and finished jobs.
	// +optional
	Rank *int32 `json:"rank,omitempty"`

	// userGPUs are the owner's GPU ordinals the job covers, such as "1" or "2-3": a job on a
	// user's 1st GPU ranks above any job on anyone's 2nd GPU.
	// +optional
	UserGPUs string `json:"userGPUs,omitempty"`

	// podName is the name of the job's current pod.
	// +optional
	PodName string `json:"podName,omitempty"`

	// admissions counts how many times the job was admitted (it is admitted again after a
	// suspend and resume). The pod of the n-th admission is named <job>-<n>.
	// +optional
	Admissions int32 `json:"admissions,omitempty"`

	// preemptions counts how many times the job was evicted for a higher-ranked job.
	// +optional
	Preemptions int32 `json:"preemptions,omitempty"`

	// disruptions counts how many times the job's pod was lost to its node (node deleted or
	// NotReady, kubelet eviction, drain) and the job went back to the queue. Not counted in
	// preemptions, and not held against the job.
	// +optional
	Disruptions int32 `json:"disruptions,omitempty"`

	// node is the node of the job's current pod (Admitted and Running jobs), as placed by the
	// queue or as the scheduler bound it.
	// +optional
	Node string `json:"node,omitempty"`

	// waitingReason says why a Queued or Suspended job waits: NoGPUsFree, NoNodeFits, NeverFits,
	// HeadOfLine, Reserved, BackingOff, QuotaExceeded or Suspended. Absent when the job does not
	// wait, or waits only for the next decision.
	// +optional
	WaitingReason WaitingReason `json:"waitingReason,omitempty"`

	// backoffUntil is when a job whose start failed is tried again (waitingReason BackingOff).
	// +optional
	BackoffUntil *metav1.Time `json:"backoffUntil,omitempty"`

	// reservedNode is the node whose GPUs are promised to this waiting job: it preempted
	// lower-ranked jobs there, or waits for GPUs being freed there (waitingReason Reserved).
	// +optional
	ReservedNode string `json:"reservedNode,omitempty"`

	// gpuUtilization is what the job's GPUs did over the last measuring window, while it runs
	// (from NVIDIA's dcgm-exporter, directly or through Prometheus). Absent when unknown: no data
	// is never taken for idleness.
	// +optional
	GPUUtilization *GPUUtilization `json:"gpuUtilization,omitempty"`

	// idleSince is since when the running job's GPUs have been below the operator's
	// --idle-threshold, as measured; absent while they are busy or unmeasured. A job idle for
	// --idle-after gets the GPUIdle condition and its owner is told; after a further --idle-grace
	// its GPUs count as free for the queue (see the GPUIdle condition for what happens).
	// +optional
	IdleSince *metav1.Time `json:"idleSince,omitempty"`

	// lastEviction is the last time the queue stopped the job's pod before it ended: why, for
	// whom, and when. It is kept after the job is admitted again.
	// +optional
	LastEviction *Eviction `json:"lastEviction,omitempty"`

	// admittedAt is when the job was last admitted.
	// +optional
	AdmittedAt *metav1.Time `json:"admittedAt,omitempty"`

	// startTime is when the job's pod started running.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the job finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// message says in a sentence where the job stands, such as
	// "waiting: 3 GPUs free, needs 4; 2 jobs ahead".
	// +optional
	Message string `json:"message,omitempty"`

	// conditions are Ready (for GitOps health checks), Queued, Admitted, Running, Preempted,
	// Disrupted, Finished and Stalled (True once the job failed, for kstatus). Their reasons:
	// Ready's is the phase; Queued, Admitted and Running use Waiting, Suspended, Admitted,
	// PodCreated, PodPending, PodRunning and Finished; Preempted uses Preempted, Readmitted and
	// PodEnded; Disrupted uses NodeLost and Readmitted; Finished and Stalled say how the job ended:
	// Succeeded, Failed, DeadlineExceeded, PodDeleted or InvalidSpec.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the spec generation this status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cvj,categories=cvlab
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.spec.user`
// +kubebuilder:printcolumn:name="GPUs",type=integer,JSONPath=`.spec.gpus`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Position",type=integer,JSONPath=`.status.queuePosition`
// +kubebuilder:printcolumn:name="GPU#",type=string,JSONPath=`.status.userGPUs`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Util",type=integer,JSONPath=`.status.gpuUtilization.percent`,priority=1
// +kubebuilder:printcolumn:name="Rank",type=integer,JSONPath=`.status.rank`,priority=1
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.status.podName`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1

// CvlabJob is one research job in the lab's fair-share GPU queue. The operator creates its pod
// when the job's turn comes: a job on a user's 1st GPU goes before any job on anyone's 2nd GPU.
type CvlabJob struct {
	metav1.TypeMeta `json:",inline"`

	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the job the researcher asks for.
	// +required
	Spec CvlabJobSpec `json:"spec"`

	// status is the queue's view of the job.
	// +optional
	Status CvlabJobStatus `json:"status,omitempty,omitzero"`
}

// +kubebuilder:object:root=true

// CvlabJobList is a list of CvlabJobs.
type CvlabJobList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CvlabJob `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CvlabJob{}, &CvlabJobList{})
}
