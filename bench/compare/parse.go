package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// toolResult is what one load tool run reports, in the same terms for ghz
// and wrk.
type toolResult struct {
	Requests uint64 // answered or failed requests the tool counted
	OK       uint64 // gRPC OK / HTTP 2xx
	Errors   uint64 // everything else: error statuses, timeouts, socket errors
	// CutOff are calls still in flight when ghz's -z time was up: ghz
	// closes its connections and reports them as failed, though no server
	// refused them. Neither OK nor Errors.
	CutOff   uint64
	Elapsed  time.Duration // the tool's own measure of the run's length
	P50, P99 time.Duration
	// ErrorKinds names the errors, most frequent first ("" when none).
	ErrorKinds string
}

// ghzReport is the part of ghz's JSON report (-O json) that is read. Its
// durations are nanoseconds; its latency distribution is over OK calls only.
type ghzReport struct {
	EndReason      string         `json:"endReason"`
	Count          uint64         `json:"count"`
	Total          int64          `json:"total"`
	StatusCodeDist map[string]int `json:"statusCodeDistribution"`
	ErrorDist      map[string]int `json:"errorDistribution"`
	LatencyDist    []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"`
	} `json:"latencyDistribution"`
}

// ghzCutOffErrors are how calls in flight at the end of a -z run fail:
// ghz closes the client connections under them.
var ghzCutOffErrors = map[string]bool{
	"rpc error: code = Unavailable desc = transport is closing":                true,
	"rpc error: code = Canceled desc = grpc: the client connection is closing": true,
}

// parseGhz reads ghz's JSON report of a run with conc workers.
func parseGhz(raw []byte, conc int) (toolResult, error) {
	var rep ghzReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		return toolResult{}, fmt.Errorf("ghz report: %w", err)
	}
	if rep.Total <= 0 {
		return toolResult{}, errors.New("ghz report: no total duration")
	}
	r := toolResult{Requests: rep.Count, OK: uint64(rep.StatusCodeDist["OK"]), Elapsed: time.Duration(rep.Total)}
	cutOffKind := map[string]bool{}
	if rep.EndReason == "timeout" {
		// Each worker has at most one call in flight when ghz closes the
		// connections under it ("transport is closing"), and may start at
		// most one more before it sees that time is up ("the client
		// connection is closing"). More of a kind than workers is not the
		// end of the run, so that kind counts as errors.
		for msg, n := range rep.ErrorDist {
			if ghzCutOffErrors[msg] && n <= conc {
				r.CutOff += uint64(n)
				cutOffKind[msg] = true
			}
		}
	}
	r.Errors = r.Requests - min(r.OK+r.CutOff, r.Requests)
	for _, l := range rep.LatencyDist {
		switch l.Percentage {
		case 50:
			r.P50 = time.Duration(l.Latency)
		case 99:
			r.P99 = time.Duration(l.Latency)
		}
	}
	kinds := map[string]int{}
	for msg, n := range rep.ErrorDist {
		if !cutOffKind[msg] {
			kinds[msg] += n
		}
	}
	r.ErrorKinds = describeKinds(kinds)
	if r.OK > 0 && (r.P50 == 0 || r.P99 == 0) {
		return r, errors.New("ghz report: OK calls but no p50/p99")
	}
	return r, nil
}

// withoutGhzDetails is ghz's JSON report without its per-call "details".
func withoutGhzDetails(raw []byte) ([]byte, error) {
	var rep map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rep); err != nil {
		return nil, err
	}
	delete(rep, "details")
	return json.MarshalIndent(rep, "", "  ")
}

// wrkSummary is the BENCH line our Lua done() prints: wrk's own counters
// and exact percentiles.
type wrkSummary struct {
	Requests      uint64  `json:"requests"`
	DurationUS    int64   `json:"duration_us"`
	StatusErrors  uint64  `json:"status_errors"`
	ConnectErrors uint64  `json:"connect_errors"`
	ReadErrors    uint64  `json:"read_errors"`
	WriteErrors   uint64  `json:"write_errors"`
	Timeouts      uint64  `json:"timeouts"`
	P50US         float64 `json:"p50_us"`
	P99US         float64 `json:"p99_us"`
}

