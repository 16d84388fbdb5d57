// Command consentd runs one node of the consent register, or with `dev` a
// whole local cluster in one process. It only parses configuration and
// wires packages together; everything else lives in the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lmc-consent/consentd/internal/memlimit"
	"github.com/lmc-consent/consentd/node"
	"github.com/lmc-consent/consentd/pki"
)

const version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "dev":
			return runDev(args[1:], stdout, stderr)
		case "certs":
			return runCerts(args[1:], stdout, stderr)
		case "version", "--version":
			fmt.Fprintln(stdout, "consentd", version)
			return 0
		}
	}
	return runNode(args, stdout, stderr)
}

const nodeUsage = `consentd runs one node of the consent register.

Usage:
  consentd --id ID --data-dir DIR --raft-addr H:P --grpc-addr H:P --http-addr H:P
           (--bootstrap | --join H:P[,H:P])
           (--ca-file F --cert-file F --key-file F | --insecure)
  consentd dev [--nodes 3] [--tls]   run a local cluster in one process
  consentd certs --dir DIR           make a development CA and certificates
  consentd version

With TLS every listener (raft, gRPC, REST) is mutual TLS. The node's
certificate must carry the URI SAN spiffe://<cluster>/node/<id>; callers'
certificates spiffe://<cluster>/org/<ODS code>/role/<role> with the user id as
subject CN (roles: practice, reader, lmc_admin, auditor). Certificate, key and
CA files are re-read when they change.

Every flag can also be set as an environment variable CONSENTD_<FLAG>, with
dashes as underscores (CONSENTD_DATA_DIR=/var/lib/consentd). A flag on the
command line wins over the environment.

Restarting with an existing data dir needs neither --bootstrap nor --join.

In a memory cgroup (a container with a memory limit) consentd sets Go's soft
memory limit to 80% of the cgroup's, unless GOMEMLIMIT is set.

Flags:
`

