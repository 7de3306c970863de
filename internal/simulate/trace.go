package simulate

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/fakedcgm"
)

// TraceJob is one job of a workload trace: submitted at Submit, it runs for Runtime once started
// (from scratch again after each eviction).
type TraceJob struct {
	// Name is the job's name; unique per user. Empty: "job-N" (N its line in the trace).
	Name     string
	User     string
	GPUs     int32
	Priority int32
	Submit   time.Time
	// Runtime is how long the job runs once started; zero: until its Timeout (or forever).
	Runtime time.Duration
	// Timeout is spec.timeout: a run that lasts longer fails with DeadlineExceeded, as the pod's
	// activeDeadlineSeconds makes it; zero: none.
	Timeout time.Duration
	// Utilization is the GPUs' utilisation over the run, in the fake dcgm-exporter's syntax
	// (fakedcgm.AnnotationUtilization): "P" or "P1,P2,...", one value per Config.ProfileStep from
	// the pod's start, the last one held; empty: busy (fakedcgm.DefaultUtilization).
	Utilization string
	// Interactive marks an interactive session (a notebook, a shell): reported apart.
	Interactive bool
	// Grace is spec.terminationGracePeriodSeconds; zero: the operator's default.
	Grace time.Duration
	// Checkpoint is how often the job saves its progress: evicted, it resumes from its last
	// checkpoint and the work since is lost; zero: it never does, and starts again from scratch.
	Checkpoint time.Duration
	// Cancel is when the owner deletes the job, after its first start (a session closed at the
	// end of the day, whether it still runs or was requeued); zero: never.
	Cancel time.Duration
}

// traceFields are the column names of a trace, in the order WriteTrace writes them.
var traceFields = []string{"submit", "user", "gpus", "priority", "runtime", "timeout", "utilization", "name", "interactive", "grace", "cancel", "checkpoint"}

// ReadTrace reads a trace: CSV with a header row naming the columns (see traceFields; submit,
// user, gpus and runtime or timeout are required), or JSON lines (one object per line, the same
// names). A submit time is RFC 3339, or a Go duration ("36h15m") from start. The jobs are returned
// in submission order.
func ReadTrace(r io.Reader, start time.Time) ([]TraceJob, error) {
	br := bufio.NewReader(r)
	first, err := br.Peek(1)
	for err == nil && (first[0] == ' ' || first[0] == '\n' || first[0] == '\r' || first[0] == '\t') {
		_, _ = br.ReadByte()
		first, err = br.Peek(1)
	}
	if err == io.EOF {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var rows []map[string]string
	if first[0] == '{' {
		rows, err = readJSONLines(br)
	} else {
		rows, err = readCSV(br)
	}
	if err != nil {
		return nil, err
	}
	jobs := make([]TraceJob, 0, len(rows))
	for i, row := range rows {
		j, err := parseTraceRow(row, start)
		if err != nil {
			return nil, fmt.Errorf("trace job %d: %w", i+1, err)
		}
		if j.Name == "" {
			j.Name = "job-" + strconv.Itoa(i+1)
		}
		jobs = append(jobs, j)
	}
	slices.SortStableFunc(jobs, func(a, b TraceJob) int { return a.Submit.Compare(b.Submit) })
	return jobs, nil
}

func readCSV(r io.Reader) ([]map[string]string, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("trace header: %w", err)
	}
	for i, h := range header {
		header[i] = strings.ToLower(strings.TrimSpace(h))
		if !slices.Contains(traceFields, header[i]) {
			return nil, fmt.Errorf("trace header: unknown column %q (known: %s)", h, strings.Join(traceFields, ", "))
		}
	}
	cr.FieldsPerRecord = len(header)
	var rows []map[string]string
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			return nil, fmt.Errorf("trace: %w", err)
		}
		row := make(map[string]string, len(header))
		for i, v := range rec {
			row[header[i]] = strings.TrimSpace(v)
		}
		rows = append(rows, row)
	}
}

func readJSONLines(r io.Reader) ([]map[string]string, error) {
	var rows []map[string]string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(line, &obj); err != nil {
			return nil, fmt.Errorf("trace line %d: %w", n, err)
		}
		row := make(map[string]string, len(obj))
		for k, v := range obj {
			if !slices.Contains(traceFields, k) {
				return nil, fmt.Errorf("trace line %d: unknown field %q (known: %s)", n, k, strings.Join(traceFields, ", "))
			}
			switch v := v.(type) {
			case string:
				row[k] = v
			case nil:
			default: // numbers and booleans
				b, _ := json.Marshal(v)
				row[k] = string(b)
			}
		}
		rows = append(rows, row)
	}
	return rows, sc.Err()
}

func parseTraceRow(row map[string]string, start time.Time) (TraceJob, error) {
	j := TraceJob{Name: row["name"], User: row["user"], Utilization: row["utilization"]}
	if j.User == "" {
		return j, fmt.Errorf("no user")
	}
	var err error
	if j.Submit, err = parseWhen(row["submit"], start); err != nil {
		return j, err
	}
	gpus, err := strconv.ParseInt(row["gpus"], 10, 32)
	if err != nil || gpus < 0 {
		return j, fmt.Errorf("gpus %q is not a number of GPUs", row["gpus"])
	}
	j.GPUs = int32(gpus)
	if s := row["priority"]; s != "" {
		p, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return j, fmt.Errorf("priority %q is not an integer", s)
		}
		j.Priority = int32(p)
	}
	for _, f := range []struct {
		name string
		to   *time.Duration
	}{{"runtime", &j.Runtime}, {"timeout", &j.Timeout}, {"grace", &j.Grace}, {"cancel", &j.Cancel}, {"checkpoint", &j.Checkpoint}} {
		if s := row[f.name]; s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				return j, fmt.Errorf("%s %q is not a duration (such as 90s, 45m, 2h30m)", f.name, s)
			}
			*f.to = d
		}
	}
	if j.Runtime == 0 && j.Timeout == 0 {
		return j, fmt.Errorf("neither runtime nor timeout: the job would never end")
	}
	if s := row["interactive"]; s != "" {
		if j.Interactive, err = strconv.ParseBool(s); err != nil {
			return j, fmt.Errorf("interactive %q is not true or false", s)
		}
	}
	if j.Utilization != "" {
		if _, err := fakedcgm.ParseProfile(j.Utilization); err != nil {
			return j, err
		}
	}
	return j, nil
}

// parseWhen reads a submit time: RFC 3339, or a duration from start.
func parseWhen(s string, start time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("submit %q is neither an RFC 3339 time nor a duration from the trace start", s)
	}
	return start.Add(d), nil
}

// WriteTrace writes a trace as CSV with a header row, submit times in RFC 3339.
func WriteTrace(w io.Writer, jobs []TraceJob) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(traceFields); err != nil {
		return err
	}
	dur := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return d.String()
	}
	for _, j := range jobs {
		interactive := ""
		if j.Interactive {
			interactive = "true"
		}
		if err := cw.Write([]string{j.Submit.UTC().Format(time.RFC3339), j.User, strconv.Itoa(int(j.GPUs)), strconv.Itoa(int(j.Priority)),
			dur(j.Runtime), dur(j.Timeout), j.Utilization, j.Name, interactive, dur(j.Grace), dur(j.Cancel), dur(j.Checkpoint)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
