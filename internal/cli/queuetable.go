package cli

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	cvlabv1alpha1 "github.com/epfl-cvlab/cvlab-queue/api/v1alpha1"
	"github.com/epfl-cvlab/cvlab-queue/internal/cluster"
	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
	"github.com/epfl-cvlab/cvlab-queue/internal/queueview"
)

// QueueRow is one active job of the queue table.
type QueueRow struct {
	// Rank is the place in the fair-share order (0 for CPU-only jobs); Position the place among
	// waiting jobs (0 when not waiting).
	Rank      int    `json:"rank,omitempty"`
	Position  int    `json:"position,omitempty"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	User      string `json:"user"`
	GPUs      int32  `json:"gpus"`
	// UserGPUs are the user's GPU ordinals the job covers ("2-3").
	UserGPUs string `json:"userGPUs,omitempty"`
	Priority int32  `json:"priority"`
	// Phase is the job's status.phase; "Starting" when the engine admits it now and the operator
	// has not recorded it yet.
	Phase   string    `json:"phase"`
	Created time.Time `json:"created"`
	Node    string    `json:"node,omitempty"`
	Message string    `json:"message,omitempty"`
	// InCapacity is true when the job ranks inside the capacity: its GPUs and those of the jobs
	// ranked above it fit in the GPUs the queue can hold.
	InCapacity bool `json:"inCapacity"`
	// Utilization is a running job's status.gpuUtilization (absent when unknown); IdleSince its
	// status.idleSince; Idle the GPUIdle condition's reason while True (Idle or Reclaimable).
	Utilization *cvlabv1alpha1.GPUUtilization `json:"utilization,omitempty"`
	IdleSince   *time.Time                    `json:"idleSince,omitempty"`
	Idle        string                        `json:"idle,omitempty"`
}

// QueueReport is the queue table and its summary.
type QueueReport struct {
	Capacity      int32 `json:"capacity"`
	CapacityKnown bool  `json:"capacityKnown"`
	// NodeGPUs are the GPUs of Ready GPU nodes; Budget the GPUs the queue's jobs can hold (the cut).
	NodeGPUs int32 `json:"nodeGPUs"`
	Budget   int32 `json:"budget"`
	// Used are GPUs held by anyone, Foreign those of them held by other pods.
	Used    int32 `json:"used"`
	Foreign int32 `json:"foreign"`
	// Waiting and WaitingGPUs count the jobs still waiting after the engine's decision.
	Waiting     int        `json:"waiting"`
	WaitingGPUs int32      `json:"waitingGPUs"`
	Jobs        []QueueRow `json:"jobs"`
	Notes       []string   `json:"notes,omitempty"`
	// cut is the index in Jobs before which the capacity cut line falls; -1 if none.
	cut       int
	qualified bool
}

// QueueFilter picks the rows shown: the summary is always the whole queue's.
type QueueFilter struct {
	// Namespace shows only that namespace's jobs unless AllNamespaces.
	Namespace     string
	AllNamespaces bool
	// User shows only that user's jobs, when set.
	User string
}

// Queue builds the queue report from the view.
func Queue(v *View, f QueueFilter) *QueueReport {
	r := &QueueReport{Capacity: v.Capacity, CapacityKnown: v.CapacityKnown, NodeGPUs: v.NodeGPUs, Budget: v.Budget,
		Used: v.Held + v.Foreign + v.Terminating, Foreign: v.Foreign, Notes: v.Notes, cut: -1, qualified: f.AllNamespaces}
	shown := func(j *cvlabv1alpha1.CvlabJob) bool {
		return (f.AllNamespaces || j.Namespace == f.Namespace) && (f.User == "" || j.Spec.User == f.User)
	}
	row := func(j *cvlabv1alpha1.CvlabJob) QueueRow {
		q := QueueRow{Namespace: j.Namespace, Name: j.Name, User: j.Spec.User, GPUs: j.Spec.GPUs, Priority: j.Spec.Priority,
			Phase: string(j.Status.Phase), Created: j.CreationTimestamp.Time, Message: j.Status.Message}
		if runsOnGPUs(j) {
			q.Utilization = j.Status.GPUUtilization
			if t := j.Status.IdleSince; t != nil {
				q.IdleSince = &t.Time
			}
			q.Idle = queueview.IdleReason(j.Status.Conditions)
		}
		if q.Phase == "" {
			q.Phase = string(cvlabv1alpha1.PhaseQueued)
		}
		if j.Status.Phase == cvlabv1alpha1.PhaseRunning || j.Status.Phase == cvlabv1alpha1.PhaseAdmitted {
			if p := v.Pods[Key(j)]; p != nil {
				q.Node = cluster.PodNode(p)
			} else if o := v.Observation; o != nil && o.ByKey[Key(j)] != nil {
				q.Node = o.ByKey[Key(j)].Node // its pod unseen (pods not readable): status.node
			}
		}
		return q
	}
	var cumulative int32
	beyond := false
	for _, e := range v.Decision.Order {
		cumulative += e.GPUs
		in := !v.CapacityKnown || cumulative <= v.Budget
		if !in {
			beyond = true
		}
		if e.Position > 0 {
			r.Waiting++
			r.WaitingGPUs += e.GPUs
		}
		j := v.Jobs[e.Key]
		if !shown(j) {
			continue
		}
		q := row(j)
		q.Rank, q.Position, q.UserGPUs, q.InCapacity = e.Rank, e.Position, e.UserGPUs(), in
		if e.Admit {
			q.Phase = "Starting"
			q.Node = e.Node
		}
		if !in && r.cut < 0 {
			r.cut = len(r.Jobs)
		}
		r.Jobs = append(r.Jobs, q)
	}
	if beyond && r.cut < 0 && len(r.Jobs) > 0 {
		r.cut = len(r.Jobs) // every shown job fits: the cut is below them
	}
	// Active CPU-only jobs after the GPU order.
	keys := make([]string, 0)
	for k, j := range v.Jobs {
		if j.Spec.GPUs == 0 && !j.Spec.Suspend && j.Status.Phase != cvlabv1alpha1.PhaseSucceeded &&
			j.Status.Phase != cvlabv1alpha1.PhaseFailed && shown(j) {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		return cmp.Or(v.Jobs[a].CreationTimestamp.Compare(v.Jobs[b].CreationTimestamp.Time), strings.Compare(a, b))
	})
	for _, k := range keys {
		q := row(v.Jobs[k])
		q.InCapacity = true
		r.Jobs = append(r.Jobs, q)
	}
	return r
}

// Summary is the report's one-line summary:
// "capacity 32 GPUs, 30 used (2 by other pods), 5 jobs waiting for 9 GPUs".
func (r *QueueReport) Summary(s observe.Settings) string {
	var b strings.Builder
	switch {
	case !r.CapacityKnown:
		fmt.Fprintf(&b, "capacity unknown (assumed %s)", gpus(r.Capacity))
	case s.GPUCapacity >= 0 && r.NodeGPUs > r.Capacity:
		fmt.Fprintf(&b, "capacity %s (the queue's share of %d on GPU nodes)", gpus(r.Capacity), r.NodeGPUs)
	default:
		fmt.Fprintf(&b, "capacity %s", gpus(r.Capacity))
	}
	fmt.Fprintf(&b, ", %d used", r.Used)
	if r.Foreign > 0 {
		fmt.Fprintf(&b, " (%d by other pods)", r.Foreign)
	}
	if r.Waiting == 0 {
		b.WriteString(", no job waiting")
	} else {
		fmt.Fprintf(&b, ", %s waiting for %s", plural(r.Waiting, "job", "jobs"), gpus(r.WaitingGPUs))
	}
	return b.String()
}

// Write prints the report as a table ("" or "wide") or JSON.
func (r *QueueReport) Write(w io.Writer, output string, s observe.Settings, now time.Time) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	wide := output == "wide"
	t := &table{}
	header := []string{"RANK", "POS", "USER", "JOB", "GPUS", "GPU#", "PRIO", "PHASE", "AGE", "UTIL", "IDLE"}
	if wide {
		header = append(header, "NODE", "MESSAGE")
	}
	t.add(header...)
	dash := func(n int) string {
		if n == 0 {
			return "-"
		}
		return strconv.Itoa(n)
	}
	for i, q := range r.Jobs {
		if i == r.cut {
			t.separator(cutLine(r.Budget))
		}
		name := q.Name
		if r.qualified {
			name = q.Namespace + "/" + q.Name
		}
		pos := ""
		if q.Position > 0 {
			pos = strconv.Itoa(q.Position)
		}
		userGPUs := q.UserGPUs
		if userGPUs == "" {
			userGPUs = "-"
		}
		cells := []string{dash(q.Rank), pos, q.User, name, strconv.Itoa(int(q.GPUs)), userGPUs,
			strconv.Itoa(int(q.Priority)), q.Phase, age(q.Created, now), q.utilText(), q.idleText(now)}
		if wide {
			node := q.Node
			if node == "" {
				node = "-"
			}
			cells = append(cells, node, q.Message)
		}
		t.add(cells...)
	}
	if r.cut == len(r.Jobs) && len(r.Jobs) > 0 { // every job shown fits
		t.separator(cutLine(r.Budget))
	}
	if len(r.Jobs) == 0 {
		t.rows = nil
	}
	if err := t.write(w); err != nil {
		return err
	}
	if len(r.Jobs) == 0 {
		fmt.Fprintln(w, "No jobs in the queue.")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, r.Summary(s))
	for _, n := range r.Notes {
		fmt.Fprintln(w, "note: "+n)
	}
	return nil
}

func cutLine(budget int32) string {
	return fmt.Sprintf("-------- capacity cut: %s; the jobs above fit, those below wait (or may be preempted) --------", gpus(max(budget, 0)))
}

// TopRow is one user's use of the queue.
type TopRow struct {
	User        string `json:"user"`
	RunningGPUs int32  `json:"runningGPUs"`
	RunningJobs int    `json:"runningJobs"`
	WaitingGPUs int32  `json:"waitingGPUs"`
	WaitingJobs int    `json:"waitingJobs"`
	// Utilization is the GPU-weighted average utilisation of the user's running jobs whose
	// utilisation is known (absent when none is), over MeasuredGPUs; IdleGPUs the GPUs of their
	// idle running jobs.
	Utilization  *int32 `json:"utilization,omitempty"`
	MeasuredGPUs int32  `json:"measuredGPUs,omitempty"`
	IdleGPUs     int32  `json:"idleGPUs"`
}

// Top sums up who uses how many GPUs: per user, the GPUs and jobs held (admitted or running) and
// those waiting, most GPUs in use first.
func Top(v *View) []TopRow {
	rows, _ := top(v)
	return rows
}

// top is Top and each user's utilisation sum.
func top(v *View) ([]TopRow, map[string]*utilSum) {
	users, sums := map[string]*TopRow{}, map[string]*utilSum{}
	for _, e := range v.Decision.Order {
		u := users[e.User]
		if u == nil {
			u = &TopRow{User: e.User}
			users[e.User], sums[e.User] = u, &utilSum{}
		}
		if e.State == queue.Holding {
			u.RunningGPUs += e.GPUs
			u.RunningJobs++
			if j := v.Jobs[e.Key]; j != nil {
				sums[e.User].add(j)
			}
		} else {
			u.WaitingGPUs += e.GPUs
			u.WaitingJobs++
		}
	}
	rows := make([]TopRow, 0, len(users))
	for _, u := range users {
		sum := sums[u.User]
		u.Utilization, u.MeasuredGPUs, u.IdleGPUs = sum.average(), sum.measured, sum.idle
		rows = append(rows, *u)
	}
	slices.SortFunc(rows, func(a, b TopRow) int {
		if a.RunningGPUs != b.RunningGPUs {
			return int(b.RunningGPUs - a.RunningGPUs)
		}
		if a.WaitingGPUs != b.WaitingGPUs {
			return int(b.WaitingGPUs - a.WaitingGPUs)
		}
		return strings.Compare(a.User, b.User)
	})
	return rows, sums
}

// WriteTop prints the per-user table, pods outside the queue, and the totals.
func WriteTop(w io.Writer, v *View) error {
	t := &table{}
	t.add("USER", "GPUS IN USE", "JOBS RUNNING", "GPUS WAITING", "JOBS WAITING", "UTIL", "IDLE GPUS")
	var total TopRow
	var totalSum utilSum
	rows, sums := top(v)
	for _, u := range rows {
		sum := sums[u.User]
		t.add(u.User, strconv.Itoa(int(u.RunningGPUs)), strconv.Itoa(u.RunningJobs), strconv.Itoa(int(u.WaitingGPUs)), strconv.Itoa(u.WaitingJobs),
			sum.text(), strconv.Itoa(int(u.IdleGPUs)))
		totalSum.weighted += sum.weighted
		totalSum.measured += sum.measured
		totalSum.running += sum.running
		totalSum.idle += sum.idle
		total.RunningGPUs += u.RunningGPUs
		total.RunningJobs += u.RunningJobs
		total.WaitingGPUs += u.WaitingGPUs
		total.WaitingJobs += u.WaitingJobs
	}
	if v.Foreign > 0 {
		t.add("(other pods)", strconv.Itoa(int(v.Foreign)), "-", "-", "-", "-", "-")
		total.RunningGPUs += v.Foreign
	}
	t.add("TOTAL", strconv.Itoa(int(total.RunningGPUs)), strconv.Itoa(total.RunningJobs), strconv.Itoa(int(total.WaitingGPUs)), strconv.Itoa(total.WaitingJobs),
		totalSum.text(), strconv.Itoa(int(totalSum.idle)))
	if err := t.write(w); err != nil {
		return err
	}
	if v.CapacityKnown {
		fmt.Fprintf(w, "\n%s in use of %d (%d free)\n", gpus(v.Held+v.Foreign+v.Terminating), v.Capacity, max(v.Capacity-v.Held-v.Foreign-v.Terminating, 0))
	}
	for _, n := range v.Notes {
		fmt.Fprintln(w, "note: "+n)
	}
	return nil
}
