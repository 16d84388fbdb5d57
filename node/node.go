// Package node owns composing one consentd node from its parts — the
// register (fsm), raft (raftnode), cluster routing (cluster) and the API
// servers (api) — and the order in which they start and stop. cmd/consentd
// and the tests build nodes only through here, so both run the same wiring.
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/lmc-consent/consentd/api"
	"github.com/lmc-consent/consentd/audit"
	"github.com/lmc-consent/consentd/cluster"
	"github.com/lmc-consent/consentd/fsm"
	"github.com/lmc-consent/consentd/pki"
	clusterv1 "github.com/lmc-consent/consentd/proto/cluster/v1"
	"github.com/lmc-consent/consentd/raftnode"
)

// Config is one node's settings. Raft and API hold tuning; the identity and
// address fields here override theirs.
type Config struct {
	ID      string
	DataDir string
	// Listen addresses; port 0 picks a free port.
	RaftAddr, GRPCAddr, HTTPAddr string
	// Addresses other nodes and clients use; default to the bound ones.
	RaftAdvertise, GRPCAdvertise, HTTPAdvertise string
	// Bootstrap makes a node with no raft state a one-member cluster.
	Bootstrap bool
	// Join lists gRPC addresses of members to join through.
	Join []string
	// TLS is this node's certificate, key and CA: mutual TLS on the raft
	// port, node-to-node gRPC and both API listeners. Its identity must be
	// this node's (spiffe://<cluster>/node/<ID>).
	TLS *pki.Source
	// PeerTLS, if set, replaces TLS for raft and node-to-node calls (a
	// separate peer CA, as etcd's --peer-* flags allow).
	PeerTLS *pki.Source
	// Insecure is plain TCP on every listener and anonymous callers; it must
	// be asked for when TLS is not set.
	Insecure bool
	// AccessLog is the per-node access log; Dir defaults to
	// DataDir/access-log, Node to ID. It is always on.
	AccessLog audit.Config
	// GatherProcessMetrics adds Go runtime and process collectors; off for
	// in-process clusters where every node would report the same process.
	GatherProcessMetrics bool
	Version              string
	Logger               *slog.Logger
	Raft                 raftnode.Config
	API                  api.Config
	Cluster              cluster.Config
}

// Validate reports missing or conflicting settings.
func (c Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("node: id is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("node: data dir is required"))
	}
	switch {
	case c.TLS == nil && !c.Insecure:
		errs = append(errs, errors.New("node: no TLS certificate configured; set one, or ask for plain TCP with --insecure"))
	case c.TLS != nil && c.Insecure:
		errs = append(errs, errors.New("node: TLS and --insecure are exclusive"))
	case c.TLS == nil && c.PeerTLS != nil:
		errs = append(errs, errors.New("node: peer TLS needs client TLS too"))
	}
	for _, src := range []*pki.Source{c.TLS, c.PeerTLS} {
		if src != nil && src.Identity().NodeID != c.ID {
			errs = append(errs, fmt.Errorf("node: the certificate is for %s, not node %q", src.Identity(), c.ID))
		}
	}
	if c.Bootstrap && len(c.Join) > 0 {
		errs = append(errs, errors.New("node: bootstrap and join are exclusive"))
	}
	for name, a := range map[string]string{"raft": c.RaftAddr, "grpc": c.GRPCAddr, "http": c.HTTPAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("node: %s address %q: %w", name, a, err))
		}
	}
	return errors.Join(errs...)
}

// Node is a running consentd node.
type Node struct {
	cfg     Config
	log     *slog.Logger
	store   *fsm.Store
	raft    *raftnode.Node
	cluster *cluster.Cluster
	api     *api.Server
	access  *audit.Log
	metrics *prometheus.Registry
	// raftReady is raft once open: the TLS check of raft peers runs on
	// transport goroutines that may start before Open returns.
	raftReady atomic.Pointer[raftnode.Node]
}

