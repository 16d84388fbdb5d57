package main

import (
	"bytes"
	"encoding/csv"
	"math"
	"strings"
	"testing"
	"time"
)

func same(a, b float64) bool {
	return (math.IsNaN(a) && math.IsNaN(b)) || math.Abs(a-b) < 1e-9
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		xs   []float64
		want float64
	}{
		{"empty", nil, math.NaN()},
		{"one", []float64{3}, 3},
		{"odd, unsorted", []float64{9, 1, 5}, 5},
		{"even: mean of the middle two", []float64{4, 1, 3, 2}, 2.5},
		{"NaN left out", []float64{math.NaN(), 7, 1, 4}, 4},
		{"only NaN", []float64{math.NaN(), math.NaN()}, math.NaN()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := median(tc.xs); !same(got, tc.want) {
				t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
			}
		})
	}
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct {
		a, b, want float64
	}{
		{3, 2, 1.5},
		{0, 2, 0},
		{2, 0, math.NaN()},
		{math.NaN(), 2, math.NaN()},
		{2, math.NaN(), math.NaN()},
	} {
		if got := ratio(tc.a, tc.b); !same(got, tc.want) {
			t.Errorf("ratio(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// run is a measured run of sys with the figures that are summarized.
func mrun(sys, op, proto string, conc, rep int, thr float64, p99ms int, cpu float64, errs uint64) measurement {
	m := measurement{System: sys, Op: op, Protocol: proto, Conc: conc, Rep: rep, Throughput: thr, CPUPer1kOK: cpu}
	m.OK, m.Errors = uint64(thr), errs
	m.P50, m.P99 = time.Duration(p99ms)*time.Millisecond/2, time.Duration(p99ms)*time.Millisecond
	return m
}

func TestSummarizeTakesMediansAndSumsErrors(t *testing.T) {
	ms := []measurement{
		mrun("consentd", "write", "grpc", 16, 0, 1, 1, 1, 1000), // a warm-up: left out
		mrun("consentd", "write", "grpc", 16, 1, 100, 30, 0.5, 1),
		mrun("etcd", "write", "grpc", 16, 1, 200, 10, 0.2, 0),
		mrun("consentd", "write", "grpc", 16, 2, 300, 10, 0.3, 2),
		mrun("etcd", "write", "grpc", 16, 2, 100, 20, 0.4, 0),
		mrun("consentd", "write", "grpc", 16, 3, 200, 20, 0.4, 0),
		mrun("etcd", "write", "grpc", 16, 3, 400, 30, 0.3, 0),
	}
	// A run without any OK request has no latency: NaN, left out of the median.
	ms[6].OK = 0
	rows := summarize(ms, []string{"write", "read"}, []string{"grpc"}, []int{16, 64})
	if len(rows) != 1 {
		t.Fatalf("rows = %+v, want the one measured", rows)
	}
	r := rows[0]
	if r.Consentd.Runs != 3 || r.Etcd.Runs != 3 {
		t.Errorf("runs %d, %d; want 3, 3", r.Consentd.Runs, r.Etcd.Runs)
	}
	if r.Consentd.Throughput != 200 || r.Etcd.Throughput != 200 {
		t.Errorf("throughput %v, %v; want medians 200, 200", r.Consentd.Throughput, r.Etcd.Throughput)
	}
	if r.Consentd.P99ms != 20 || r.Etcd.P99ms != 15 {
		t.Errorf("p99 %v, %v; want 20 and 15 (mean of 10 and 20, the NaN left out)", r.Consentd.P99ms, r.Etcd.P99ms)
	}
	if r.Consentd.Errors != 3 || r.Etcd.Errors != 0 {
		t.Errorf("errors %d, %d; want the sums 3, 0", r.Consentd.Errors, r.Etcd.Errors)
	}
	thr, _, p99, cpu := r.ratios()
	if !same(thr, 1) || !same(p99, 20.0/15) || !same(cpu, 0.4/0.3) {
		t.Errorf("ratios thr %v p99 %v cpu %v", thr, p99, cpu)
	}
}

func TestEvaluateTargets(t *testing.T) {
	rowOf := func(op string, conc int, cThr, eThr, cP99, eP99, cCPU, eCPU float64, cErr uint64) row {
		return row{Op: op, Protocol: "grpc", Conc: conc,
			Consentd: figures{Runs: 3, Throughput: cThr, P99ms: cP99, CPUPer1k: cCPU, Errors: cErr},
			Etcd:     figures{Runs: 3, Throughput: eThr, P99ms: eP99, CPUPer1k: eCPU}}
	}
	rows := []row{
		rowOf("write", 16, 100, 100, 10, 20, 1, 1, 0),
		rowOf("write", 64, 99, 100, 10, 10, 1.2, 1, 5),
		rowOf("read", 64, math.NaN(), 100, 1, 1, 1, 1, 0),
	}
	for _, tc := range []struct {
		name    string
		target  target
		verdict string
		reason  string
	}{
		{"throughput equal passes", target{"write", "grpc", 16, "throughput", true, 1}, "PASS", ""},
		{"throughput below misses, errors said", target{"write", "grpc", 64, "throughput", true, 1}, "MISS", "errors: consentd 5, etcd 0"},
		{"p99 lower passes", target{"write", "grpc", 16, "p99", false, 1}, "PASS", ""},
		{"p99 equal passes", target{"write", "grpc", 64, "p99", false, 1}, "PASS", "errors: consentd 5, etcd 0"},
		{"cpu higher misses", target{"write", "grpc", 64, "cpu", false, 1}, "MISS", "errors: consentd 5, etcd 0"},
		{"no figure", target{"read", "grpc", 64, "throughput", true, 1}, "n/a", "no figure (consentd n/a, etcd 100.000)"},
		{"not measured", target{"stale", "grpc", 64, "throughput", true, 1}, "n/a", "not measured in this run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := evaluateTargets(rows, []target{tc.target})[0]
			if got.Verdict != tc.verdict || got.Reason != tc.reason {
				t.Errorf("verdict %q reason %q; want %q %q (%s)", got.Verdict, got.Reason, tc.verdict, tc.reason, got)
			}
		})
	}
}

func TestIssueTargetsAsTheIssueStatesThem(t *testing.T) {
	var got []string
	for _, tg := range issueTargets {
		cmp := "<="
		if tg.AtLeast {
			cmp = ">="
		}
		got = append(got, strings.Join([]string{tg.Op, tg.Protocol, itoa(tg.Conc), tg.Figure, cmp}, " "))
	}
	want := []string{
		"write grpc 64 throughput >=", "write grpc 16 p99 <=", "write rest 64 throughput >=", "write rest 16 p99 <=",
		"read grpc 64 throughput >=", "read rest 64 throughput >=", "stale grpc 64 throughput >=", "stale rest 64 throughput >=",
		"write grpc 64 cpu <=", "write rest 64 cpu <=",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("issueTargets:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, tg := range issueTargets {
		if tg.Bound != 1 {
			t.Errorf("%+v: bound %v, the issue says 1.0", tg, tg.Bound)
		}
	}
}

func itoa(n int) string { return joinInts([]int{n}) }

func TestTableMarksTargetRows(t *testing.T) {
	rows := []row{
		{Op: "write", Protocol: "grpc", Conc: 16, Consentd: figures{Throughput: 90, P99ms: 5, CPUPer1k: 1}, Etcd: figures{Throughput: 100, P99ms: 10, CPUPer1k: 1}},
		{Op: "write", Protocol: "grpc", Conc: 64, Consentd: figures{Throughput: 110, P99ms: 5, CPUPer1k: 2}, Etcd: figures{Throughput: 100, P99ms: 10, CPUPer1k: 1}},
		{Op: "write", Protocol: "grpc", Conc: 1, Consentd: figures{Throughput: 1, P99ms: 1, CPUPer1k: 1}, Etcd: figures{Throughput: 1, P99ms: 1, CPUPer1k: 1}},
	}
	targets := evaluateTargets(rows, issueTargets)
	var text bytes.Buffer
	if err := writeText(&text, "title", rows, targets); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(text.String(), "\n")
	for _, want := range []struct{ prefix, suffix string }{
		{"write      grpc    16", "p99 PASS"},
		{"write      grpc    64", "ok/s PASS, CPU MISS"},
		{"write      grpc     1", "-"},
	} {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), strings.TrimSpace(want.prefix)) && strings.HasSuffix(strings.TrimSpace(l), want.suffix) {
				found = true
			}
		}
		if !found {
			t.Errorf("no row %q ending %q in:\n%s", want.prefix, want.suffix, text.String())
		}
	}
	if !strings.Contains(text.String(), "1.10×") {
		t.Errorf("no ratio 1.10× in:\n%s", text.String())
	}

	var md bytes.Buffer
	writeMarkdown(&md, "### title", rows, targets)
	if !strings.Contains(md.String(), "| write | grpc | 64 | 110 | 100 | 1.10× |") || !strings.Contains(md.String(), "ok/s PASS, CPU MISS |") {
		t.Errorf("markdown:\n%s", md.String())
	}

	var c bytes.Buffer
	if err := writeCSV(&c, rows, targets); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&c).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 || recs[2][3] != "110" || recs[2][5] != "1.1" || recs[2][19] != "ok/s PASS, CPU MISS" || recs[3][19] != "-" {
		t.Errorf("csv: %v", recs)
	}
}

