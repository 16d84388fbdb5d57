package jepsen

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lmc-consent/consentd/internal/broken"
)

// brokenRow is one deliberately broken variant, the run most likely to
// expose it, and the checkers whose failure shows that bug (a failure of any
// other checker alone is not counted as catching it).
type brokenRow struct {
	variant  broken.Variant
	scenario string
	catchers []string
	// aim scores how squarely step i of a seed's schedule hits the bug;
	// the row runs the best-scoring seeds (nil: seeds 1, 2, 3).
	aim func(seed int64, i int, st Step) int
	// tune adjusts the run's config, for a row that needs more pressure.
	tune func(*Config)
	// unreliable, when set, says why the suite does not yet catch this
	// variant every time; the row then runs only when JEPSEN_BROKEN names
	// it, so CI is not red at random, and the gap is reported, not hidden.
	unreliable string
}

// brokenSeeds is how many seeds a variant gets to be caught.
const brokenSeeds = 3

// seedsFor picks the seeds a row runs: without aim 1..brokenSeeds, with it
// the brokenSeeds seeds of 1..200 whose schedules score highest (ties to
// the lower seed), from the same schedule generator Run uses.
func (row brokenRow) seedsFor(cfg Config) []int64 {
	var seeds []int64
	for s := int64(1); s <= brokenSeeds; s++ {
		seeds = append(seeds, s)
	}
	if row.aim == nil {
		return seeds
	}
	sc, _ := LookupScenario(row.scenario)
	cfg = cfg.WithDefaults()
	type scored struct {
		seed  int64
		score int
	}
	var all []scored
	for s := int64(1); s <= 200; s++ {
		total := 0
		for i, st := range GenerateSchedule(s, sc, ScheduleConfig{Duration: cfg.Duration, ElectionTimeout: cfg.ElectionTimeout}) {
			total += row.aim(s, i, st)
		}
		all = append(all, scored{s, total})
	}
	slices.SortStableFunc(all, func(a, b scored) int { return b.score - a.score })
	for i := range seeds {
		seeds[i] = all[i].seed
	}
	return seeds
}