// Start opens the register, starts raft, serves the APIs, then bootstraps
// or joins if this node has never been part of a cluster.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("node", cfg.ID)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n := &Node{cfg: cfg, log: log, metrics: prometheus.NewRegistry()}
	ok := false
	defer func() {
		if !ok {
			n.close(context.Background())
		}
	}()

	var err error
	n.store, err = fsm.Open(fsm.Config{Path: filepath.Join(cfg.DataDir, "register.db"), Logger: log})
	if err != nil {
		return nil, err
	}
	rc := cfg.Raft
	rc.ID, rc.DataDir, rc.BindAddr, rc.AdvertiseAddr, rc.Logger = cfg.ID, cfg.DataDir, cfg.RaftAddr, cfg.RaftAdvertise, log
	cc := cfg.Cluster
	if peer := cmp.Or(cfg.PeerTLS, cfg.TLS); peer != nil {
		rc.ServerTLS = peer.ServerConfig(true, n.raftPeerAllowed)
		rc.ClientTLS = peer.ClientConfig(pki.OnlyNodes)
		cc.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(peer.ClientConfig(pki.OnlyNodes)))}
	}
	n.raft, err = raftnode.Open(rc, n.store)
	if err != nil {
		return nil, err
	}
	n.raftReady.Store(n.raft)
	hasState, err := n.raft.HasState()
	if err != nil {
		return nil, err
	}
	cc.NodeID, cc.Join, cc.Logger = cfg.ID, cfg.Join, log
	n.cluster, err = cluster.New(cc, n.raft, n.store)
	if err != nil {
		return nil, err
	}

	n.metrics.MustRegister(n.raft.Collector())
	if cfg.GatherProcessMetrics {
		n.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	alc := cfg.AccessLog
	if alc.Dir == "" {
		alc.Dir = filepath.Join(cfg.DataDir, "access-log")
	}
	alc.Node, alc.Logger = cfg.ID, log
	if n.access, err = audit.Open(alc); err != nil {
		return nil, err
	}
	ac := cfg.API
	ac.AccessLog = n.access
	ac.GRPCAddr, ac.HTTPAddr, ac.Insecure, ac.Version, ac.Logger, ac.Metrics = cfg.GRPCAddr, cfg.HTTPAddr, cfg.Insecure, cfg.Version, log, n.metrics
	ac.TLS = cfg.TLS
	n.api, err = api.New(ac, n.store, n.cluster)
	if err != nil {
		return nil, err
	}
	clusterv1.RegisterPeerServiceServer(n.api.GRPCServer(), n.cluster.PeerServer())
	if err := n.api.Start(); err != nil {
		return nil, err
	}

	if !hasState && cfg.Bootstrap {
		if err := n.raft.Bootstrap(); err != nil {
			return nil, err
		}
		log.Info("bootstrapped a new cluster")
	}
	join := !hasState && !cfg.Bootstrap
	if join && len(cfg.Join) == 0 {
		log.Warn("no raft state, no --bootstrap and no --join: waiting to be added by an operator")
		join = false
	}
	n.cluster.Start(advertise(cfg.GRPCAdvertise, n.api.GRPCAddr()), advertise(cfg.HTTPAdvertise, n.api.HTTPAddr()), join)
	ok = true
	log.Info("node started", "raft", n.raft.RaftAddr(), "grpc", n.api.GRPCAddr(), "http", n.api.HTTPAddr(),
		"existing_state", hasState)
	return n, nil
}

// raftPeerAllowed lets a node certificate speak raft only if its id is in
// the raft configuration, so a certificate of a removed node, or one issued
// for an id never added, cannot take part. A node with no configuration yet
// (just started to join) accepts any node of the cluster: the leader that
// adds it is the one dialing.
func (n *Node) raftPeerAllowed(id pki.Identity) error {
	if err := pki.OnlyNodes(id); err != nil {
		return err
	}
	r := n.raftReady.Load()
	if r == nil {
		return nil
	}
	members, err := r.Members()
	if err != nil || len(members) == 0 {
		return nil
	}
	for _, m := range members {
		if m.ID == id.NodeID {
			return nil
		}
	}
	return fmt.Errorf("node %s is not a member of the raft configuration", id.NodeID)
}

func advertise(configured, bound string) string {
	if configured != "" {
		return configured
	}
	return bound
}

// Shutdown stops taking requests, finishes in-flight ones, hands over
// leadership if this node leads, then closes raft and the register.
func (n *Node) Shutdown(ctx context.Context) error {
	n.log.Info("shutting down")
	return n.close(ctx)
}

// Kill stops the node abruptly: no draining, no leadership transfer. For
// failure tests; a real crash is SIGKILL of the process.
func (n *Node) Kill() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var errs []error
	if n.api != nil {
		errs = append(errs, n.api.Shutdown(ctx))
	}
	if n.cluster != nil {
		errs = append(errs, n.cluster.Close())
	}
	errs = append(errs, n.raft.Kill(), n.store.Close())
	if n.access != nil {
		errs = append(errs, n.access.Close())
	}
	return errors.Join(errs...)
}

func (n *Node) close(ctx context.Context) error {
	var errs []error
	if n.api != nil {
		errs = append(errs, n.api.Shutdown(ctx))
	}
	if n.cluster != nil {
		errs = append(errs, n.cluster.Close())
	}
	if n.raft != nil {
		errs = append(errs, n.raft.Shutdown(ctx))
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	if n.access != nil {
		errs = append(errs, n.access.Close())
	}
	return errors.Join(errs...)
}

// ID is the node's raft id.
func (n *Node) ID() string { return n.cfg.ID }

// GRPCAddr is the bound gRPC address.
func (n *Node) GRPCAddr() string { return n.api.GRPCAddr() }

// HTTPAddr is the bound REST address.
func (n *Node) HTTPAddr() string { return n.api.HTTPAddr() }

// RaftAddr is the raft address other nodes dial.
func (n *Node) RaftAddr() string { return n.raft.RaftAddr() }

// Raft exposes the raft node to tests and operators' tooling.
func (n *Node) Raft() *raftnode.Node { return n.raft }

// Store exposes the register for in-process inspection (tests, digests).
func (n *Node) Store() *fsm.Store { return n.store }
