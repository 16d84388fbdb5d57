package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/lmc-consent/consentd/internal/broken"
	clusterv1 "github.com/lmc-consent/consentd/proto/cluster/v1"
	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
	consentv1 "github.com/lmc-consent/consentd/proto/consent/v1"
	"github.com/lmc-consent/consentd/raftnode"
)

// Directory is where the replicated map of member addresses is read from;
// fsm.Store satisfies it.
type Directory interface {
	Nodes() ([]*commandv1.UpsertNode, error)
}

// Config configures how this node works with the others.
type Config struct {
	// NodeID is this node's raft id.
	NodeID string
	// Join lists gRPC addresses of existing members; used only by a node
	// with no raft state that is not bootstrapping.
	Join []string
	// DialOptions for node-to-node gRPC; default plain TCP (TLS comes here).
	DialOptions []grpc.DialOption
	// RetryInterval is the pause between attempts while no leader is known.
	RetryInterval time.Duration // default 100ms
	// PublishInterval is how often this node checks that the replicated
	// directory holds its current addresses.
	PublishInterval time.Duration // default 2s
	Logger          *slog.Logger
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.RetryInterval == 0 {
		c.RetryInterval = 100 * time.Millisecond
	}
	if c.PublishInterval == 0 {
		c.PublishInterval = 2 * time.Second
	}
	if c.DialOptions == nil {
		c.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports a missing or bad setting.
func (c Config) Validate() error {
	if c.NodeID == "" {
		return errors.New("cluster: NodeID is required")
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("cluster: join address %q: %w", j, err)
		}
	}
	return nil
}

// Cluster routes writes and linearizable reads through the leader, wherever
// the request arrived.
type Cluster struct {
	cfg Config
	log *slog.Logger
	rn  *raftnode.Node
	dir Directory

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	// self is this node's published addresses, known once Start is called.
	self *commandv1.UpsertNode

	stop chan struct{}
	// bg bounds background calls (join, publish) so Close never waits out
	// their timeouts.
	bg       context.Context
	cancelBg context.CancelFunc
	wg       sync.WaitGroup
}

// New builds a Cluster over a raft node and the directory it replicates.
func New(cfg Config, rn *raftnode.Node, dir Directory) (*Cluster, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	return &Cluster{
		cfg: cfg, log: cfg.Logger, rn: rn, dir: dir,
		conns: make(map[string]*grpc.ClientConn),
		stop:  make(chan struct{}), bg: bg, cancelBg: cancel,
	}, nil
}

// NodeID is this node's raft id.
func (c *Cluster) NodeID() string { return c.cfg.NodeID }

// Start begins the background work that needs the node's API addresses:
// joining through a member (only when join is true) and keeping this node's
// addresses in the replicated directory.
func (c *Cluster) Start(grpcAddr, httpAddr string, join bool) {
	c.mu.Lock()
	c.self = &commandv1.UpsertNode{Id: c.cfg.NodeID, RaftAddr: c.rn.RaftAddr(), GrpcAddr: grpcAddr, HttpAddr: httpAddr}
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if join {
			c.joinLoop()
		}
		c.publishLoop()
	}()
}

// Close stops background work and closes connections to peers.
func (c *Cluster) Close() error {
	select {
	case <-c.stop:
		return nil
	default:
	}
	close(c.stop)
	c.cancelBg()
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for addr, cc := range c.conns {
		errs = append(errs, cc.Close())
		delete(c.conns, addr)
	}
	return errors.Join(errs...)
}

// conn returns a cached client connection to a peer's gRPC address.
func (c *Cluster) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, c.cfg.DialOptions...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// leaderClient returns a PeerService client for the current leader, or
// ErrNoLeader when no leader is known or its address is not yet published.
func (c *Cluster) leaderClient() (clusterv1.PeerServiceClient, string, error) {
	id, _ := c.rn.Leader()
	if id == "" {
		return nil, "", ErrNoLeader
	}
	addr, err := c.grpcAddrOf(id)
	if err != nil {
		return nil, "", err
	}
	cc, err := c.conn(addr)
	if err != nil {
		return nil, "", err
	}
	return clusterv1.NewPeerServiceClient(cc), id, nil
}

