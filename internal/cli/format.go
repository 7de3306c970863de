package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/epfl-cvlab/cvlab-queue/internal/observe"
	"github.com/epfl-cvlab/cvlab-queue/internal/queue"
)

// gpus renders a GPU count: "1 GPU", "3 GPUs".
func gpus(n int32) string {
	if n == 1 {
		return "1 GPU"
	}
	return fmt.Sprintf("%d GPUs", n)
}

// plural renders a count with its noun: "1 job", "3 jobs".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// gpuOrdinals names the GPU ordinals a job covers: "1st GPU", "3rd-4th GPUs".
func gpuOrdinals(first, last int32) string {
	if first == last {
		return queue.Ordinal(last) + " GPU"
	}
	return queue.Ordinal(first) + "-" + queue.Ordinal(last) + " GPUs"
}

// ordinalSet names a set of ordinals, sorted: "1st", "1st/2nd", "1st-5th", "1st/3rd".
func ordinalSet(ns []int32) string {
	if len(ns) > 3 && ns[len(ns)-1]-ns[0] == int32(len(ns)-1) {
		return queue.Ordinal(ns[0]) + "-" + queue.Ordinal(ns[len(ns)-1])
	}
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = queue.Ordinal(n)
	}
	return strings.Join(parts, "/")
}

// shortDuration renders a duration without zero units: "10m", "4h", "1h30m", "45s".
func shortDuration(d time.Duration) string { return observe.ShortDuration(d) }

// age renders how long ago t was, as kubectl does ("5m", "3h12m", "2d").
func age(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

// clock renders a time of day in the local zone, with the date when it is not today.
func clock(t, now time.Time) string {
	t, now = t.Local(), now.Local()
	if t.Year() == now.Year() && t.YearDay() == now.YearDay() {
		return t.Format("15:04")
	}
	return t.Format("Mon Jan 2 15:04")
}

// when renders a future time with its distance: "16:40 (in 2h)".
func when(t, now time.Time) string {
	if !t.After(now) {
		return "now"
	}
	d := t.Sub(now)
	if d >= time.Minute {
		d = d.Round(time.Minute)
	}
	return clock(t, now) + " (in " + shortDuration(d) + ")"
}

// table prints rows in aligned columns, three spaces apart (kubectl's look). A row with a single
// cell starting with "--" is a separator line printed as is.
type table struct {
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) separator(text string) { t.rows = append(t.rows, []string{text}) }

func isSeparator(r []string) bool { return len(r) == 1 && strings.HasPrefix(r[0], "--") }

func (t *table) write(w io.Writer) error {
	var widths []int
	for _, r := range t.rows {
		if isSeparator(r) {
			continue
		}
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, r := range t.rows {
		if isSeparator(r) {
			b.WriteString(r[0] + "\n")
			continue
		}
		var line strings.Builder
		for i, c := range r {
			line.WriteString(c)
			if i < len(r)-1 {
				line.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+3))
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