// brokenRows pairs every variant with the scenario and schedule most likely
// to expose it. The seeds are tried in order; the first whose verdict is
// Fail through an expected checker catches the variant.
func brokenRows() []brokenRow {
	return []brokenRow{
		// Both read variants are caught by the new-leader-reads trap, which
		// every seed of targeted-leader-change sets first: a leader elected
		// while the previous one's last acknowledged write is, as far as it
		// knows, uncommitted, and whose first entry cannot commit. Skipping
		// the barrier (NoBarrier) or the whole read index (LocalLeaderRead)
		// then serves reads that miss that write for seconds, not the few
		// milliseconds a random schedule would have to land in.
		{variant: broken.LocalLeaderRead, scenario: "targeted-leader-change",
			catchers: []string{"linearizable", "history-reads"}},
		{variant: broken.NoBarrier, scenario: "targeted-leader-change",
			catchers: []string{"linearizable", "history-reads"}},
		{variant: broken.AckBeforeCommit, scenario: "partition-leader-bridge",
			catchers: []string{"linearizable", "no-lost-writes", "history-reads"}},
		{variant: broken.UnknownAsFailure, scenario: "partition-oneway",
			// Aim at a leader that hears nobody: it replicates entries,
			// steps down without their acknowledgements and reports them
			// failed; the next leader commits them.
			aim: func(seed int64, i int, st Step) int {
				if st.Fault != PartitionOneWay {
					return 0
				}
				g, _ := PlanPartition(st.Fault, []string{"n1", "n2", "n3"}, "n1", stepRand(seed, i))
				return b2i(len(g["n1"]) > 0)
			},
			catchers: []string{"no-aborted-reads", "linearizable", "no-lost-writes", "history-reads"}},
		{variant: broken.RetryWithoutDedup, scenario: "loss",
			// Lost packets delay a forwarded write past the retry timeout
			// while it still commits; the retry commits it again.
			aim: func(_ int64, _ int, st Step) int {
				return st.LossPercent * int(st.Hold/time.Second)
			},
			catchers: []string{"no-lost-writes", "linearizable", "history-reads"}},
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestSuiteCatchesBrokenVariants tests the tester: consentd built with the
// consentd_broken tag runs each deliberately broken variant, and the suite
// must fail it, through a checker that shows that bug, within a few seeds.
// It runs by default (about 3 minutes; not in -short mode, and only as root
// with ip and nft); JEPSEN_BROKEN names the variants to run
// (comma-separated; "all" is every one, "none" skips the test),
// JEPSEN_DURATION changes the fault time (default 20s), JEPSEN_OCTET the
// subnet (default 79) and JEPSEN_REPORT keeps the reports there.
func TestSuiteCatchesBrokenVariants(t *testing.T) {
	if testing.Short() {
		t.Skip("broken-variant scenarios take minutes; skipped in -short mode")
	}
	if err := Prerequisites(); err != nil {
		t.Skip("testing the tester skipped: " + err.Error())
	}
	if BrokenEnv != broken.EnvVar {
		t.Fatalf("BrokenEnv is %q, internal/broken reads %q", BrokenEnv, broken.EnvVar)
	}
	duration := 20 * time.Second
	if v := os.Getenv("JEPSEN_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("JEPSEN_DURATION: %v", err)
		}
		duration = d
	}
	// On by default: every variant is caught on the first seed it runs, also
	// with other Jepsen runs sharing two cores (the read variants by a trap
	// that does not depend on timing luck), so a red run means the suite
	// lost its grip on a bug.
	var only []string
	switch v := os.Getenv("JEPSEN_BROKEN"); v {
	case "", "all":
	case "none":
		t.Skip("JEPSEN_BROKEN=none")
	default:
		only = strings.Split(v, ",")
	}
	octet := 79
	if v := os.Getenv("JEPSEN_OCTET"); v != "" {
		o, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("JEPSEN_OCTET: %v", err)
		}
		octet = o
	}
	reports := os.Getenv("JEPSEN_REPORT")
	if reports == "" {
		dir, err := os.MkdirTemp("", "consent-jepsen-broken-")
		if err != nil {
			t.Fatal(err)
		}
		reports = dir
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("reports kept in %s", reports)
				return
			}
			os.RemoveAll(reports)
		})
	}
	ctx := t.Context()
	bin, err := BuildBinaryTags(ctx, t.TempDir(), false, BrokenTag)
	if err != nil {
		t.Fatal(err)
	}
	rows := brokenRows()
	if len(rows) != len(broken.Variants()) {
		t.Errorf("%d rows for %d variants: every variant needs a row", len(rows), len(broken.Variants()))
	}
	var caught []string
	for _, row := range rows {
		if only != nil && !slices.Contains(only, string(row.variant)) {
			continue
		}
		t.Run(string(row.variant), func(t *testing.T) {
			if row.unreliable != "" && !slices.Contains(only, string(row.variant)) {
				t.Skipf("KNOWN GAP: %s is not caught reliably yet (%s); run it with JEPSEN_BROKEN=%s", row.variant, row.unreliable, row.variant)
			}
			// Every node the runner starts inherits the variant.
			t.Setenv(BrokenEnv, string(row.variant))
			started := time.Now()
			base := Config{Scenario: row.scenario, Duration: duration, Binary: bin, Octet: octet, Quiet: 6 * time.Second,
				Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
			if row.tune != nil {
				row.tune(&base)
			}
			seeds := row.seedsFor(base)
			t.Logf("%s on %s, seeds %v", row.variant, row.scenario, seeds)
			for _, seed := range seeds {
				cfg := base
				cfg.Seed = seed
				cfg.ReportDir = reports + "/" + string(row.variant) + "-" + row.scenario + "-" + strconv.FormatInt(seed, 10)
				runStart := time.Now()
				res, err := Run(context.WithoutCancel(ctx), cfg)
				if err != nil {
					t.Fatalf("seed %d: run: %v", seed, err)
				}
				t.Logf("seed %d (%v): %s", seed, time.Since(runStart).Round(time.Second), res.Summary())
				var by, other []string
				for _, c := range res.Checks {
					if c.Verdict != Fail {
						continue
					}
					if slices.Contains(row.catchers, c.Name) {
						by = append(by, c.Name)
					} else {
						other = append(other, c.Name)
					}
					for i, p := range c.Problems {
						if i == 3 {
							t.Logf("  %s: ... (%d more)", c.Name, len(c.Problems)-3+c.Omitted)
							break
						}
						t.Logf("  %s: %s", c.Name, p)
					}
				}
				if len(other) > 0 {
					t.Logf("seed %d also failed checks that do not show this bug: %s", seed, strings.Join(other, ", "))
				}
				if res.Verdict == Fail && len(by) > 0 {
					line := string(row.variant) + " caught by " + strings.Join(by, ", ") + " on seed " + strconv.FormatInt(seed, 10) +
						" (" + row.scenario + ", " + time.Since(started).Round(time.Second).String() + ")"
					t.Log(line)
					caught = append(caught, line)
					return
				}
			}
			t.Errorf("%s was not caught by %v on %s with seeds %v: the suite does not detect this bug (reports in %s)",
				row.variant, row.catchers, row.scenario, seeds, reports)
		})
	}
	for _, line := range caught {
		t.Log(line)
	}
}
