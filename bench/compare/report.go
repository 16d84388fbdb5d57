package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

func nan() float64 { return math.NaN() }

// median of xs, NaN values left out; NaN when nothing is left.
func median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return nan()
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// ratio is a/b, NaN when either is unknown or b is zero.
func ratio(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return nan()
	}
	return a / b
}

// figures are one system's medians for one (op, protocol, concurrency).
type figures struct {
	Runs       int
	Throughput float64 // ok/s
	P50ms      float64
	P99ms      float64
	CPUPer1k   float64 // CPU seconds per 1,000 ok requests, all nodes
	Errors     uint64  // total over the runs, not a median: none is hidden
	ErrorKinds string
	Notes      []string
}

// row is one line of the table.
type row struct {
	Op, Protocol   string
	Conc           int
	Consentd, Etcd figures
}

func (r row) ratios() (thr, p50, p99, cpu float64) {
	return ratio(r.Consentd.Throughput, r.Etcd.Throughput), ratio(r.Consentd.P50ms, r.Etcd.P50ms),
		ratio(r.Consentd.P99ms, r.Etcd.P99ms), ratio(r.Consentd.CPUPer1k, r.Etcd.CPUPer1k)
}

// summarize turns measured runs into rows, in the order of ops, protocols
// and concurrencies given.
func summarize(ms []measurement, ops, protocols []string, concs []int) []row {
	var rows []row
	for _, op := range ops {
		for _, p := range protocols {
			for _, c := range concs {
				r := row{Op: op, Protocol: p, Conc: c}
				r.Consentd = figuresOf(ms, "consentd", op, p, c)
				r.Etcd = figuresOf(ms, "etcd", op, p, c)
				if r.Consentd.Runs+r.Etcd.Runs > 0 {
					rows = append(rows, r)
				}
			}
		}
	}
	return rows
}

func figuresOf(ms []measurement, sys, op, p string, c int) figures {
	var f figures
	var thr, p50, p99, cpu []float64
	kinds := map[string]bool{}
	for _, m := range ms {
		if m.System != sys || m.Op != op || m.Protocol != p || m.Conc != c || m.Rep == 0 {
			continue
		}
		f.Runs++
		thr = append(thr, m.Throughput)
		lat50, lat99 := nan(), nan()
		if m.OK > 0 {
			lat50, lat99 = m.P50.Seconds()*1000, m.P99.Seconds()*1000
		}
		p50, p99 = append(p50, lat50), append(p99, lat99)
		cpu = append(cpu, m.CPUPer1kOK)
		f.Errors += m.Errors
		if m.ErrorKinds != "" {
			kinds[m.ErrorKinds] = true
		}
		if m.Note != "" {
			f.Notes = append(f.Notes, fmt.Sprintf("rep %d: %s", m.Rep, m.Note))
		}
	}
	if f.Runs == 0 {
		return figures{Throughput: nan(), P50ms: nan(), P99ms: nan(), CPUPer1k: nan()}
	}
	f.Throughput, f.P50ms, f.P99ms, f.CPUPer1k = median(thr), median(p50), median(p99), median(cpu)
	f.ErrorKinds = strings.Join(sortedKeys(kinds), "; ")
	return f
}

// fmtNum prints x with digits decimals, or "n/a".
func fmtNum(x float64, digits int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(x, 'f', digits, 64)
}

func fmtRatio(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "n/a"
	}
	return strconv.FormatFloat(x, 'f', 2, 64) + "×"
}

var tableHeader = []string{"op", "protocol", "conc",
	"ok/s consentd", "ok/s etcd", "ratio",
	"p50 ms consentd", "p50 ms etcd", "ratio",
	"p99 ms consentd", "p99 ms etcd", "ratio",
	"CPU s/1k ok consentd", "CPU s/1k ok etcd", "ratio",
	"errors consentd", "errors etcd", "target"}

// opLabel says what each op compares.
func opLabel(op string) string {
	switch op {
	case "write":
		return "write (RecordDecision | Put)"
	case "read":
		return "read (GetConsents linearizable | Range linearizable)"
	case "stale":
		return "stale (GetConsents stale | Range serializable)"
	}
	return op
}

// legend names what each op of rows compares.
func legend(rows []row) string {
	var ops []string
	for _, r := range rows {
		if l := opLabel(r.Op); !slices.Contains(ops, l) {
			ops = append(ops, l)
		}
	}
	return "ops: " + strings.Join(ops, "; ")
}

// cells are r's table cells; the last marks the targets on r (PASS, MISS or n/a each).
func (r row) cells(targets []targetResult) []string {
	thr, p50, p99, cpu := r.ratios()
	mark := r.targetMark(targets)
	return []string{r.Op, r.Protocol, strconv.Itoa(r.Conc),
		fmtNum(r.Consentd.Throughput, 0), fmtNum(r.Etcd.Throughput, 0), fmtRatio(thr),
		fmtNum(r.Consentd.P50ms, 2), fmtNum(r.Etcd.P50ms, 2), fmtRatio(p50),
		fmtNum(r.Consentd.P99ms, 2), fmtNum(r.Etcd.P99ms, 2), fmtRatio(p99),
		fmtNum(r.Consentd.CPUPer1k, 3), fmtNum(r.Etcd.CPUPer1k, 3), fmtRatio(cpu),
		strconv.FormatUint(r.Consentd.Errors, 10), strconv.FormatUint(r.Etcd.Errors, 10), mark}
}

