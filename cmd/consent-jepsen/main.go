// Command consent-jepsen runs consentd's Jepsen-style fault scenarios
// (package cluster/jepsen) and prints one summary line per scenario and a
// closing "N passed, N failed"; with -check it re-runs the checkers on
// saved reports without starting a cluster.
//
// As root, with ip and nft installed:
//
//	go run ./cmd/consent-jepsen -scenario pause-leader -duration 30s -report /tmp/jepsen -v
//	go run ./cmd/consent-jepsen -check /tmp/jepsen
//
// -tls runs the nodes and every client on mutual TLS, with certificates the
// binary's `consentd certs` makes for the run; -scenario ci runs the one CI
// scenario that CI runs on TLS that way too, the others on plain TCP.
//
// The long profile runs every scenario, membership changes included, on
// five nodes with a -race build and three seeds (`make jepsen-long`):
//
//	go run ./cmd/consent-jepsen -long -report /tmp/jepsen-long
//	go run ./cmd/consent-jepsen -scenario all -nodes 5 -race -seeds 3 -report /tmp/jepsen-long  # the same
//
// Each run writes REPORT/SCENARIO-SEED/ (SCENARIO-tls-SEED/ on TLS): history.jsonl (every operation,
// invoke then ok/fail/info), nemesis.jsonl (every fault applied and healed,
// with the leader at that moment), leaders.jsonl (status polls), final.json
// (what each node held after the final heal), n*.log (node logs),
// results.json (each checker's verdict and first violations) and
// history.html (Porcupine's view of every register, with nemesis windows
// and leader changes as annotations; open it in a browser).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lmc-consent/consentd/cluster/jepsen"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("consent-jepsen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		scenario = fs.String("scenario", "ci", "scenario name, comma-separated names, 'ci' (the four CI scenarios, each on the transport CI gives it) or 'all'; one of "+strings.Join(jepsen.ScenarioNames(), ", "))
		useTLS   = fs.Bool("tls", false, "run every scenario with mutual TLS between nodes and clients (default: plain TCP)")
		seed     = fs.Int64("seed", 0, "seed of the nemesis schedule and workload (0: from the clock)")
		seeds    = fs.Int("seeds", 1, "run each scenario with this many consecutive seeds")
		duration = fs.Duration("duration", 60*time.Second, "fault injection time per scenario, before the final heal")
		nodes    = fs.Int("nodes", 3, "cluster size")
		report   = fs.String("report", "jepsen-report", "report directory; each run gets SCENARIO-SEED inside it")
		check    = fs.String("check", "", "re-run the checkers on a saved report (a scenario folder, or a folder of them) and exit")
		bin      = fs.String("bin", "", "consentd binary (default: go build it)")
		race     = fs.Bool("race", false, "build consentd with -race (when -bin is not given)")
		octet    = fs.Int("octet", 77, "third octet of the private subnet 10.213.X.0/24 and of the namespace prefix")
		verbose  = fs.Bool("v", false, "log progress")
		long     = fs.Bool("long", false, "the long profile: -scenario all -nodes 5 -race -seeds 3 (every scenario, membership changes included); those flags, given explicitly, still win")
	)
	fs.Usage = func() { usage(fs) }
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if *long {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range longProfile {
			if !set[name] {
				fs.Set(name, v)
			}
		}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *check != "" {
		return checkReports(*check, stdout, stderr)
	}
	names, err := scenarioList(*scenario)
	if err != nil {
		fmt.Fprintln(stderr, "consent-jepsen:", err)
		return 2
	}
	if err := jepsen.Prerequisites(); err != nil {
		fmt.Fprintln(stderr, "consent-jepsen:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *bin == "" {
		dir, err := os.MkdirTemp("", "consent-jepsen-bin-")
		if err != nil {
			fmt.Fprintln(stderr, "consent-jepsen:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		if *bin, err = jepsen.BuildBinary(ctx, dir, *race); err != nil {
			fmt.Fprintln(stderr, "consent-jepsen:", err)
			return 1
		}
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano() % 1_000_000
	}
	var results []jepsen.Results
	for _, name := range names {
		for s := *seed; s < *seed+int64(*seeds); s++ {
			tls := *useTLS || *scenario == "ci" && jepsen.CITLS(name)
			cfg := jepsen.Config{Scenario: name, Seed: s, Duration: *duration, Nodes: *nodes, Binary: *bin, Octet: *octet, TLS: tls,
				ReportDir: filepath.Join(*report, reportName(name, s, tls)), Logger: logger}
			res, err := jepsen.Run(ctx, cfg)
			if err != nil {
				fmt.Fprintf(stdout, "ERROR %s: %v\n", reportName(name, s, tls), err)
				res = jepsen.Results{Scenario: name, Seed: s, TLS: tls, Verdict: jepsen.Fail}
			} else {
				fmt.Fprintf(stdout, "%s  (%s)\n", res.Summary(), cfg.ReportDir)
			}
			results = append(results, res)
			if ctx.Err() != nil {
				break
			}
		}
	}
	fmt.Fprintln(stdout, jepsen.Tally(results))
	if jepsen.Tally(results) != fmt.Sprintf("%d passed, 0 failed", len(results)) {
		return 1
	}
	return 0
}

// usage prints the flags, then every scenario with what it does.
func usage(fs *flag.FlagSet) {
	out := fs.Output()
	fmt.Fprintln(out, "Usage: consent-jepsen [flags]   (root, with ip and nft)")
	fs.PrintDefaults()
	fmt.Fprintln(out, "\nScenarios:")
	for _, name := range jepsen.ScenarioNames() {
		sc, _ := jepsen.LookupScenario(name)
		fmt.Fprintf(out, "  %-24s %s\n", name, sc.Description)
	}
	fmt.Fprintf(out, `
Testing the tester: a consentd built with -tags %s misbehaves in the way
%s names (a variant of internal/broken, e.g. NoBarrier); for example
  go build -tags %s -o /tmp/consentd-broken ./cmd/consentd
  %s=NoBarrier consent-jepsen -scenario targeted-leader-change -duration 20s -bin /tmp/consentd-broken
must end FAIL (linearizable).
`, jepsen.BrokenTag, jepsen.BrokenEnv, jepsen.BrokenTag, jepsen.BrokenEnv)
}

// reportName is a run's folder inside the report directory.
func reportName(scenario string, seed int64, tls bool) string {
	if tls {
		return fmt.Sprintf("%s-tls-%d", scenario, seed)
	}
	return fmt.Sprintf("%s-%d", scenario, seed)
}

// longProfile is what -long sets: every scenario on five nodes, raced,
// three seeds each.
var longProfile = map[string]string{"scenario": "all", "nodes": "5", "race": "true", "seeds": "3"}

func scenarioList(arg string) ([]string, error) {
	switch arg {
	case "ci":
		return jepsen.CIScenarios(), nil
	case "all":
		return jepsen.ScenarioNames(), nil
	}
	var out []string
	for _, n := range strings.Split(arg, ",") {
		n = strings.TrimSpace(n)
		if _, ok := jepsen.LookupScenario(n); !ok {
			return nil, fmt.Errorf("unknown scenario %q; have %s", n, strings.Join(jepsen.ScenarioNames(), ", "))
		}
		out = append(out, n)
	}
	return out, nil
}

// checkReports re-checks one scenario folder, or every scenario folder
// directly inside dir.
func checkReports(dir string, stdout, stderr io.Writer) int {
	dirs := []string{dir}
	if _, err := os.Stat(filepath.Join(dir, jepsen.FileRun)); err != nil {
		entries, err := os.ReadDir(dir)
		if err != nil {
			fmt.Fprintln(stderr, "consent-jepsen:", err)
			return 2
		}
		dirs = nil
		for _, e := range entries {
			if _, err := os.Stat(filepath.Join(dir, e.Name(), jepsen.FileRun)); e.IsDir() && err == nil {
				dirs = append(dirs, filepath.Join(dir, e.Name()))
			}
		}
		if len(dirs) == 0 {
			fmt.Fprintf(stderr, "consent-jepsen: no report (%s) in %s or its folders\n", jepsen.FileRun, dir)
			return 2
		}
	}
	var results []jepsen.Results
	for _, d := range dirs {
		res, err := jepsen.CheckDir(d)
		if err != nil {
			fmt.Fprintf(stdout, "ERROR %s: %v\n", d, err)
			res.Verdict = jepsen.Fail
		} else {
			fmt.Fprintf(stdout, "%s  (%s)\n", res.Summary(), d)
			for _, c := range res.Checks {
				for _, p := range c.Problems {
					fmt.Fprintf(stdout, "  %s: %s\n", c.Name, p)
				}
			}
		}
		results = append(results, res)
	}
	fmt.Fprintln(stdout, jepsen.Tally(results))
	if jepsen.Tally(results) != fmt.Sprintf("%d passed, 0 failed", len(results)) {
		return 1
	}
	return 0
}
