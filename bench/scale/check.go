package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"
)

// latencies summarises timed calls.
type latencies struct {
	N             int
	P50, P99, Max time.Duration
}

func summarise(d []time.Duration) latencies {
	if len(d) == 0 {
		return latencies{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return latencies{N: len(s), P50: at(0.50), P99: at(0.99), Max: s[len(s)-1]}
}

func (l latencies) String() string {
	return fmt.Sprintf("p50 %v  p99 %v  max %v  (%d calls)", l.P50.Round(10*time.Microsecond),
		l.P99.Round(10*time.Microsecond), l.Max.Round(10*time.Microsecond), l.N)
}

type checkResponse struct {
	Results []struct {
		NhsNumber string `json:"nhsNumber"`
		State     string `json:"state"`
	} `json:"results"`
}

// checks times rounds of POST /v1/consents:check of batch random loaded
// patients (linearizable, the default) on nd, one call at a time, as a
// practice system checking a list before an upload would. Every answer is
// compared with the plan: a wrong state is an error, not a figure.
func checks(ctx context.Context, hc *http.Client, nd *node, nhs []string, rounds, batch int, rng *rand.Rand) (latencies, error) {
	var times []time.Duration
	for range rounds {
		idx := make([]int, 0, batch)
		numbers := make([]string, 0, batch)
		seen := map[int]bool{}
		for len(idx) < min(batch, len(nhs)) {
			if p := rng.IntN(len(nhs)); !seen[p] {
				seen[p] = true
				idx, numbers = append(idx, p), append(numbers, nhs[p])
			}
		}
		body, _ := json.Marshal(map[string]any{"kind": "scr", "nhsNumbers": numbers})
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+nd.http+"/v1/consents:check", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			return summarise(times), err
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		elapsed := time.Since(start)
		if err != nil {
			return summarise(times), err
		}
		if resp.StatusCode != 200 {
			return summarise(times), fmt.Errorf("%s consents:check: HTTP %d: %s", nd.id, resp.StatusCode, raw)
		}
		var cr checkResponse
		if err := json.Unmarshal(raw, &cr); err != nil {
			return summarise(times), err
		}
		if len(cr.Results) != len(numbers) {
			return summarise(times), fmt.Errorf("%s consents:check: %d results for %d numbers", nd.id, len(cr.Results), len(numbers))
		}
		for i, r := range cr.Results {
			if want := expectedSCR(idx[i]); r.NhsNumber != numbers[i] || r.State != want {
				return summarise(times), fmt.Errorf("%s consents:check: %s is %q, want %s %q: an acknowledged decision is missing",
					nd.id, r.NhsNumber, r.State, numbers[i], want)
			}
		}
		times = append(times, elapsed)
	}
	return summarise(times), nil
}
