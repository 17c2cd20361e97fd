package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Table is one scenario's result: figures, and goals met or missed.
type Table struct {
	Title   string
	Command string
	Rows    []Row
	Notes   []string
}

// Row is one figure; a row with a Goal says whether it was met.
type Row struct {
	Figure, Value string
	Goal          string // empty: a figure without a goal
	Met           bool
}

// Add appends a figure without a goal.
func (t *Table) Add(figure, format string, args ...any) {
	t.Rows = append(t.Rows, Row{Figure: figure, Value: fmt.Sprintf(format, args...)})
}

// Goal appends a figure with its goal.
func (t *Table) Goal(figure, value, goal string, met bool) {
	t.Rows = append(t.Rows, Row{Figure: figure, Value: value, Goal: goal, Met: met})
}

// Missed lists the goals missed.
func (t *Table) Missed() []string {
	var out []string
	for _, r := range t.Rows {
		if r.Goal != "" && !r.Met {
			out = append(out, t.Title+": "+r.Figure)
		}
	}
	return out
}

// Markdown renders the table as in docs/benchmarks.md.
func (t *Table) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#### %s\n\n", t.Title)
	if t.Command != "" {
		fmt.Fprintf(&b, "`%s`\n\n", t.Command)
	}
	b.WriteString("| figure | value | goal | |\n| --- | ---: | --- | --- |\n")
	for _, r := range t.Rows {
		verdict := ""
		if r.Goal != "" {
			verdict = "**missed**"
			if r.Met {
				verdict = "**met**"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.Figure, r.Value, r.Goal, verdict)
	}
	for _, n := range t.Notes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	b.WriteString("\n")
	return b.String()
}

// Dist summarises durations.
type Dist struct {
	N                   int
	Mean, P50, P99, Max time.Duration
}

// Summarise computes Dist with nearest-rank percentiles.
func Summarise(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return Dist{N: len(s), Mean: sum / time.Duration(len(s)), P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1]}
}

func (d Dist) String() string {
	return fmt.Sprintf("mean %s, p50 %s, p99 %s, max %s (n=%d)", ms(d.Mean), ms(d.P50), ms(d.P99), ms(d.Max), d.N)
}

// ms formats a duration for the tables: milliseconds below 10 s.
func ms(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// secs formats a goal: whole seconds when it is one.
func secs(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%d s", d/time.Second)
	}
	return ms(d)
}

// kb formats a byte count.
func kb(b int64) string {
	switch {
	case b >= 10<<20:
		return fmt.Sprintf("%.1f MB", float64(b)/(1<<20))
	case b >= 10<<10:
		return fmt.Sprintf("%.1f KB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
