package raftnode

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Member is one server of the raft configuration.
type Member struct {
	ID       string
	RaftAddr string
	// Suffrage is voter, nonvoter or staging.
	Suffrage string
}

// Members returns the latest raft configuration.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raftnode: configuration: %w", err)
	}
	servers := f.Configuration().Servers
	out := make([]Member, 0, len(servers))
	for _, s := range servers {
		out = append(out, Member{ID: string(s.ID), RaftAddr: string(s.Address), Suffrage: suffrageName(s.Suffrage)})
	}
	return out, nil
}

func suffrageName(s raft.ServerSuffrage) string {
	switch s {
	case raft.Voter:
		return "voter"
	case raft.Nonvoter:
		return "nonvoter"
	default:
		return "staging"
	}
}

// AddMember adds a server as voter (or non-voter). Adding a member that is
// already present with the same address and suffrage does nothing; one with a
// new address is removed and added again.
func (n *Node) AddMember(ctx context.Context, id, addr string, voter bool) error {
	members, err := n.Members()
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.ID != id && m.RaftAddr == addr {
			return fmt.Errorf("raftnode: address %s already belongs to member %s", addr, m.ID)
		}
		if m.ID == id {
			if m.RaftAddr == addr && (m.Suffrage == "voter") == voter {
				return nil
			}
			if err := n.RemoveMember(ctx, id); err != nil {
				return err
			}
		}
	}
	timeout := ctxTimeout(ctx, 10*time.Second)
	var f raft.IndexFuture
	if voter {
		f = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	} else {
		f = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	}
	if err := f.Error(); err != nil {
		return classifyConfigError(err)
	}
	n.log.Info("member added", "member", id, "addr", addr, "voter", voter)
	return nil
}

// RemoveMember removes a server from the configuration.
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	f := n.raft.RemoveServer(raft.ServerID(id), 0, ctxTimeout(ctx, 10*time.Second))
	if err := f.Error(); err != nil {
		return classifyConfigError(err)
	}
	n.log.Info("member removed", "member", id)
	return nil
}

func classifyConfigError(err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	if errors.Is(err, raft.ErrEnqueueTimeout) {
		return ErrEnqueueTimeout
	}
	return fmt.Errorf("%w: membership change: %w", ErrOutcomeUnknown, err)
}

func ctxTimeout(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return def
}
