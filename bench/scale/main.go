// Command scale measures consentd at national scale: it starts a 3-node
// cluster of real consentd processes on 127.0.0.1, loads a register of
// realistic decisions through the gRPC API, and reports the load rate, disk
// and memory per node, consents:check latency on the loaded register, and
// how long a follower restart, a wiped follower's catch-up and a full cold
// restart take. Every check answer is compared with what was loaded.
//
//	go build -o /tmp/consentd ./cmd/consentd
//	go run ./bench/scale -consentd /tmp/consentd -patients 1000000
//
// See bench/README.md for figures and what they mean.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lmc-consent/consentd/bench/internal/procstat"
)

// Config is one scale run.
type Config struct {
	Consentd string        // binary
	Patients int           // register size
	Conc     int           // concurrent writers
	Batch    int           // decisions per write call; 1 is one RecordDecision each
	Idle     time.Duration // wait before the idle memory reading
	// WaitSnapshot bounds the wait after the load until no node has a
	// snapshot to take (a node snapshots once its log goes quiet) or to
	// finish writing, so the checks and restarts measure the settled
	// register; 0 skips the wait.
	WaitSnapshot time.Duration
	Checks       int    // consents:check calls per node measured
	CheckSize    int    // numbers per consents:check call
	Dir          string // data dirs; "" is a temporary dir removed at the end
	Keep         bool
	PortBase     int
	NodeFlags    []string
	Seed         uint64
	MemLimit     int64 // bytes per node; 0 is no cap
	// ChecksOnly starts the cluster kept in Dir by an earlier run of the
	// same Patients and measures only the checks: the same register, read
	// by another build or another setting.
	ChecksOnly bool
	// WipeOnly starts the cluster kept in Dir and times only a wiped
	// follower's catch-up: the same snapshot and log after it, installed
	// by another build.
	WipeOnly bool
	// DropCaches empties the page cache before the kept cluster starts
	// (-checks-only, -wipe-only), so that every build starts from the same
	// (cold) state.
	DropCaches bool
}

// Validate names the first wrong flag.
func (c Config) Validate() error {
	var errs []error
	if c.Consentd == "" {
		errs = append(errs, errors.New("-consentd: required (go build -o /tmp/consentd ./cmd/consentd)"))
	} else if _, err := os.Stat(c.Consentd); err != nil {
		errs = append(errs, fmt.Errorf("-consentd: %w", err))
	}
	if c.Patients < 1 || c.Patients > 50_000_000 {
		errs = append(errs, fmt.Errorf("-patients %d: want 1..50000000", c.Patients))
	}
	if c.Conc < 1 || c.Conc > 4096 {
		errs = append(errs, fmt.Errorf("-conc %d: want 1..4096", c.Conc))
	}
	if c.Batch < 1 || c.Batch > 1000 {
		errs = append(errs, fmt.Errorf("-batch %d: want 1..1000", c.Batch))
	}
	if c.Checks < 1 || c.CheckSize < 1 || c.CheckSize > 1000 {
		errs = append(errs, fmt.Errorf("-checks %d -check-size %d: want at least one call of 1..1000 numbers", c.Checks, c.CheckSize))
	}
	if c.WaitSnapshot < 0 {
		errs = append(errs, fmt.Errorf("-wait-snapshot %v: negative", c.WaitSnapshot))
	}
	if c.Idle < 0 {
		errs = append(errs, fmt.Errorf("-idle %v: negative", c.Idle))
	}
	if c.MemLimit < 0 || (c.MemLimit > 0 && c.MemLimit < 32<<20) {
		errs = append(errs, fmt.Errorf("-memory-limit-mib %d: 0 (no cap) or at least 32", c.MemLimit>>20))
	}
	if c.ChecksOnly && c.Dir == "" {
		errs = append(errs, errors.New("-checks-only: needs the -dir an earlier run kept (-keep)"))
	}
	if c.WipeOnly && (c.Dir == "" || c.ChecksOnly) {
		errs = append(errs, errors.New("-wipe-only: needs the -dir an earlier run kept (-keep), and not -checks-only"))
	}
	if c.DropCaches && (!(c.ChecksOnly || c.WipeOnly) || os.Geteuid() != 0) {
		errs = append(errs, errors.New("-drop-caches: only with -checks-only or -wipe-only, as root"))
	}
	if c.PortBase < 1024 || c.PortBase > 65000 {
		errs = append(errs, fmt.Errorf("-port-base %d: want 1024..65000", c.PortBase))
	}
	return errors.Join(errs...)
}