// targetMark is the verdict of each target on r ("ok/s PASS, CPU MISS"), or "-".
func (r row) targetMark(targets []targetResult) string {
	var marks []string
	for _, t := range targets {
		if t.Op == r.Op && t.Protocol == r.Protocol && t.Conc == r.Conc {
			marks = append(marks, figureLabel[t.Figure]+" "+t.Verdict)
		}
	}
	if len(marks) == 0 {
		return "-"
	}
	return strings.Join(marks, ", ")
}

// figureLabel names a target's figure as the table's column does.
var figureLabel = map[string]string{"throughput": "ok/s", "p99": "p99", "cpu": "CPU"}

// writeText prints the table for a terminal.
func writeText(w io.Writer, title string, rows []row, targets []targetResult) error {
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(tableHeader, "\t")+"\t")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r.cells(targets), "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, legend(rows))
	writeNotes(w, rows, "")
	return nil
}

func writeNotes(w io.Writer, rows []row, bullet string) {
	for _, r := range rows {
		for _, s := range []struct {
			name string
			f    figures
		}{{"consentd", r.Consentd}, {"etcd", r.Etcd}} {
			if s.f.ErrorKinds != "" {
				fmt.Fprintf(w, "%s%s %s c=%d %s errors: %s\n", bullet, r.Op, r.Protocol, r.Conc, s.name, s.f.ErrorKinds)
			}
			for _, n := range s.f.Notes {
				fmt.Fprintf(w, "%s%s %s c=%d %s: %s\n", bullet, r.Op, r.Protocol, r.Conc, s.name, n)
			}
		}
	}
}

// writeMarkdown writes the table as GitHub Markdown.
func writeMarkdown(w io.Writer, title string, rows []row, targets []targetResult) {
	fmt.Fprintf(w, "%s\n\n", title)
	// Words left, figures right.
	fmt.Fprintf(w, "| %s |\n| --- | --- |%s --- |\n", strings.Join(tableHeader, " | "), strings.Repeat(" ---: |", len(tableHeader)-3))
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r.cells(targets), " | "))
	}
	fmt.Fprintf(w, "\n%s\n\n", legend(rows))
	writeNotes(w, rows, "- ")
	fmt.Fprint(w, "\nTargets (consentd/etcd):\n\n")
	for _, t := range targets {
		fmt.Fprintf(w, "- %s\n", t.String())
	}
	fmt.Fprintf(w, "\n%s\n", targetTally(targets))
}

// writeCSV writes one line per row with raw (unrounded) figures.
func writeCSV(w io.Writer, rows []row, targets []targetResult) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"op", "protocol", "conc",
		"consentd_ok_per_s", "etcd_ok_per_s", "ratio_ok_per_s",
		"consentd_p50_ms", "etcd_p50_ms", "ratio_p50",
		"consentd_p99_ms", "etcd_p99_ms", "ratio_p99",
		"consentd_cpu_s_per_1k_ok", "etcd_cpu_s_per_1k_ok", "ratio_cpu",
		"consentd_errors", "etcd_errors", "consentd_runs", "etcd_runs", "target"})
	g := func(x float64) string {
		if math.IsNaN(x) {
			return ""
		}
		return strconv.FormatFloat(x, 'g', 6, 64)
	}
	for _, r := range rows {
		thr, p50, p99, cpu := r.ratios()
		cw.Write([]string{r.Op, r.Protocol, strconv.Itoa(r.Conc),
			g(r.Consentd.Throughput), g(r.Etcd.Throughput), g(thr),
			g(r.Consentd.P50ms), g(r.Etcd.P50ms), g(p50),
			g(r.Consentd.P99ms), g(r.Etcd.P99ms), g(p99),
			g(r.Consentd.CPUPer1k), g(r.Etcd.CPUPer1k), g(cpu),
			strconv.FormatUint(r.Consentd.Errors, 10), strconv.FormatUint(r.Etcd.Errors, 10),
			strconv.Itoa(r.Consentd.Runs), strconv.Itoa(r.Etcd.Runs), r.targetMark(targets)})
	}
	cw.Flush()
	return cw.Error()
}

