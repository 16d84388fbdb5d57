package raftnode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lmc-consent/consentd/internal/broken"
)

// watchLeadership runs the leadership gate: after every election this node
// wins, it commits a barrier before serving reads, because a new leader's
// commit index may lag entries the previous leader already acknowledged.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.closed:
			return
		case leader := <-n.raft.LeaderCh():
			n.confirmedTerm.Store(0)
			if leader && broken.On(broken.NoBarrier) {
				// Broken on purpose: serve reads before the previous terms' entries are known committed and applied.
				n.confirmedTerm.Store(n.raft.CurrentTerm())
			} else if leader {
				n.wg.Add(1)
				go n.confirmTerm(n.raft.CurrentTerm())
			} else {
				n.log.Info("lost leadership")
			}
		}
	}
}

func (n *Node) confirmTerm(term uint64) {
	defer n.wg.Done()
	backoff := 50 * time.Millisecond
	for {
		if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
			return
		}
		start := time.Now()
		err := n.raft.Barrier(n.cfg.BarrierTimeout).Error()
		if err == nil {
			if n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term {
				n.confirmedTerm.Store(term)
				n.log.Info("leadership confirmed; serving linearizable reads",
					"term", term, "barrier", time.Since(start).Round(time.Millisecond))
			}
			return
		}
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrRaftShutdown) {
			return
		}
		n.log.Warn("leadership barrier failed; retrying", "term", term, "err", err)
		select {
		case <-n.closed:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// readBatcher collects read-index requests so that all reads waiting at one
// moment share one VerifyLeader round.
type readBatcher struct {
	mu      sync.Mutex
	waiting []chan readResult
	kick    chan struct{}
}

type readResult struct {
	index uint64
	term  uint64
	err   error
}

// ReadIndex returns a commit index that this node confirmed, as leader of a
// confirmed term, after the call began. Once the state machine has applied
// it, a local read is linearizable. Followers get ErrNotLeader and must ask
// the leader.
func (n *Node) ReadIndex(ctx context.Context) (index, term uint64, err error) {
	if n.raft.State() != raft.Leader {
		return 0, 0, ErrNotLeader
	}
	if broken.On(broken.LocalLeaderRead) {
		// Broken on purpose: trust the local state alone, with no gate and no quorum round.
		return n.applied.get(), n.raft.CurrentTerm(), nil
	}
	ch := make(chan readResult, 1)
	n.reads.mu.Lock()
	n.reads.waiting = append(n.reads.waiting, ch)
	n.reads.mu.Unlock()
	select {
	case n.reads.kick <- struct{}{}:
	default:
	}
	start := time.Now()
	select {
	case r := <-ch:
		n.metrics.observeReadIndex(start, r.err)
		return r.index, r.term, r.err
	case <-ctx.Done():
		return 0, 0, fmt.Errorf("read index: %w", ctx.Err())
	case <-n.closed:
		return 0, 0, ErrShutdown
	}
}

// LinearizableRead waits until this leader's state machine reflects every
// write acknowledged before the call began, and returns the read index.
func (n *Node) LinearizableRead(ctx context.Context) (uint64, error) {
	idx, _, err := n.ReadIndex(ctx)
	if err != nil {
		return 0, err
	}
	if err := n.WaitApplied(ctx, idx); err != nil {
		return 0, err
	}
	return idx, nil
}

func (n *Node) serveReadIndex() {
	defer n.wg.Done()
	for {
		select {
		case <-n.closed:
			n.reads.mu.Lock()
			for _, ch := range n.reads.waiting {
				ch <- readResult{err: ErrShutdown}
			}
			n.reads.waiting = nil
			n.reads.mu.Unlock()
			return
		case <-n.reads.kick:
		}
		n.reads.mu.Lock()
		batch := n.reads.waiting
		n.reads.waiting = nil
		n.reads.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		idx, term, err := n.confirmReadIndex()
		n.metrics.readBatch.Observe(float64(len(batch)))
		for _, ch := range batch {
			ch <- readResult{index: idx, term: term, err: err}
		}
	}
}

// confirmReadIndex is raft's ReadIndex: record the commit index, then prove
// leadership with a heartbeat round to a quorum, in a term whose barrier has
// committed.
func (n *Node) confirmReadIndex() (uint64, uint64, error) {
	term := n.raft.CurrentTerm()
	if n.raft.State() != raft.Leader {
		return 0, 0, ErrNotLeader
	}
	if n.confirmedTerm.Load() != term {
		return 0, 0, ErrNotReady
	}
	idx := n.raft.CommitIndex()
	// hashicorp/raft never answers a VerifyLeader queued just before the
	// leader shut itself down (removed from the configuration), so the wait
	// is bounded: a read that cannot be confirmed in time is retried like
	// any other "not leader".
	verified := make(chan error, 1)
	vf := n.raft.VerifyLeader()
	go func() { verified <- vf.Error() }()
	timer := time.NewTimer(2 * n.cfg.ElectionTimeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-verified:
	case <-n.closed:
		return 0, 0, ErrShutdown
	case <-timer.C:
		err = errors.New("leadership not confirmed within two election timeouts")
	}
	if err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return 0, 0, ErrShutdown
		}
		return 0, 0, fmt.Errorf("%w: %w", ErrNotLeader, err)
	}
	if n.raft.CurrentTerm() != term {
		return 0, 0, ErrNotLeader
	}
	return idx, term, nil
}