func (c *Cluster) grpcAddrOf(id string) (string, error) {
	nodes, err := c.dir.Nodes()
	if err != nil {
		return "", err
	}
	for _, n := range nodes {
		if n.GetId() == id && n.GetGrpcAddr() != "" {
			return n.GetGrpcAddr(), nil
		}
	}
	return "", fmt.Errorf("%w: leader %s has not published its address yet", ErrNoLeader, id)
}

// retry pauses before another attempt, or reports why it cannot.
func (c *Cluster) retry(ctx context.Context, last error) error {
	t := time.NewTimer(c.cfg.RetryInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		if last != nil {
			return fmt.Errorf("%w (%w)", last, ctx.Err())
		}
		return ctx.Err()
	case <-c.stop:
		return raftnode.ErrShutdown
	case <-t.C:
		return nil
	}
}

// Apply proposes an encoded command.v1.Envelope through the leader and
// returns the state machine's result. A proposal that was definitely not
// made (no leader, not leader) is retried until ctx ends; once a proposal
// may have been made, any failure is reported as raftnode.ErrOutcomeUnknown.
func (c *Cluster) Apply(ctx context.Context, cmd []byte) (*commandv1.Result, error) {
	var last error
	for {
		res, err := c.applyOnce(ctx, cmd)
		if err == nil {
			return res, nil
		}
		if !retryableWrite(err) {
			return nil, err
		}
		last = err
		if rerr := c.retry(ctx, last); rerr != nil {
			return nil, rerr
		}
	}
}

func retryableWrite(err error) bool {
	return errors.Is(err, raftnode.ErrNotLeader) || errors.Is(err, ErrNoLeader)
}

func (c *Cluster) applyOnce(ctx context.Context, cmd []byte) (*commandv1.Result, error) {
	if c.rn.IsLeader() {
		v, err := c.rn.Apply(ctx, cmd)
		if err != nil {
			return nil, err
		}
		res, ok := v.(*commandv1.Result)
		if !ok {
			return nil, fmt.Errorf("cluster: state machine returned %T", v)
		}
		return res, nil
	}
	client, leader, err := c.leaderClient()
	if err != nil {
		return nil, err
	}
	var resp *clusterv1.ApplyResponse
	if broken.On(broken.RetryWithoutDedup) {
		// Broken on purpose: a forward that times out or has an unknown
		// outcome is sent again under a fresh request id, so it may apply twice.
		resp, err = c.forwardRetryingWithoutDedup(ctx, client, cmd)
	} else {
		resp, err = client.Apply(ctx, &clusterv1.ApplyRequest{Command: cmd})
	}
	if err != nil {
		// The request may have reached the leader and been proposed.
		return nil, fmt.Errorf("%w: forwarding to leader %s: %w", raftnode.ErrOutcomeUnknown, leader, err)
	}
	switch resp.GetOutcome() {
	case clusterv1.Outcome_OUTCOME_APPLIED:
		res := &commandv1.Result{}
		if err := proto.Unmarshal(resp.GetResult(), res); err != nil {
			return nil, fmt.Errorf("%w: undecodable result from leader %s: %w", raftnode.ErrOutcomeUnknown, leader, err)
		}
		return res, nil
	case clusterv1.Outcome_OUTCOME_NOT_LEADER:
		return nil, fmt.Errorf("%w: %s: %s", raftnode.ErrNotLeader, leader, resp.GetMessage())
	case clusterv1.Outcome_OUTCOME_REJECTED:
		return nil, fmt.Errorf("%w: leader %s: %s", raftnode.ErrEnqueueTimeout, leader, resp.GetMessage())
	default:
		return nil, fmt.Errorf("%w: leader %s: %s", raftnode.ErrOutcomeUnknown, leader, resp.GetMessage())
	}
}

