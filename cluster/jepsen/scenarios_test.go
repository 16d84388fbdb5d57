package jepsen

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCIScenarios runs the four CI scenarios against the real binary,
// partition-leader-bridge over mutual TLS (CIRuns). JEPSEN_DURATION (e.g.
// 15s) shortens the fault time for a quick local run, JEPSEN_SCENARIOS
// picks scenarios (comma-separated; each keeps the transport CI gives it),
// JEPSEN_TLS (true or false) forces the transport of all, JEPSEN_SEED sets
// the seed, JEPSEN_OCTET the subnet (default 78) and JEPSEN_REPORT keeps the
// reports in that directory.
func TestCIScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("jepsen scenarios take minutes; skipped in -short mode")
	}
	if err := Prerequisites(); err != nil {
		t.Skip(err.Error())
	}
	duration := 60 * time.Second
	if v := os.Getenv("JEPSEN_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("JEPSEN_DURATION: %v", err)
		}
		duration = d
	}
	runs := CIRuns()
	if v := os.Getenv("JEPSEN_SCENARIOS"); v != "" {
		runs = nil
		for _, name := range strings.Split(v, ",") {
			runs = append(runs, CIRun{Scenario: name, TLS: CITLS(name)})
		}
	}
	if v := os.Getenv("JEPSEN_TLS"); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			t.Fatalf("JEPSEN_TLS: %v", err)
		}
		for i := range runs {
			runs[i].TLS = on
		}
	}
	octet := 78
	if v := os.Getenv("JEPSEN_OCTET"); v != "" {
		o, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("JEPSEN_OCTET: %v", err)
		}
		octet = o
	}
	seed := int64(1)
	if v := os.Getenv("JEPSEN_SEED"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("JEPSEN_SEED: %v", err)
		}
		seed = s
	}
	reports := os.Getenv("JEPSEN_REPORT")
	if reports == "" {
		dir, err := os.MkdirTemp("", "consent-jepsen-report-")
		if err != nil {
			t.Fatal(err)
		}
		reports = dir
		// Kept when something failed, so the HTML can be opened.
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("reports kept in %s (re-check with: go run ./cmd/consent-jepsen -check %s)", reports, reports)
				return
			}
			os.RemoveAll(reports)
		})
	}
	ctx := t.Context()
	bin, err := BuildBinary(ctx, t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	var results []Results
	for _, run := range runs {
		name := run.Scenario
		if run.TLS {
			name += "-tls"
		}
		t.Run(name, func(t *testing.T) {
			cfg := Config{Scenario: run.Scenario, Seed: seed, Duration: duration, Binary: bin, Octet: octet, TLS: run.TLS,
				ReportDir: reports + "/" + name + "-" + strconv.FormatInt(seed, 10),
				Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))}
			res, err := Run(context.WithoutCancel(ctx), cfg)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			results = append(results, res)
			t.Log(res.Summary())
			if res.Verdict != Pass {
				for _, c := range res.Checks {
					for _, p := range c.Problems {
						t.Errorf("%s: %s", c.Name, p)
					}
				}
				t.Errorf("%s: %s (report %s)", name, res.Verdict, cfg.ReportDir)
			}
		})
	}
	t.Log(Tally(results))
}

// testWriter sends the runner's log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
