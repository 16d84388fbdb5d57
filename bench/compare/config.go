package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is one comparison run. DefaultConfig holds the defaults; Validate
// checks a filled-in one.
type Config struct {
	Duration  time.Duration // each measured run
	Warmup    time.Duration // unmeasured run before each (op, protocol, concurrency) per system; 0 skips
	Reps      int           // measured runs per system per (op, protocol, concurrency)
	Conc      []int
	Ops       []string // write, read, stale
	Protocols []string // grpc, rest
	Target    string   // leader or follower
	OutDir    string   // "" means bench/results/<UTC timestamp>

	ConsentdBin, EtcdBin, GhzBin, WrkBin string
	EtcdProto                            string // our wire-compatible subset of etcd's KV API
	WorkDir                              string // parent of the clusters' data dirs; "" is the system temp dir

	Preload    int           // read keys per system
	WritePool  int           // patients consentd writes spread over
	ValueSize  int           // bytes of each etcd value
	MaxConns   int           // ghz connections: min(concurrency, MaxConns)
	WrkThreads int           // wrk threads: min(concurrency, WrkThreads)
	Timeout    time.Duration // per request, both tools
	Keep       bool          // keep data dirs and node logs

	Logger *slog.Logger
}

// The operations and protocols, in table order.
var (
	allOps       = []string{"write", "read", "stale"}
	allProtocols = []string{"grpc", "rest"}
)

// DefaultConfig is the comparison the issue asks for.
func DefaultConfig() Config {
	return Config{
		Duration:    10 * time.Second,
		Warmup:      2 * time.Second,
		Reps:        3,
		Conc:        []int{1, 16, 64, 256},
		Ops:         slices.Clone(allOps),
		Protocols:   slices.Clone(allProtocols),
		Target:      "leader",
		ConsentdBin: "consentd",
		EtcdBin:     "etcd",
		GhzBin:      "ghz",
		WrkBin:      "wrk",
		EtcdProto:   "bench/compare/etcdpb/rpc.proto",
		Preload:     1000,
		WritePool:   1000,
		ValueSize:   100,
		MaxConns:    16,
		WrkThreads:  2,
		Timeout:     10 * time.Second,
		Logger:      slog.New(slog.DiscardHandler),
	}
}

// Validate reports the first thing wrong with c, binaries included.
func (c Config) Validate() error {
	var errs []error
	if c.Duration < time.Second {
		errs = append(errs, fmt.Errorf("-duration %v: at least 1s", c.Duration))
	}
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("-warmup %v: negative", c.Warmup))
	}
	if c.Reps < 1 {
		errs = append(errs, fmt.Errorf("-reps %d: at least 1", c.Reps))
	}
	if len(c.Conc) == 0 {
		errs = append(errs, errors.New("-conc: at least one concurrency"))
	}
	for _, n := range c.Conc {
		if n < 1 || n > 4096 {
			errs = append(errs, fmt.Errorf("-conc %d: want 1..4096", n))
		}
	}
	if len(c.Ops) == 0 {
		errs = append(errs, errors.New("-ops: at least one operation"))
	}
	for _, op := range c.Ops {
		if !slices.Contains(allOps, op) {
			errs = append(errs, fmt.Errorf("-ops %q: want one of %s", op, joinStrings(allOps)))
		}
	}
	if len(c.Protocols) == 0 {
		errs = append(errs, errors.New("-protocols: at least one protocol"))
	}
	for _, p := range c.Protocols {
		if !slices.Contains(allProtocols, p) {
			errs = append(errs, fmt.Errorf("-protocols %q: want one of %s", p, joinStrings(allProtocols)))
		}
	}
	if c.Target != "leader" && c.Target != "follower" {
		errs = append(errs, fmt.Errorf("-target %q: want leader or follower", c.Target))
	}
	if c.Preload < 1 || c.WritePool < 1 {
		errs = append(errs, errors.New("-preload and -write-pool: at least 1"))
	}
	if c.ValueSize < 1 {
		errs = append(errs, errors.New("value size: at least 1 byte"))
	}
	if c.MaxConns < 1 {
		errs = append(errs, errors.New("-max-conns: at least 1"))
	}
	if c.WrkThreads < 1 {
		errs = append(errs, errors.New("-wrk-threads: at least 1"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("-timeout: positive"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("no logger"))
	}
	need := map[string]string{"-consentd": c.ConsentdBin, "-etcd": c.EtcdBin}
	if slices.Contains(c.Protocols, "grpc") {
		need["-ghz"] = c.GhzBin
	}
	if slices.Contains(c.Protocols, "rest") {
		need["-wrk"] = c.WrkBin
	}
	for _, flag := range sortedKeys(need) {
		if _, err := exec.LookPath(need[flag]); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", flag, need[flag], err))
		}
	}
	if slices.Contains(c.Protocols, "grpc") {
		if !fileExists(c.EtcdProto) {
			errs = append(errs, fmt.Errorf("-etcd-proto %s: not found (run from the repository root)", c.EtcdProto))
		}
	}
	return errors.Join(errs...)
}

// runs is how many times a load tool runs, warm-ups included.
func (c Config) runs() int {
	perSystem := c.Reps
	if c.Warmup > 0 {
		perSystem++
	}
	return len(c.Ops) * len(c.Protocols) * len(c.Conc) * 2 * perSystem
}

// estimate is how long the measuring takes: the runs themselves plus about
// 0.1s each to start the tool and read the revision (clusters' start-up
// and preload, a few seconds, not counted).
func (c Config) estimate() time.Duration {
	combos := time.Duration(len(c.Ops) * len(c.Protocols) * len(c.Conc) * 2)
	return combos*(time.Duration(c.Reps)*c.Duration+c.Warmup) + time.Duration(c.runs())*100*time.Millisecond
}

// ghzConns is how many gRPC connections ghz spreads conc workers over.
func (c Config) ghzConns(conc int) int { return min(conc, c.MaxConns) }

// wrkThreads is wrk's thread count: never more than its connections.
func (c Config) wrkThreads(conc int) int { return min(conc, c.WrkThreads) }

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func joinStrings(s []string) string { return strings.Join(s, ",") }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
