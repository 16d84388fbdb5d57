package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The samples are real outputs: ghz 0.93 -O json (details dropped) and wrk
// 4.1 --latency, captured from this program's runs and from a lone etcd.
func TestParseGhz(t *testing.T) {
	for _, tc := range []struct {
		file    string
		conc    int
		want    toolResult
		wantErr bool
	}{
		{
			// 16 calls in flight at the end are cut off, not counted as errors.
			file: "ghz-write-ok.json", conc: 16,
			want: toolResult{Requests: 1108, OK: 1092, Errors: 0, CutOff: 16, Elapsed: 2010103119,
				P50: 26272555, P99: 57697700},
		},
		{
			// More "transport is closing" than workers: not a cut-off, all errors.
			file: "ghz-write-ok.json", conc: 8,
			want: toolResult{Requests: 1108, OK: 1092, Errors: 16, CutOff: 0, Elapsed: 2010103119,
				P50: 26272555, P99: 57697700, ErrorKinds: "rpc error: code = Unavailable desc = transport is closing×16"},
		},
		{
			// 64 workers: 64 calls cut off by the transport and one started
			// on the closing connection (the counts of a real run; the latencies
			// are illustrative).
			file: "ghz-write-cutoff-both.json", conc: 64,
			want: toolResult{Requests: 76927, OK: 76862, Errors: 0, CutOff: 65, Elapsed: 10003725358,
				P50: 7510000, P99: 21090000},
		},
		{
			// Every call refused: no latency distribution, errors named.
			file: "ghz-put-errors.json", conc: 4,
			want: toolResult{Requests: 14195, OK: 0, Errors: 14191, CutOff: 4, Elapsed: 1001153943,
				ErrorKinds: "rpc error: code = InvalidArgument desc = etcdserver: key is not provided×14191"},
		},
	} {
		t.Run(tc.file, func(t *testing.T) {
			got, err := parseGhz(readTestdata(t, tc.file), tc.conc)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("parseGhz:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseGhzRejects(t *testing.T) {
	for name, raw := range map[string]string{
		"not JSON":          "ghz: connection refused",
		"no total":          `{"count":3,"statusCodeDistribution":{"OK":3}}`,
		"OK but no latency": `{"count":3,"total":1000000000,"statusCodeDistribution":{"OK":3},"latencyDistribution":null}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseGhz([]byte(raw), 1); err == nil {
				t.Error("parseGhz: no error")
			}
		})
	}
}

func TestWithoutGhzDetails(t *testing.T) {
	slim, err := withoutGhzDetails([]byte(`{"count":2,"details":[{"latency":1},{"latency":2}],"total":5}`))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(slim, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["details"]; ok || got["count"] != 2.0 || got["total"] != 5.0 {
		t.Errorf("withoutGhzDetails = %s", slim)
	}
}

func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      toolResult
	}{
		{
			// Our script's BENCH line wins over wrk's rounded text.
			name: "BENCH line", out: string(readTestdata(t, "wrk-write-ok.txt")),
			want: toolResult{Requests: 3798, OK: 3798, Elapsed: 2020538 * time.Microsecond,
				P50: 6652 * time.Microsecond, P99: 55158 * time.Microsecond},
		},
		{
			name: "text with non-2xx", out: string(readTestdata(t, "wrk-put-non2xx.txt")),
			want: toolResult{Requests: 1962, OK: 980, Errors: 982, Elapsed: time.Second,
				P50: 837 * time.Microsecond, P99: 16770 * time.Microsecond, ErrorKinds: "non-2xx×982"},
		},
		{
			name: "text, no answer at all", out: string(readTestdata(t, "wrk-no-answer.txt")),
			want: toolResult{Elapsed: 3010 * time.Millisecond},
		},
		{
			// wrk's format for socket errors (from its source: src/wrk.c).
			name: "text with socket errors",
			out: "  10 requests in 2.00s, 1.00KB read\n  Socket errors: connect 1, read 2, write 3, timeout 4\n" +
				"     50%    1.50ms\n     99%    2.00s\n",
			want: toolResult{Requests: 10, OK: 10, Errors: 10, Elapsed: 2 * time.Second,
				P50: 1500 * time.Microsecond, P99: 2 * time.Second, ErrorKinds: "timeout×4, write×3, read×2, connect×1"},
		},
		{
			name: "BENCH line with errors",
			out:  `BENCH {"requests":100,"duration_us":1000000,"status_errors":7,"connect_errors":0,"read_errors":1,"write_errors":0,"timeouts":2,"p50_us":1500.4,"p99_us":9000}`,
			want: toolResult{Requests: 100, OK: 93, Errors: 10, Elapsed: time.Second,
				P50: 1500400 * time.Nanosecond, P99: 9 * time.Millisecond, ErrorKinds: "non-2xx×7, timeout×2, read×1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk(tc.out)
			if err != nil {
				t.Fatal(err)
			}
			// Elapsed from wrk's text is rounded to its printed precision.
			if d := got.Elapsed - tc.want.Elapsed; d < -5*time.Millisecond || d > 5*time.Millisecond {
				t.Errorf("Elapsed = %v, want about %v", got.Elapsed, tc.want.Elapsed)
			}
			got.Elapsed = tc.want.Elapsed
			if got != tc.want {
				t.Errorf("parseWrk:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseWrkRejects(t *testing.T) {
	for name, out := range map[string]string{
		"no total":       "Running 1s test @ http://127.0.0.1:1/\n",
		"no percentiles": "  10 requests in 1.00s, 1.00KB read\n",
		"bad BENCH line": "BENCH {not json\n",
		"unknown unit":   "  10 requests in 1.00q, 1.00KB read\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseWrk(out); err == nil {
				t.Error("parseWrk: no error")
			}
		})
	}
}