func runNode(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("consentd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, nodeUsage); fs.PrintDefaults() }
	var (
		id            = fs.String("id", "", "raft id of this node, stable across restarts (required)")
		dataDir       = fs.String("data-dir", "", "directory for the raft log, snapshots and register (required)")
		raftAddr      = fs.String("raft-addr", "127.0.0.1:7081", "raft listen address")
		raftAdvertise = fs.String("raft-advertise", "", "raft address other nodes dial (default: --raft-addr)")
		grpcAddr      = fs.String("grpc-addr", "127.0.0.1:9081", "gRPC listen address (public API and node-to-node)")
		grpcAdvertise = fs.String("grpc-advertise", "", "gRPC address other nodes dial (default: --grpc-addr)")
		httpAddr      = fs.String("http-addr", "127.0.0.1:8081", "REST/JSON, health and metrics listen address")
		httpAdvertise = fs.String("http-advertise", "", "REST address reported to others (default: --http-addr)")
		bootstrap     = fs.Bool("bootstrap", false, "start a new cluster with this node as its first member")
		join          = fs.String("join", "", "comma-separated gRPC addresses of members to join through")
		insecure      = fs.Bool("insecure", false, "serve plain TCP with anonymous callers (development only)")
		clusterName   = fs.String("cluster", "consentd", "cluster name: the trust domain of the certificates' spiffe:// identities")
		caFile        = fs.String("ca-file", "", "PEM CA bundle that client and peer certificates are verified against")
		certFile      = fs.String("cert-file", "", "PEM certificate of this node (spiffe://<cluster>/node/<id>)")
		keyFile       = fs.String("key-file", "", "PEM private key of --cert-file")
		peerCAFile    = fs.String("peer-ca-file", "", "CA for raft and node-to-node calls, if different (then all three --peer-* flags; --ca-file must hold it too, since node-to-node gRPC shares the gRPC port)")
		peerCertFile  = fs.String("peer-cert-file", "", "certificate for raft and node-to-node calls, if different")
		peerKeyFile   = fs.String("peer-key-file", "", "key of --peer-cert-file")
		rateLimit     = fs.Float64("rate-limit", 200, "requests per second each caller (organisation and user) may sustain; -1 turns limiting off")
		rateBurst     = fs.Int("rate-burst", 400, "requests a caller may send at once above --rate-limit")
		accessDir     = fs.String("access-log-dir", "", "where the access log is kept (default DATA-DIR/access-log)")
		accessOpen    = fs.Bool("access-log-fail-open", false, "serve requests even when the access log cannot be written (default: refuse them, as Vault does)")
		logLevel      = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat     = fs.String("log-format", "text", "text or json")
		snapThreshold = fs.Uint64("snapshot-threshold", 8192, "log entries between snapshots")
		snapLogMiB    = fs.Uint64("snapshot-log-mib", 64, "also snapshot once the log since the last snapshot holds this many MiB of commands (or an eighth of the register's size, if more): bounds what a restart reads")
		snapQuiet     = fs.Duration("snapshot-when-quiet", 30*time.Second, "also snapshot once no write has come for this long and the log since the last snapshot holds --snapshot-log-mib, so a burst (a bulk load) leaves no long log for a restart or a rebuilt follower to replay; 0 turns it off")
		trailingLogs  = fs.Uint64("trailing-logs", 10240, "log entries kept after a snapshot")
		snapInterval  = fs.Duration("snapshot-interval", 30*time.Second, "how often to check --snapshot-threshold (raft adds up to the same again at random)")
		heartbeat     = fs.Duration("heartbeat-timeout", time.Second, "raft heartbeat timeout")
		election      = fs.Duration("election-timeout", time.Second, "raft election timeout")
		commitEvery   = fs.Duration("register-commit-interval", 20*time.Millisecond, "longest the register holds applied entries before committing them to disk (sooner when a read needs them); raft's log holds them meanwhile")
		pprofOn       = fs.Bool("pprof", false, "serve Go's profiler at /debug/pprof/ on the HTTP listener (client certificate required on TLS)")
	)
	if err := parseWithEnv(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "consentd:", err)
		return 2
	}
	applyMemoryLimit(logger)
	var missing []string
	if *id == "" {
		missing = append(missing, "--id")
	}
	if *dataDir == "" {
		missing = append(missing, "--data-dir")
	}
	if len(missing) > 0 {
		fmt.Fprintf(stderr, "consentd: missing %s (see consentd --help)\n", strings.Join(missing, ", "))
		return 2
	}
	// 0 would silently mean the default; past a TiB the shift overflows.
	if *snapLogMiB < 1 || *snapLogMiB > 1<<20 {
		fmt.Fprintf(stderr, "consentd: --snapshot-log-mib %d must be 1..1048576\n", *snapLogMiB)
		return 2
	}
	if *snapQuiet < 0 {
		fmt.Fprintf(stderr, "consentd: --snapshot-when-quiet %v must not be negative (0 turns it off)\n", *snapQuiet)
		return 2
	}
	tlsSrc, peerSrc, err := loadTLS(logger, *clusterName, pki.Files{CA: *caFile, Cert: *certFile, Key: *keyFile},
		pki.Files{CA: *peerCAFile, Cert: *peerCertFile, Key: *peerKeyFile}, *insecure)
	if err != nil {
		fmt.Fprintln(stderr, "consentd:", err)
		return 2
	}
	if *insecure {
		logger.Warn("running WITHOUT TLS (--insecure): every listener is plain TCP and every caller anonymous; use only on a trusted network")
	}

	cfg := node.Config{
		ID: *id, DataDir: *dataDir,
		RaftAddr: *raftAddr, RaftAdvertise: *raftAdvertise,
		GRPCAddr: *grpcAddr, GRPCAdvertise: *grpcAdvertise,
		HTTPAddr: *httpAddr, HTTPAdvertise: *httpAdvertise,
		Bootstrap: *bootstrap, Join: splitList(*join), Insecure: *insecure, TLS: tlsSrc, PeerTLS: peerSrc,
		GatherProcessMetrics: true, Version: version, Logger: logger,
	}
	cfg.Raft.SnapshotThreshold = *snapThreshold
	cfg.Raft.SnapshotLogBytes = *snapLogMiB << 20
	cfg.Raft.SnapshotWhenQuiet = *snapQuiet
	if *snapQuiet == 0 {
		cfg.Raft.SnapshotWhenQuiet = -1 // raftnode's zero means its default
	}
	cfg.Raft.TrailingLogs = *trailingLogs
	cfg.Raft.SnapshotInterval = *snapInterval
	cfg.Raft.CommitInterval = *commitEvery
	cfg.AccessLog.Dir, cfg.AccessLog.FailOpen = *accessDir, *accessOpen
	cfg.API.RateLimit, cfg.API.RateBurst = *rateLimit, *rateBurst
	cfg.API.Pprof = *pprofOn
	cfg.Raft.HeartbeatTimeout = *heartbeat
	cfg.Raft.ElectionTimeout = *election
	if *heartbeat < time.Second {
		cfg.Raft.LeaderLeaseTimeout = *heartbeat / 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		logger.Error("start failed", "err", err)
		return 1
	}
	<-ctx.Done()
	stop()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Shutdown(shutdownCtx); err != nil {
		logger.Error("shutdown", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// loadTLS reads the certificate flags: all of the client set or --insecure,
// and the peer set all or nothing.
func loadTLS(log *slog.Logger, cluster string, files, peer pki.Files, insecure bool) (tlsSrc, peerSrc *pki.Source, err error) {
	anyOf := func(f pki.Files) bool { return f.CA != "" || f.Cert != "" || f.Key != "" }
	switch {
	case insecure && (anyOf(files) || anyOf(peer)):
		return nil, nil, errors.New("--insecure and certificate flags are exclusive")
	case insecure:
		return nil, nil, nil
	case !anyOf(files):
		return nil, nil, errors.New("no certificate: give --ca-file, --cert-file and --key-file (see consentd certs), or --insecure for plain TCP")
	}
	if err := files.Validate(""); err != nil {
		return nil, nil, err
	}
	if tlsSrc, err = pki.NewSource(files, cluster, log); err != nil {
		return nil, nil, err
	}
	if anyOf(peer) {
		if err := peer.Validate("peer-"); err != nil {
			return nil, nil, err
		}
		if peerSrc, err = pki.NewSource(peer, cluster, log); err != nil {
			return nil, nil, err
		}
	}
	return tlsSrc, peerSrc, nil
}

// parseWithEnv parses args, then fills every flag not given on the command
// line from CONSENTD_<NAME>.
func parseWithEnv(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errors.New("unexpected argument")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := "CONSENTD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(fs.Output(), "consentd:", err)
		return err
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// applyMemoryLimit gives the Go runtime a soft limit below the memory
// cgroup's, as a node in a container needs (see internal/memlimit). A
// failure to read the cgroup only costs the limit.
func applyMemoryLimit(logger *slog.Logger) {
	d, err := memlimit.LinuxSources().Apply(memlimit.DefaultFraction, os.Getenv)
	switch {
	case err != nil:
		logger.Warn("could not read the memory cgroup; no Go memory limit set", "err", err)
	case d.Limit > 0:
		logger.Info("Go memory limit set from the memory cgroup", "soft_limit_mib", d.Limit>>20, "cgroup_limit_mib", d.Cgroup>>20)
	default:
		logger.Debug("no Go memory limit set", "why", d.Reason)
	}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}