func main() {
	cfg := Config{Patients: 1_000_000, Conc: 8, Batch: 500, Idle: 30 * time.Second, WaitSnapshot: 10 * time.Minute,
		Checks: 200, CheckSize: 1000,
		PortBase: 27000, Seed: 1}
	var nodeFlags string
	flag.StringVar(&cfg.Consentd, "consentd", "", "consentd binary (required)")
	flag.IntVar(&cfg.Patients, "patients", cfg.Patients, "patients to load (about 1.3 decisions each)")
	flag.IntVar(&cfg.Conc, "conc", cfg.Conc, "concurrent write calls")
	flag.IntVar(&cfg.Batch, "batch", cfg.Batch, "decisions per write call (1: RecordDecision; more: RecordDecisions)")
	flag.DurationVar(&cfg.Idle, "idle", cfg.Idle, "quiet time after the load before the idle memory reading")
	flag.DurationVar(&cfg.WaitSnapshot, "wait-snapshot", cfg.WaitSnapshot, "after the idle reading, wait up to this long until every node has less than 64 MiB of log since its last snapshot (consentd snapshots a quiet log, --snapshot-when-quiet), so checks and restarts meet a settled register; 0 skips the wait (builds before it)")
	flag.IntVar(&cfg.Checks, "checks", cfg.Checks, "consents:check calls timed on the leader and on a follower")
	flag.IntVar(&cfg.CheckSize, "check-size", cfg.CheckSize, "NHS numbers per consents:check call")
	flag.StringVar(&cfg.Dir, "dir", "", "where the nodes keep their data (default: a temporary dir, removed afterwards)")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the data dir")
	flag.IntVar(&cfg.PortBase, "port-base", cfg.PortBase, "raft ports from here, gRPC +100, REST +200")
	flag.StringVar(&nodeFlags, "node-flags", "", "extra consentd flags, space-separated (e.g. \"--snapshot-threshold 16384\")")
	flag.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the patients checked")
	flag.BoolVar(&cfg.ChecksOnly, "checks-only", false, "start the cluster an earlier run kept in -dir (same -patients) and only time checks")
	flag.BoolVar(&cfg.WipeOnly, "wipe-only", false, "start the cluster an earlier run kept in -dir and only time a wiped follower's catch-up (it wipes that follower's data)")
	flag.BoolVar(&cfg.DropCaches, "drop-caches", false, "with -checks-only or -wipe-only: empty the page cache first, so every build starts cold (root)")
	memMiB := flag.Int64("memory-limit-mib", 0, "cap each node's memory (page cache included) with a cgroup, to show the register on a small node (root)")
	flag.Parse()
	cfg.MemLimit = *memMiB << 20
	cfg.NodeFlags = strings.Fields(nodeFlags)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, cfg, os.Stdout); err != nil {
		log.Error("scale run failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, cfg Config, out io.Writer) (err error) {
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "consentd-scale-"); err != nil {
			return err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	nodes := newCluster(cfg.Consentd, dir, 3, cfg.PortBase, cfg.NodeFlags)
	for _, nd := range nodes {
		nd.memLimit = cfg.MemLimit
	}
	defer func() {
		for _, nd := range nodes {
			nd.stop(30 * time.Second)
		}
		if !cfg.Keep && cfg.Dir == "" {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintf(out, "data kept in %s\n", dir)
		}
	}()
	hc := &http.Client{Timeout: 30 * time.Second}
	p := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }

	if cfg.ChecksOnly || cfg.WipeOnly {
		return kept(ctx, hc, p, cfg, nodes)
	}
	p("consentd scale run: %d patients, %d writers, batch %d, data in %s", cfg.Patients, cfg.Conc, cfg.Batch, dir)
	if cfg.MemLimit > 0 {
		p("each node capped at %s of memory, page cache included (cgroup)", mib(cfg.MemLimit))
	}
	if err := nodes[0].start(); err != nil {
		return err
	}
	if _, err := waitReady(ctx, hc, time.Minute, nodes[0]); err != nil {
		return fmt.Errorf("n1: %w", err)
	}
	for _, nd := range nodes[1:] {
		if err := nd.start(); err != nil {
			return err
		}
	}
	if _, err := waitReady(ctx, hc, time.Minute, nodes...); err != nil {
		return err
	}
	ld, err := leader(ctx, hc, nodes)
	if err != nil {
		return err
	}
	nhs := patients(cfg.Patients)
	cpu0 := totalCPU(nodes)
	log.Info("loading", "patients", len(nhs), "through", ld.id)
	res, err := load(ctx, log, ld.grpc, nhs, cfg.Conc, cfg.Batch)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	cpu := totalCPU(nodes) - cpu0
	p("\nload: %d decisions for %d patients in %v: %.0f decisions/s, %.0f patients/s; %d retries; CPU %.2f s per 1,000 decisions (3 nodes)",
		res.Decisions, len(nhs), res.Elapsed.Round(time.Second), float64(res.Decisions)/res.Elapsed.Seconds(),
		float64(len(nhs))/res.Elapsed.Seconds(), res.Retries, cpu/float64(res.Decisions)*1000)

	// Followers catch up before sizes and memory are read.
	if err := caughtUp(ctx, hc, nodes, 5*time.Minute); err != nil {
		return err
	}
	loadEnd := time.Now()
	loaded, err := ld.status(ctx, hc)
	if err != nil {
		return err
	}
	p("\nmemory after load:")
	printMemory(out, nodes)
	log.Info("idle", "for", cfg.Idle)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(cfg.Idle):
	}
	p("memory after %v idle:", cfg.Idle)
	printMemory(out, nodes)
	if cfg.WaitSnapshot > 0 {
		sts, err := settled(ctx, hc, nodes, cfg.WaitSnapshot)
		if err != nil {
			p("\nsnapshots not settled: %v", err)
		} else {
			p("\nsnapshots settled %v after the load ended (index %d):", time.Since(loadEnd).Round(time.Second), loaded.commit())
		}
		for i, st := range sts {
			p("  %s  last snapshot at index %d, %s of log after it", nodes[i].id, st.LastSnapshot, mib(int64(st.LogBytesSinceSnapshot)))
		}
	}
	p("\ndisk per node (allocated blocks):")
	for _, nd := range nodes {
		d, err := nd.diskUsage()
		if err != nil {
			return err
		}
		p("  %s  total %s  register %s  raft log+snapshots %s  access log %s  other %s  (%.0f B per decision)",
			nd.id, mib(d.Total), mib(d.Register), mib(d.Raft), mib(d.AccessLog), mib(d.Other), float64(d.Total)/float64(res.Decisions))
	}

	follower := followerOf(nodes, ld)
	rng := rand.New(rand.NewPCG(cfg.Seed, 7))
	if err := timeChecks(ctx, hc, p, cfg, ld, follower, nhs, rng); err != nil {
		return err
	}

	// A follower restarted on its data: ready means it serves a
	// linearizable read again.
	if err := follower.stop(time.Minute); err != nil {
		return err
	}
	start := time.Now()
	if err := follower.start(); err != nil {
		return err
	}
	if _, err := waitReady(ctx, hc, 5*time.Minute, follower); err != nil {
		return fmt.Errorf("follower restart: %w", err)
	}
	p("\nfollower %s restart (SIGTERM, start, until /readyz is 200): %v", follower.id, time.Since(start).Round(time.Millisecond))

	if err := wipeFollower(ctx, hc, p, nodes, follower); err != nil {
		return err
	}
	if l, err := checks(ctx, hc, follower, nhs, max(cfg.Checks/10, 1), cfg.CheckSize, rng); err != nil {
		return fmt.Errorf("wiped follower after catch-up: %w", err)
	} else {
		p("  its register answers %d checks of %d numbers correctly", l.N, cfg.CheckSize)
	}

	// Every node stopped, then all started together.
	for _, nd := range nodes {
		if err := nd.stop(time.Minute); err != nil {
			return err
		}
	}
	start = time.Now()
	for _, nd := range nodes {
		if err := nd.start(); err != nil {
			return err
		}
	}
	if _, err := waitReady(ctx, hc, 10*time.Minute, nodes...); err != nil {
		return fmt.Errorf("cold restart: %w", err)
	}
	p("cold restart of all 3 nodes (until every node is ready): %v", time.Since(start).Round(time.Millisecond))
	if ld, err = leader(ctx, hc, nodes); err != nil {
		return err
	}
	if l, err := checks(ctx, hc, ld, nhs, max(cfg.Checks/10, 1), cfg.CheckSize, rng); err != nil {
		return fmt.Errorf("after cold restart: %w", err)
	} else {
		p("  after it, %s answers %d checks of %d numbers correctly; %s", ld.id, l.N, cfg.CheckSize, l)
	}
	return nil
}

