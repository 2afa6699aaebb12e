package harness

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Row is one line of a result table: a figure, and its target
// beside it with a verdict.
type Row struct {
	What, Value, Target, Verdict string
}

// Table is one scenario's result, printed as Markdown so that a run can
// be pasted into BENCHMARKS.md as it is.
type Table struct {
	Title string
	Notes []string
	Rows  []Row
}

func (t Table) Print(w io.Writer) {
	fmt.Fprintf(w, "### %s\n\n", t.Title)
	fmt.Fprintln(w, "| figure | value | target | verdict |")
	fmt.Fprintln(w, "| --- | ---: | --- | --- |")
	for _, r := range t.Rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.What, r.Value, r.Target, r.Verdict)
	}
	for _, n := range t.Notes {
		fmt.Fprintf(w, "\n- %s", n)
	}
	fmt.Fprint(w, "\n\n")
}

func Verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

func MiB(b int64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }

func US(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/1e3) }

// Dist is a sorted sample of latencies.
type Dist []time.Duration

// Q is the nearest-rank quantile: the smallest sample with at least p of
// them at or below it.
func (d Dist) Q(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d))*p+0.999999) - 1
	return d[max(0, min(i, len(d)-1))]
}

// Max is the largest sample.
func (d Dist) Max() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)-1]
}

// Sleep waits d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// R is a Row from its four cells in order.
func R(what, value, target, verdict string) Row { return Row{what, value, target, verdict} }