func TestEstimate(t *testing.T) {
	cfg := DefaultConfig()
	// 3 ops x 2 protocols x 4 concurrencies x 2 systems, each 3 x 10s + a 2s warm-up,
	// plus 0.1s for each of the 192 tool runs.
	if got, want := cfg.estimate(), 48*32*time.Second+192*100*time.Millisecond; got != want {
		t.Errorf("estimate = %v, want %v", got, want)
	}
	cfg.Warmup, cfg.Reps, cfg.Duration, cfg.Conc = 0, 1, 2*time.Second, []int{16}
	if got, want := cfg.estimate(), 12*2*time.Second+12*100*time.Millisecond; got != want {
		t.Errorf("smoke estimate = %v, want %v", got, want)
	}
}

func TestDurationSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{
		10 * time.Second: "10s", 1500 * time.Millisecond: "2s", 200 * time.Millisecond: "1s", 0: "1s",
	} {
		if got := durationSeconds(d); got != want {
			t.Errorf("durationSeconds(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestTargetTally(t *testing.T) {
	got := targetTally([]targetResult{{Verdict: "PASS"}, {Verdict: "MISS"}, {Verdict: "PASS"}, {Verdict: "n/a"}})
	if want := "targets: 2 PASS, 1 MISS, 1 n/a"; got != want {
		t.Errorf("targetTally = %q, want %q", got, want)
	}
}
