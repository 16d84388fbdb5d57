package cluster

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/lmc-consent/consentd/proto/cluster/v1"
	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
	"github.com/lmc-consent/consentd/raftnode"
)

// peerServer answers other nodes. It never forwards a write onwards: a node
// that is no longer leader says so and the caller finds the new one, so a
// request cannot loop or be proposed twice by forwarding.
type peerServer struct {
	clusterv1.UnimplementedPeerServiceServer
	c *Cluster
}

// PeerServer returns the node-to-node service to register on the gRPC server.
func (c *Cluster) PeerServer() clusterv1.PeerServiceServer { return &peerServer{c: c} }

func (p *peerServer) Apply(ctx context.Context, req *clusterv1.ApplyRequest) (*clusterv1.ApplyResponse, error) {
	if !p.c.rn.IsLeader() {
		return &clusterv1.ApplyResponse{Outcome: clusterv1.Outcome_OUTCOME_NOT_LEADER, Message: "not the leader"}, nil
	}
	v, err := p.c.rn.Apply(ctx, req.GetCommand())
	switch {
	case err == nil:
	case errors.Is(err, raftnode.ErrNotLeader):
		return &clusterv1.ApplyResponse{Outcome: clusterv1.Outcome_OUTCOME_NOT_LEADER, Message: err.Error()}, nil
	case errors.Is(err, raftnode.ErrEnqueueTimeout), errors.Is(err, raftnode.ErrShutdown):
		return &clusterv1.ApplyResponse{Outcome: clusterv1.Outcome_OUTCOME_REJECTED, Message: err.Error()}, nil
	default:
		return &clusterv1.ApplyResponse{Outcome: clusterv1.Outcome_OUTCOME_UNKNOWN, Message: err.Error()}, nil
	}
	msg, ok := v.(proto.Message)
	if !ok {
		return &clusterv1.ApplyResponse{Outcome: clusterv1.Outcome_OUTCOME_UNKNOWN, Message: "state machine returned no result"}, nil
	}
	b, err := proto.Marshal(msg)
	if err != nil {
		return &clusterv1.ApplyResponse{Outcome: clusterv1.Outcome_OUTCOME_UNKNOWN, Message: err.Error()}, nil
	}
	return &clusterv1.ApplyResponse{Outcome: clusterv1.Outcome_OUTCOME_APPLIED, Result: b}, nil
}

func (p *peerServer) ReadIndex(ctx context.Context, _ *clusterv1.ReadIndexRequest) (*clusterv1.ReadIndexResponse, error) {
	idx, term, err := p.c.rn.ReadIndex(ctx)
	switch {
	case err == nil:
		return &clusterv1.ReadIndexResponse{Outcome: clusterv1.Outcome_OUTCOME_APPLIED, Index: idx, Term: term}, nil
	case errors.Is(err, raftnode.ErrNotLeader):
		return &clusterv1.ReadIndexResponse{Outcome: clusterv1.Outcome_OUTCOME_NOT_LEADER, Message: err.Error()}, nil
	default:
		return &clusterv1.ReadIndexResponse{Outcome: clusterv1.Outcome_OUTCOME_REJECTED, Message: err.Error()}, nil
	}
}

func (p *peerServer) Join(ctx context.Context, req *clusterv1.JoinRequest) (*clusterv1.JoinResponse, error) {
	if req.GetId() == "" || req.GetRaftAddr() == "" {
		return &clusterv1.JoinResponse{Outcome: clusterv1.Outcome_OUTCOME_REJECTED, Message: "id and raft_addr are required"}, nil
	}
	// A join may arrive at any member; it is passed on to the leader once.
	err := p.c.join(ctx, req)
	return &clusterv1.JoinResponse{Outcome: outcomeOf(err), Message: errMessage(err)}, nil
}

func (p *peerServer) Leave(ctx context.Context, req *clusterv1.LeaveRequest) (*clusterv1.LeaveResponse, error) {
	if !p.c.rn.IsLeader() {
		return &clusterv1.LeaveResponse{Outcome: clusterv1.Outcome_OUTCOME_NOT_LEADER, Message: "not the leader"}, nil
	}
	err := p.c.removeOnLeader(ctx, req.GetId())
	return &clusterv1.LeaveResponse{Outcome: outcomeOf(err), Message: errMessage(err)}, nil
}

func outcomeOf(err error) clusterv1.Outcome {
	switch {
	case err == nil:
		return clusterv1.Outcome_OUTCOME_APPLIED
	case errors.Is(err, raftnode.ErrNotLeader), errors.Is(err, ErrNoLeader):
		return clusterv1.Outcome_OUTCOME_NOT_LEADER
	case errors.Is(err, raftnode.ErrOutcomeUnknown), errors.Is(err, context.DeadlineExceeded):
		return clusterv1.Outcome_OUTCOME_UNKNOWN
	default:
		return clusterv1.Outcome_OUTCOME_REJECTED
	}
}

func errMessage(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// joinLoop asks the configured members to add this node until one accepts.
func (c *Cluster) joinLoop() {
	c.mu.Lock()
	self := c.self
	c.mu.Unlock()
	req := &clusterv1.JoinRequest{Id: self.GetId(), RaftAddr: self.GetRaftAddr(), GrpcAddr: self.GetGrpcAddr(), HttpAddr: self.GetHttpAddr()}
	backoff := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		for _, addr := range c.cfg.Join {
			select {
			case <-c.stop:
				return
			default:
			}
			cc, err := c.conn(addr)
			if err != nil {
				c.log.Warn("join: cannot dial member", "member", addr, "err", err)
				continue
			}
			ctx, cancel := context.WithTimeout(c.bg, 15*time.Second)
			resp, err := clusterv1.NewPeerServiceClient(cc).Join(ctx, req)
			cancel()
			if err == nil && resp.GetOutcome() == clusterv1.Outcome_OUTCOME_APPLIED {
				c.log.Info("joined the cluster", "via", addr)
				return
			}
			if attempt%10 == 0 {
				c.log.Warn("join attempt failed; will retry", "via", addr, "err", err, "message", resp.GetMessage())
			}
		}
		select {
		case <-c.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// publishLoop keeps this node's addresses in the replicated directory, so
// peers can forward to it after it restarts on new API addresses.
func (c *Cluster) publishLoop() {
	t := time.NewTicker(c.cfg.PublishInterval)
	defer t.Stop()
	for {
		if !c.published() && c.isMember() {
			ctx, cancel := context.WithTimeout(c.bg, 10*time.Second)
			c.mu.Lock()
			self := proto.Clone(c.self).(*commandv1.UpsertNode)
			c.mu.Unlock()
			if err := c.proposeNode(ctx, self); err != nil {
				c.log.Debug("publishing addresses failed; will retry", "err", err)
			} else {
				c.log.Info("published node addresses", "grpc", self.GetGrpcAddr(), "http", self.GetHttpAddr())
			}
			cancel()
		}
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
	}
}

func (c *Cluster) published() bool {
	nodes, err := c.dir.Nodes()
	if err != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range nodes {
		if n.GetId() == c.self.GetId() {
			return proto.Equal(n, c.self)
		}
	}
	return false
}

func (c *Cluster) isMember() bool {
	ms, err := c.rn.Members()
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.ID == c.cfg.NodeID {
			return true
		}
	}
	return false
}
