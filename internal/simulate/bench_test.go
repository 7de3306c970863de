package simulate

import (
	"fmt"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
)

// BenchmarkSimulateLab30Days simulates the default generated lab (DefaultLabParams: 30 days, 25
// people, about 20,000 jobs) on the lab's 30 GPUs under the operator's default settings, with
// the garbage collector set as `kubectl cvlab simulate` sets it (GOGC 400).
func BenchmarkSimulateLab30Days(b *testing.B) {
	trace, err := Generate(DefaultLabParams())
	if err != nil {
		b.Fatal(err)
	}
	nodes, err := ReadNodes(strings.NewReader(LabNodes))
	if err != nil {
		b.Fatal(err)
	}
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	b.ReportAllocs()
	var r *Result
	for b.Loop() {
		if r, err = Run(Config{Settings: observe.DefaultSettings(), Nodes: nodes}, State{}, trace); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(trace)), "jobs")
	b.ReportMetric(float64(r.Decisions), "decisions")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(r.Decisions), "µs/decision")
}

// BenchmarkPredict300 runs a queue of 30 running and 300 waiting jobs of 25 people forward with no
// new job, as an estimated start does (simulate.Predict): every job with a 4h timeout, on the lab's
// 30 GPUs, under the operator's defaults.
func BenchmarkPredict300(b *testing.B) {
	nodes, err := ReadNodes(strings.NewReader(LabNodes))
	if err != nil {
		b.Fatal(err)
	}
	now := t0.Add(24 * time.Hour)
	var st State
	st.Now = now
	for i := range 330 {
		user := userNames[i%25]
		j := StateJob{TraceJob: TraceJob{Name: fmt.Sprintf("j%d", i), User: user, GPUs: 1, Timeout: 4 * time.Hour,
			Submit: now.Add(-time.Duration(330-i) * time.Minute)}}
		if i < 30 { // 8, 8, 8 and 6 on the lab's nodes
			j.Started, j.Node = now.Add(-time.Duration(i)*7*time.Minute), nodes[min(i/8, 3)].Name
		}
		st.Jobs = append(st.Jobs, j)
	}
	b.ReportAllocs()
	var r *Result
	for b.Loop() {
		if r, err = Run(Config{Settings: observe.DefaultSettings(), Nodes: nodes}, st, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(r.Decisions), "decisions")
}
