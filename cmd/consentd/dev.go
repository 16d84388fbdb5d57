package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/lmc-consent/consentd/cluster"
	"github.com/lmc-consent/consentd/node"
	"github.com/lmc-consent/consentd/pki"
)

const devUsage = `consentd dev runs a local cluster in one process on 127.0.0.1:
REST on 8081.., gRPC on 9081.., raft on 7081.., data kept under --dir across
restarts. Ctrl-C stops it cleanly.

Plain TCP with anonymous callers unless --tls: then every listener is mutual
TLS with certificates from DIR/certs (made by consentd certs on first use),
and callers use the sample certificates there (practice.pem, reader.pem, ...).

Usage:
  consentd dev [--nodes 3] [--dir ./.consentd-dev] [--tls]

Flags:
`

func runDev(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("consentd dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, devUsage); fs.PrintDefaults() }
	var (
		nodes    = fs.Int("nodes", 3, "number of nodes (odd numbers tolerate failures: 3 survives one)")
		dir      = fs.String("dir", ".consentd-dev", "where the nodes keep their data")
		httpPort = fs.Int("http-port", 8081, "REST port of n1; n2 uses the next, and so on")
		grpcPort = fs.Int("grpc-port", 9081, "gRPC port of n1")
		raftPort = fs.Int("raft-port", 7081, "raft port of n1")
		logLevel = fs.String("log-level", "warn", "debug, info, warn or error")
		useTLS   = fs.Bool("tls", false, "mutual TLS everywhere, certificates in DIR/certs")
	)
	if err := parseWithEnv(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *nodes < 1 || *nodes > 9 {
		fmt.Fprintln(stderr, "consentd dev: --nodes must be 1..9")
		return 2
	}
	logger, err := newLogger(stderr, *logLevel, "text")
	if err != nil {
		fmt.Fprintln(stderr, "consentd dev:", err)
		return 2
	}
	applyMemoryLimit(logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	certDir := filepath.Join(*dir, "certs")
	if *useTLS {
		if err := devCerts(certDir, *nodes); err != nil {
			fmt.Fprintln(stderr, "consentd dev:", err)
			return 1
		}
	}
	l := &cluster.Launcher{
		Nodes: *nodes, BaseDir: *dir, RaftPort: *raftPort, GRPCPort: *grpcPort, HTTPPort: *httpPort,
		StartNode: func(ctx context.Context, s cluster.NodeSpec) (cluster.Running, error) {
			cfg := node.Config{
				ID: s.ID, DataDir: s.DataDir, RaftAddr: s.RaftAddr, GRPCAddr: s.GRPCAddr, HTTPAddr: s.HTTPAddr,
				Bootstrap: s.Bootstrap, Join: s.Join, Insecure: !*useTLS, Version: version, Logger: logger,
			}
			if *useTLS {
				src, err := pki.NewSource(devFiles(certDir, s.ID), devCluster, logger)
				if err != nil {
					return nil, err
				}
				cfg.TLS = src
			}
			return node.Start(ctx, cfg)
		},
	}
	running, err := l.Launch(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "consentd dev:", err)
		return 1
	}
	client, err := devHTTPClient(*useTLS, certDir)
	if err != nil {
		fmt.Fprintln(stderr, "consentd dev:", err)
		return 1
	}
	if err := waitReady(ctx, client, running, 20*time.Second); err != nil {
		fmt.Fprintln(stderr, "consentd dev: cluster not ready yet:", err)
	}
	first, last := running[0], running[len(running)-1]
	if *useTLS {
		fmt.Fprintf(stdout, "consentd dev: %d nodes, data in %s, mutual TLS with certificates in %s\n", len(running), *dir, certDir)
		for _, r := range running {
			fmt.Fprintf(stdout, "  %s  REST https://%s  gRPC %s\n", r.ID(), r.HTTPAddr(), r.GRPCAddr())
		}
		fmt.Fprintf(stdout, `
Record a decision as a practice on %[1]s, read it back as a reader from %[2]s:
  curl -s --cacert %[5]s/ca.pem --cert %[5]s/practice.pem --key %[5]s/practice-key.pem \
    -X POST https://%[3]s/v1/patients/9990000018/decisions -H 'Content-Type: application/json' \
    -d '{"kind":"scr","state":"dissent","channel":"in_person","decisionMaker":{"type":"patient"},"requestId":"demo-1"}'
  curl -s --cacert %[5]s/ca.pem --cert %[5]s/reader.pem --key %[5]s/reader-key.pem \
    https://%[4]s/v1/patients/9990000018/consents

Press Ctrl-C to stop.
`, first.ID(), last.ID(), first.HTTPAddr(), last.HTTPAddr(), certDir)
	} else {
		fmt.Fprintf(stdout, "consentd dev: %d nodes, data in %s (plain TCP, development only)\n", len(running), *dir)
		for _, r := range running {
			fmt.Fprintf(stdout, "  %s  REST http://%s  gRPC %s\n", r.ID(), r.HTTPAddr(), r.GRPCAddr())
		}
		fmt.Fprintf(stdout, `
Record a decision on %[1]s and read it back from %[2]s:
  curl -s -X POST http://%[3]s/v1/patients/9990000018/decisions -H 'Content-Type: application/json' \
    -d '{"kind":"scr","state":"dissent","channel":"in_person","decisionMaker":{"type":"patient"},"requestId":"demo-1"}'
  curl -s http://%[4]s/v1/patients/9990000018/consents

Cluster status: curl -s http://%[3]s/v1/cluster/status
Press Ctrl-C to stop.
`, first.ID(), last.ID(), first.HTTPAddr(), last.HTTPAddr())
	}

	<-ctx.Done()
	stop()
	fmt.Fprintln(stdout, "consentd dev: stopping")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	failed := false
	for i := len(running) - 1; i >= 0; i-- {
		if err := running[i].Shutdown(shutdownCtx); err != nil {
			fmt.Fprintf(stderr, "consentd dev: stop %s: %v\n", running[i].ID(), err)
			failed = true
		}
	}
	if failed {
		return 1
	}
	return 0
}

// waitReady polls every node's /readyz so the printed curl example works the
// moment it is shown.
func waitReady(ctx context.Context, client *http.Client, nodes []cluster.Running, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	scheme := "http://"
	if client.Transport != nil {
		scheme = "https://"
	}
	for _, n := range nodes {
		for {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+n.HTTPAddr()+"/readyz", nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: %w", n.ID(), ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// devCluster is the trust domain of consentd dev's certificates.
const devCluster = "consentd"

// devCerts makes the development certificates on first use; later runs
// reuse them (and fail clearly if a node has none, e.g. after --nodes grew).
func devCerts(dir string, nodes int) error {
	if _, err := os.Stat(filepath.Join(dir, "ca.pem")); err == nil {
		return nil
	}
	var ids []string
	for i := 1; i <= nodes; i++ {
		ids = append(ids, fmt.Sprintf("n%d", i))
	}
	return pki.WriteDevSet(dir, pki.DevSet{Cluster: devCluster, Nodes: ids, Hosts: []string{"127.0.0.1", "localhost"}, Callers: pki.DefaultDevCallers()})
}

func devFiles(dir, name string) pki.Files {
	return pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
}

// devHTTPClient polls /readyz; with TLS it trusts the development CA (the
// probe needs no client certificate).
func devHTTPClient(useTLS bool, certDir string) (*http.Client, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	if !useTLS {
		return c, nil
	}
	caPEM, err := os.ReadFile(filepath.Join(certDir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return c, nil
}