// parseWrk reads wrk's output: the BENCH line when our script printed it,
// else wrk's own --latency text. wrk's latencies include non-2xx answers.
func parseWrk(out string) (toolResult, error) {
	for line := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "BENCH "); ok {
			var s wrkSummary
			if err := json.Unmarshal([]byte(rest), &s); err != nil {
				return toolResult{}, fmt.Errorf("wrk BENCH line: %w", err)
			}
			return s.result(), nil
		}
	}
	return parseWrkText(out)
}

func (s wrkSummary) result() toolResult {
	r := toolResult{
		Requests: s.Requests,
		OK:       s.Requests - min(s.StatusErrors, s.Requests),
		Errors:   s.StatusErrors + s.ConnectErrors + s.ReadErrors + s.WriteErrors + s.Timeouts,
		Elapsed:  time.Duration(s.DurationUS) * time.Microsecond,
		P50:      time.Duration(s.P50US * float64(time.Microsecond)),
		P99:      time.Duration(s.P99US * float64(time.Microsecond)),
	}
	r.ErrorKinds = describeKinds(map[string]int{"non-2xx": int(s.StatusErrors), "connect": int(s.ConnectErrors),
		"read": int(s.ReadErrors), "write": int(s.WriteErrors), "timeout": int(s.Timeouts)})
	return r
}

var (
	wrkTotalRe   = regexp.MustCompile(`^(\d+) requests in ([0-9.]+)(us|ms|s|m|h)\b`)
	wrkPctRe     = regexp.MustCompile(`^(50|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s|m|h)$`)
	wrkNon2xxRe  = regexp.MustCompile(`^Non-2xx or 3xx responses: (\d+)$`)
	wrkSocketsRe = regexp.MustCompile(`^Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)$`)
)

// parseWrkText reads the summary wrk --latency prints.
func parseWrkText(out string) (toolResult, error) {
	var s wrkSummary
	var haveTotal, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := wrkTotalRe.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			d, err := wrkDuration(m[2], m[3])
			if err != nil {
				return toolResult{}, err
			}
			s.Requests, s.DurationUS, haveTotal = n, d.Microseconds(), true
		} else if m := wrkPctRe.FindStringSubmatch(line); m != nil {
			d, err := wrkDuration(m[2], m[3])
			if err != nil {
				return toolResult{}, err
			}
			if m[1] == "50" {
				s.P50US, have50 = float64(d)/float64(time.Microsecond), true
			} else {
				s.P99US, have99 = float64(d)/float64(time.Microsecond), true
			}
		} else if m := wrkNon2xxRe.FindStringSubmatch(line); m != nil {
			s.StatusErrors, _ = strconv.ParseUint(m[1], 10, 64)
		} else if m := wrkSocketsRe.FindStringSubmatch(line); m != nil {
			s.ConnectErrors, _ = strconv.ParseUint(m[1], 10, 64)
			s.ReadErrors, _ = strconv.ParseUint(m[2], 10, 64)
			s.WriteErrors, _ = strconv.ParseUint(m[3], 10, 64)
			s.Timeouts, _ = strconv.ParseUint(m[4], 10, 64)
		}
	}
	if !haveTotal {
		return toolResult{}, errors.New("wrk output: no 'N requests in T' line")
	}
	if s.Requests > 0 && (!have50 || !have99) {
		return toolResult{}, errors.New("wrk output: no 50%/99% latency (run with --latency)")
	}
	return s.result(), nil
}

func wrkDuration(num, unit string) (time.Duration, error) {
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("wrk duration %s%s: %w", num, unit, err)
	}
	mult := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}[unit]
	return time.Duration(f * float64(mult)), nil
}

// describeKinds is "kind×n, ..." for the non-zero kinds, most frequent first.
func describeKinds(kinds map[string]int) string {
	type kv struct {
		k string
		n int
	}
	var list []kv
	for k, n := range kinds {
		if n > 0 {
			list = append(list, kv{k, n})
		}
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].n != list[j].n {
			return list[i].n > list[j].n
		}
		return list[i].k < list[j].k
	})
	parts := make([]string, len(list))
	for i, e := range list {
		parts[i] = fmt.Sprintf("%s×%d", e.k, e.n)
	}
	return strings.Join(parts, ", ")
}