// followerOf is a node other than the leader.
func followerOf(nodes []*node, ld *node) *node {
	for _, nd := range nodes {
		if nd != ld {
			return nd
		}
	}
	return nil
}

// timeChecks times cfg.Checks consents:check calls on the leader and then
// on a follower, each after a tenth as many to warm up.
func timeChecks(ctx context.Context, hc *http.Client, p func(string, ...any), cfg Config, ld, follower *node, nhs []string, rng *rand.Rand) error {
	p("\nconsents:check of %d numbers, linearizable, one call at a time (every answer checked against the load):", cfg.CheckSize)
	for _, nd := range []*node{ld, follower} {
		role := "leader  "
		if nd == follower {
			role = "follower"
		}
		if _, err := checks(ctx, hc, nd, nhs, max(cfg.Checks/10, 1), cfg.CheckSize, rng); err != nil { // warm-up
			return err
		}
		l, err := checks(ctx, hc, nd, nhs, cfg.Checks, cfg.CheckSize, rng)
		if err != nil {
			return err
		}
		p("  %s %s  %s", role, nd.id, l)
	}
	return nil
}

// wipeFollower stops follower, deletes its data and starts it again under
// the same id: it gets the leader's snapshot and the log after it. The
// time is split where the follower's register first shows an index (the
// snapshot restored), so the replay of the log after it is seen apart.
func wipeFollower(ctx context.Context, hc *http.Client, p func(string, ...any), nodes []*node, follower *node) error {
	if err := follower.stop(time.Minute); err != nil {
		return err
	}
	if err := os.RemoveAll(follower.dir); err != nil {
		return err
	}
	// A node that lost its data joins again; started as it first was with
	// --bootstrap (n1), it would found a one-node cluster of its own and
	// lead it until the real leader's heartbeat reached it.
	for _, nd := range nodes {
		if nd != follower {
			follower.joinThrough = nd.grpc
			break
		}
	}
	start := time.Now()
	if err := follower.start(); err != nil {
		return err
	}
	var restored time.Duration
	deadline := start.Add(10 * time.Minute)
	for {
		if st, err := follower.status(ctx, hc); err == nil && st.applied() > 0 {
			restored = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			return errors.New("wiped follower: no snapshot restored within 10m")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := waitReady(ctx, hc, time.Until(deadline), follower); err != nil {
		return fmt.Errorf("wiped follower: %w", err)
	}
	if err := caughtUp(ctx, hc, nodes, time.Until(deadline)); err != nil {
		return err
	}
	total := time.Since(start)
	p("wiped follower %s catch-up (start on an empty dir, until ready and applied to the leader's commit index): %v",
		follower.id, total.Round(time.Millisecond))
	// Without a snapshot yet (a small load) the first index is the log's.
	p("  register first at an index (the snapshot received and restored) after %v, the log after it applied in %v",
		restored.Round(100*time.Millisecond), (total - restored).Round(100*time.Millisecond))
	return nil
}

// kept starts the three nodes on the data an earlier run kept and times
// the checks (-checks-only) or a wiped follower's catch-up (-wipe-only), as
// that run did.
func kept(ctx context.Context, hc *http.Client, p func(string, ...any), cfg Config, nodes []*node) error {
	for _, nd := range nodes {
		if _, err := os.Stat(filepath.Join(nd.dir, "register.db")); err != nil {
			return fmt.Errorf("%s has no register from an earlier run (-keep): %w", nd.id, err)
		}
	}
	what := "checks"
	if cfg.WipeOnly {
		what = "wiped follower"
	}
	p("consentd scale %s: the %d-patient register kept in %s, %s", what, cfg.Patients, filepath.Dir(nodes[0].dir), cfg.Consentd)
	if cfg.DropCaches {
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			return fmt.Errorf("-drop-caches: %w", err)
		}
		p("page cache emptied before the nodes started")
	}
	start := time.Now()
	for _, nd := range nodes {
		if err := nd.start(); err != nil {
			return err
		}
	}
	// Ready is enough: a check is linearizable (and builds before dfb6c33
	// never show the new leader's no-op entry applied, so caughtUp would
	// wait for ever on them).
	if _, err := waitReady(ctx, hc, 10*time.Minute, nodes...); err != nil {
		return err
	}
	p("cluster ready in %v", time.Since(start).Round(time.Millisecond))
	ld, err := leader(ctx, hc, nodes)
	if err != nil {
		return err
	}
	if cfg.WipeOnly {
		return wipeFollower(ctx, hc, p, nodes, followerOf(nodes, ld))
	}
	return timeChecks(ctx, hc, p, cfg, ld, followerOf(nodes, ld), patients(cfg.Patients), rand.New(rand.NewPCG(cfg.Seed, 7)))
}

// caughtUp waits until every node has applied the leader's commit index.
func caughtUp(ctx context.Context, hc *http.Client, nodes []*node, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ld, err := leader(ctx, hc, nodes)
		if err == nil {
			st, err := ld.status(ctx, hc)
			if err == nil {
				behind := 0
				for _, nd := range nodes {
					if s, err := nd.status(ctx, hc); err != nil || s.applied() < st.commit() {
						behind++
					}
				}
				if behind == 0 {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes not caught up within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// settledLogBytes is consentd's default --snapshot-log-mib: with less log
// than that since its last snapshot a node takes no further snapshot.
const settledLogBytes = 64 << 20

// settled waits until no node has a snapshot to take or to finish: each
// has less than settledLogBytes of log since its last one and none being
// written. It returns what each reported last.
func settled(ctx context.Context, hc *http.Client, nodes []*node, timeout time.Duration) ([]raftStats, error) {
	deadline := time.Now().Add(timeout)
	for {
		sts := make([]raftStats, len(nodes))
		pending := 0
		for i, nd := range nodes {
			st, err := nd.raftStats(ctx, hc)
			if err != nil || st.LogBytesSinceSnapshot >= settledLogBytes || st.SnapshotsBeingWritten > 0 {
				pending++
			}
			sts[i] = st
		}
		if pending == 0 {
			return sts, nil
		}
		if time.Now().After(deadline) {
			return sts, fmt.Errorf("%d of %d nodes still have %s or more of log to snapshot, or a snapshot being written, after %v", pending, len(nodes), mib(settledLogBytes), timeout)
		}
		select {
		case <-ctx.Done():
			return sts, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// totalCPU is the nodes' user+system CPU seconds so far.
func totalCPU(nodes []*node) float64 {
	var ticks uint64
	for _, nd := range nodes {
		ticks += nd.cpuTicks()
	}
	return float64(ticks) / procstat.ClockTicks()
}

func printMemory(out io.Writer, nodes []*node) {
	for _, nd := range nodes {
		m, err := nd.memory()
		if err != nil {
			fmt.Fprintf(out, "  %s  %v\n", nd.id, err)
			continue
		}
		fmt.Fprintf(out, "  %s  RSS %s (anonymous %s, file-backed %s)\n", nd.id, mib(m.RSS), mib(m.Anon), mib(m.File))
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
