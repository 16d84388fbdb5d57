// Command compare measures consentd side by side with etcd on one machine:
// it owns starting a 3-node cluster of each (real processes, plain TCP,
// default durability), preloading read keys, driving both with the same
// neutral load tools (ghz for gRPC, wrk with a Lua script for REST/JSON),
// alternating consentd and etcd run by run, and reporting medians and the
// consentd/etcd ratio of each figure as a table, CSV and Markdown.
//
// It is run by bench/compare.sh, which installs the tools and builds
// consentd; see bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg := DefaultConfig()
	var conc, ops, protocols, logLevel string
	flag.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each measured run")
	flag.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "unmeasured run per system before each (op, protocol, concurrency); 0 skips it")
	flag.IntVar(&cfg.Reps, "reps", cfg.Reps, "measured runs per system for each (op, protocol, concurrency)")
	flag.StringVar(&conc, "conc", joinInts(cfg.Conc), "comma-separated concurrencies")
	flag.StringVar(&ops, "ops", joinStrings(cfg.Ops), "comma-separated operations: write, read (linearizable), stale (stale / serializable)")
	flag.StringVar(&protocols, "protocols", joinStrings(cfg.Protocols), "comma-separated protocols: grpc, rest")
	flag.StringVar(&cfg.Target, "target", cfg.Target, "which node the load tools send to: leader or follower")
	flag.StringVar(&cfg.OutDir, "out", "", "results directory (default bench/results/<UTC timestamp>)")
	flag.StringVar(&cfg.ConsentdBin, "consentd", cfg.ConsentdBin, "consentd binary")
	flag.StringVar(&cfg.EtcdBin, "etcd", cfg.EtcdBin, "etcd binary")
	flag.StringVar(&cfg.GhzBin, "ghz", cfg.GhzBin, "ghz binary")
	flag.StringVar(&cfg.WrkBin, "wrk", cfg.WrkBin, "wrk binary")
	flag.StringVar(&cfg.EtcdProto, "etcd-proto", cfg.EtcdProto, "the wire-compatible etcd KV subset, for ghz")
	flag.StringVar(&cfg.WorkDir, "workdir", cfg.WorkDir, "where the clusters' temporary data directories go (default: the system temp dir)")
	flag.IntVar(&cfg.Preload, "preload", cfg.Preload, "patients (consentd) and keys (etcd) written before the read runs")
	flag.IntVar(&cfg.WritePool, "write-pool", cfg.WritePool, "patients consentd writes spread over")
	flag.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "ghz opens min(concurrency, this) gRPC connections")
	flag.IntVar(&cfg.WrkThreads, "wrk-threads", cfg.WrkThreads, "wrk runs min(concurrency, this) threads (it shares the machine with both clusters)")
	flag.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "per-request timeout of both load tools")
	flag.BoolVar(&cfg.Keep, "keep", cfg.Keep, "keep the clusters' data directories and logs")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "compare: -log-level:", err)
		os.Exit(2)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var err error
	if cfg.Conc, err = parseInts(conc); err != nil {
		fmt.Fprintln(os.Stderr, "compare: -conc:", err)
		os.Exit(2)
	}
	cfg.Ops, cfg.Protocols = splitList(ops), splitList(protocols)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		cfg.Logger.Error("compare failed", "err", err)
		stop()
		os.Exit(1)
	}
}