// LinearizableRead returns once the local register reflects every write
// acknowledged before the call began: on the leader by ReadIndex, on a
// follower by asking the leader for a read index and waiting to apply it.
func (c *Cluster) LinearizableRead(ctx context.Context) (uint64, error) {
	var last error
	for {
		idx, err := c.readIndexOnce(ctx)
		if err == nil {
			if err := c.rn.WaitApplied(ctx, idx); err != nil {
				return 0, err
			}
			return idx, nil
		}
		// A read has no side effects, so any failure to get a read index
		// (including an unreachable old leader) may be retried until ctx ends.
		if !errors.Is(err, raftnode.ErrNotLeader) && !errors.Is(err, ErrNoLeader) &&
			!errors.Is(err, raftnode.ErrNotReady) && !errors.Is(err, ErrForward) {
			return 0, err
		}
		last = err
		if rerr := c.retry(ctx, last); rerr != nil {
			return 0, rerr
		}
	}
}

func (c *Cluster) readIndexOnce(ctx context.Context) (uint64, error) {
	if c.rn.IsLeader() {
		idx, _, err := c.rn.ReadIndex(ctx)
		return idx, err
	}
	client, leader, err := c.leaderClient()
	if err != nil {
		return 0, err
	}
	resp, err := client.ReadIndex(ctx, &clusterv1.ReadIndexRequest{})
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("%w %s: %w", ErrForward, leader, err)
	}
	switch resp.GetOutcome() {
	case clusterv1.Outcome_OUTCOME_APPLIED:
		return resp.GetIndex(), nil
	case clusterv1.Outcome_OUTCOME_NOT_LEADER:
		return 0, fmt.Errorf("%w: %s: %s", raftnode.ErrNotLeader, leader, resp.GetMessage())
	default:
		return 0, fmt.Errorf("%w: %s: %s", raftnode.ErrNotReady, leader, resp.GetMessage())
	}
}

// StaleInfo says how far behind a local read may be.
func (c *Cluster) StaleInfo() (uint64, time.Duration) { return c.rn.StaleInfo() }

// Flush makes everything this node has applied readable.
func (c *Cluster) Flush(ctx context.Context) error { return c.rn.Flush(ctx) }

// Status reports this node's view of the cluster.
func (c *Cluster) Status(ctx context.Context) (*consentv1.GetStatusResponse, error) {
	st := c.rn.Status()
	members, err := c.members()
	if err != nil {
		return nil, err
	}
	return &consentv1.GetStatusResponse{
		Id: st.ID, State: st.State, LeaderId: st.LeaderID, Term: st.Term,
		CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, Members: members,
	}, nil
}

func (c *Cluster) members() ([]*consentv1.Member, error) {
	ms, err := c.rn.Members()
	if err != nil {
		return nil, err
	}
	nodes, err := c.dir.Nodes()
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*commandv1.UpsertNode, len(nodes))
	for _, n := range nodes {
		byID[n.GetId()] = n
	}
	out := make([]*consentv1.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, &consentv1.Member{
			Id: m.ID, Suffrage: m.Suffrage, RaftAddr: m.RaftAddr,
			GrpcAddr: byID[m.ID].GetGrpcAddr(), HttpAddr: byID[m.ID].GetHttpAddr(),
		})
	}
	return out, nil
}

// AddMember adds a node through the leader and records its addresses.
func (c *Cluster) AddMember(ctx context.Context, req *consentv1.AddMemberRequest) error {
	return c.join(ctx, &clusterv1.JoinRequest{
		Id: req.GetId(), RaftAddr: req.GetRaftAddr(), GrpcAddr: req.GetGrpcAddr(),
		HttpAddr: req.GetHttpAddr(), NonVoter: req.GetNonVoter(),
	})
}

// RemoveMember removes a node through the leader and forgets its addresses.
func (c *Cluster) RemoveMember(ctx context.Context, id string) error {
	ms, err := c.rn.Members()
	if err != nil {
		return err
	}
	found := false
	for _, m := range ms {
		found = found || m.ID == id
	}
	if !found {
		return fmt.Errorf("%w: %s", ErrMemberNotFound, id)
	}
	var last error
	for {
		err := c.leaveOnce(ctx, id)
		if err == nil || !retryableWrite(err) {
			return err
		}
		last = err
		if rerr := c.retry(ctx, last); rerr != nil {
			return rerr
		}
	}
}