// writeRunsCSV writes every measured run, warm-ups left out.
func writeRunsCSV(w io.Writer, ms []measurement) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"system", "op", "protocol", "conc", "rep", "target", "requests", "ok", "errors", "cut_off_at_end", "error_kinds",
		"elapsed_s", "ok_per_s", "p50_ms", "p99_ms", "server_cpu_s", "cpu_s_per_1k_ok", "tool_cpu_s", "revision_delta", "new_keys", "note"})
	f := func(x float64) string {
		if math.IsNaN(x) {
			return ""
		}
		return strconv.FormatFloat(x, 'g', 6, 64)
	}
	for _, m := range ms {
		if m.Rep == 0 {
			continue
		}
		cw.Write([]string{m.System, m.Op, m.Protocol, strconv.Itoa(m.Conc), strconv.Itoa(m.Rep), m.TargetID,
			strconv.FormatUint(m.Requests, 10), strconv.FormatUint(m.OK, 10), strconv.FormatUint(m.Errors, 10), strconv.FormatUint(m.CutOff, 10), m.ErrorKinds,
			f(m.Elapsed.Seconds()), f(m.Throughput), f(m.P50.Seconds() * 1000), f(m.P99.Seconds() * 1000),
			f(m.CPUSeconds), f(m.CPUPer1kOK), f(m.ToolCPU), strconv.FormatUint(m.RevDelta, 10), strconv.FormatUint(m.NewKeys, 10), m.Note})
	}
	cw.Flush()
	return cw.Error()
}

// target is one of the issue's goals for the ratio consentd/etcd.
type target struct {
	Op, Protocol string
	Conc         int
	Figure       string // throughput, p99, cpu
	AtLeast      bool   // ratio ≥ Bound (throughput) or ≤ Bound (latency, CPU)
	Bound        float64
}

// issueTargets are the issue's targets: concurrency 64 unless it says
// otherwise, which it does only for the write p99 (16).
var issueTargets = []target{
	{"write", "grpc", 64, "throughput", true, 1},
	{"write", "grpc", 16, "p99", false, 1},
	{"write", "rest", 64, "throughput", true, 1},
	{"write", "rest", 16, "p99", false, 1},
	{"read", "grpc", 64, "throughput", true, 1},
	{"read", "rest", 64, "throughput", true, 1},
	{"stale", "grpc", 64, "throughput", true, 1},
	{"stale", "rest", 64, "throughput", true, 1},
	{"write", "grpc", 64, "cpu", false, 1},
	{"write", "rest", 64, "cpu", false, 1},
}

type targetResult struct {
	target
	Verdict string // PASS, MISS or n/a
	Ratio   float64
	C, E    float64
	Unit    string
	Reason  string // why n/a, or the errors that qualify a verdict
}

func (t targetResult) String() string {
	cmp := "≤"
	if t.AtLeast {
		cmp = "≥"
	}
	what := fmt.Sprintf("%s %s c=%d %s %s%.1f×", t.Op, t.Protocol, t.Conc, t.Figure, cmp, t.Bound)
	if t.Verdict == "n/a" {
		return fmt.Sprintf("n/a   %s: %s", what, t.Reason)
	}
	s := fmt.Sprintf("%-5s %s: %s (consentd %s %s, etcd %s %s)", t.Verdict, what, fmtRatio(t.Ratio),
		fmtNum(t.C, 3), t.Unit, fmtNum(t.E, 3), t.Unit)
	if t.Reason != "" {
		s += "; " + t.Reason
	}
	return s
}

func evaluateTargets(rows []row, targets []target) []targetResult {
	var out []targetResult
	for _, t := range targets {
		res := targetResult{target: t, Verdict: "n/a", Ratio: nan()}
		i := slices.IndexFunc(rows, func(r row) bool { return r.Op == t.Op && r.Protocol == t.Protocol && r.Conc == t.Conc })
		if i < 0 {
			res.Reason = "not measured in this run"
			out = append(out, res)
			continue
		}
		r := rows[i]
		switch t.Figure {
		case "throughput":
			res.C, res.E, res.Unit = r.Consentd.Throughput, r.Etcd.Throughput, "ok/s"
		case "p99":
			res.C, res.E, res.Unit = r.Consentd.P99ms, r.Etcd.P99ms, "ms"
		case "cpu":
			res.C, res.E, res.Unit = r.Consentd.CPUPer1k, r.Etcd.CPUPer1k, "CPU s/1k ok"
		}
		res.Ratio = ratio(res.C, res.E)
		switch {
		case math.IsNaN(res.Ratio):
			res.Reason = fmt.Sprintf("no figure (consentd %s, etcd %s)", fmtNum(res.C, 3), fmtNum(res.E, 3))
		case t.AtLeast && res.Ratio >= t.Bound, !t.AtLeast && res.Ratio <= t.Bound:
			res.Verdict = "PASS"
		default:
			res.Verdict = "MISS"
		}
		if r.Consentd.Errors > 0 || r.Etcd.Errors > 0 {
			res.Reason = strings.TrimPrefix(res.Reason+fmt.Sprintf("; errors: consentd %d, etcd %d", r.Consentd.Errors, r.Etcd.Errors), "; ")
		}
		out = append(out, res)
	}
	return out
}

// targetTally is "targets: N PASS, N MISS, N n/a".
func targetTally(results []targetResult) string {
	n := map[string]int{}
	for _, t := range results {
		n[t.Verdict]++
	}
	return fmt.Sprintf("targets: %d PASS, %d MISS, %d n/a", n["PASS"], n["MISS"], n["n/a"])
}