func (c *Cluster) join(ctx context.Context, req *clusterv1.JoinRequest) error {
	var last error
	for {
		err := c.joinOnce(ctx, req)
		if err == nil || !retryableWrite(err) {
			return err
		}
		last = err
		if rerr := c.retry(ctx, last); rerr != nil {
			return rerr
		}
	}
}

func (c *Cluster) joinOnce(ctx context.Context, req *clusterv1.JoinRequest) error {
	if c.rn.IsLeader() {
		return c.addOnLeader(ctx, req)
	}
	client, leader, err := c.leaderClient()
	if err != nil {
		return err
	}
	resp, err := client.Join(ctx, req)
	if err != nil {
		return fmt.Errorf("%w: forwarding join to %s: %w", raftnode.ErrOutcomeUnknown, leader, err)
	}
	return outcomeError(resp.GetOutcome(), leader, resp.GetMessage())
}

func (c *Cluster) leaveOnce(ctx context.Context, id string) error {
	if c.rn.IsLeader() {
		return c.removeOnLeader(ctx, id)
	}
	client, leader, err := c.leaderClient()
	if err != nil {
		return err
	}
	resp, err := client.Leave(ctx, &clusterv1.LeaveRequest{Id: id})
	if err != nil {
		return fmt.Errorf("%w: forwarding leave to %s: %w", raftnode.ErrOutcomeUnknown, leader, err)
	}
	return outcomeError(resp.GetOutcome(), leader, resp.GetMessage())
}

func outcomeError(o clusterv1.Outcome, leader, msg string) error {
	switch o {
	case clusterv1.Outcome_OUTCOME_APPLIED:
		return nil
	case clusterv1.Outcome_OUTCOME_NOT_LEADER:
		return fmt.Errorf("%w: %s: %s", raftnode.ErrNotLeader, leader, msg)
	case clusterv1.Outcome_OUTCOME_REJECTED:
		return fmt.Errorf("cluster: rejected by %s: %s", leader, msg)
	default:
		return fmt.Errorf("%w: %s: %s", raftnode.ErrOutcomeUnknown, leader, msg)
	}
}

func (c *Cluster) addOnLeader(ctx context.Context, req *clusterv1.JoinRequest) error {
	if err := c.proposeNode(ctx, &commandv1.UpsertNode{
		Id: req.GetId(), RaftAddr: req.GetRaftAddr(), GrpcAddr: req.GetGrpcAddr(), HttpAddr: req.GetHttpAddr(),
	}); err != nil {
		return err
	}
	return c.rn.AddMember(ctx, req.GetId(), req.GetRaftAddr(), !req.GetNonVoter())
}

func (c *Cluster) removeOnLeader(ctx context.Context, id string) error {
	env := &commandv1.Envelope{Format: 1, Body: &commandv1.Envelope_RemoveNode{RemoveNode: &commandv1.RemoveNode{Id: id}}}
	if id == c.cfg.NodeID {
		// A leader removing itself shuts its raft down as soon as the change
		// commits, so nothing can be applied through it afterwards: forget
		// its addresses first, then leave, and report the removal done once
		// raft has committed it.
		if err := c.applyEnvelope(ctx, env); err != nil {
			return err
		}
		return c.rn.RemoveMember(ctx, id)
	}
	if err := c.rn.RemoveMember(ctx, id); err != nil {
		return err
	}
	return c.applyEnvelope(ctx, env)
}

func (c *Cluster) proposeNode(ctx context.Context, n *commandv1.UpsertNode) error {
	env := &commandv1.Envelope{Format: 1, Body: &commandv1.Envelope_UpsertNode{UpsertNode: n}}
	return c.applyEnvelope(ctx, env)
}

func (c *Cluster) applyEnvelope(ctx context.Context, env *commandv1.Envelope) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(env)
	if err != nil {
		return err
	}
	res, err := c.Apply(ctx, b)
	if err != nil {
		return err
	}
	if res.GetCode() != commandv1.Result_CODE_OK {
		return fmt.Errorf("cluster: %s: %s", res.GetCode(), res.GetMessage())
	}
	return nil
}
