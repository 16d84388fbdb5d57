package raftnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Node is one member of the raft group with its stores and transport.
type Node struct {
	cfg  Config
	log  *slog.Logger
	raft *raft.Raft

	adapter   *fsmAdapter
	applied   *appliedIndex
	logStore  *raftboltdb.BoltStore
	snaps     *raft.FileSnapshotStore
	transport *raft.NetworkTransport

	// confirmedTerm is the term in which this node, as leader, has committed
	// a barrier; reads are served only while it equals the current term.
	confirmedTerm atomic.Uint64
	reads         readBatcher
	metrics       *nodeMetrics

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

// logCacheEntries is how many of the newest log entries stay decoded in
// memory, so a follower that is only a little behind is fed without
// reading the log store. Not more: a batch entry holds up to 1,000
// decisions (hundreds of KB), and 1,024 of them kept the leader's heap at
// 290 MB after a bulk load.
const logCacheEntries = 128

// Open starts raft on cfg.DataDir with sm as its state machine. A node with
// existing state rejoins its cluster; a new one waits for Bootstrap or to be
// added by a leader.
func Open(cfg Config, sm StateMachine) (*Node, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("raftnode: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, closed: make(chan struct{})}
	n.reads.kick = make(chan struct{}, 1)
	hlog := newHCLog(cfg.Logger, "raft")

	var err error
	n.snaps, err = raft.NewFileSnapshotStoreWithLogger(raftDir, cfg.RetainSnapshots, hlog)
	if err != nil {
		return nil, fmt.Errorf("raftnode: open snapshot store: %w", err)
	}
	logPath := filepath.Join(raftDir, "raft.db")
	var lastSnapshot uint64
	if metas, err := n.snaps.List(); err == nil && len(metas) > 0 {
		lastSnapshot = metas[0].Index
	}
	if st, err := prefetchLog(logPath, lastSnapshot); err != nil {
		n.log.Warn("could not read the raft log ahead; starting without", "err", err)
	} else if st.Entries > 0 {
		n.log.Info("raft log after the last snapshot: read-ahead started", "after", lastSnapshot,
			"entries", st.Entries, "bytes", st.Bytes, "took", st.Took.Round(time.Millisecond))
	}
	n.logStore, err = raftboltdb.New(raftboltdb.Options{
		Path:   logPath,
		NoSync: false, // an acknowledged write must be on disk on a quorum
		BoltOptions: &bbolt.Options{
			Timeout:        time.Second,
			NoFreelistSync: true,
			FreelistType:   bbolt.FreelistMapType,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("raftnode: open log store: %w", err)
	}
	stream := cfg.StreamLayer
	if stream == nil {
		stream, err = newTCPStreamLayer(cfg.BindAddr, cfg.AdvertiseAddr, cfg.ServerTLS, cfg.ClientTLS)
		if err != nil {
			n.logStore.Close()
			return nil, fmt.Errorf("raftnode: %w", err)
		}
	}
	n.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 3,
		// Pipelined replication can deadlock a node that steps down while a
		// follower is unreachable: the pipeline's decoder waits to hand a
		// response to a replicator that has stopped, the sender waits on the
		// decoder, and raft.Shutdown waits on both forever. The Jepsen
		// pause-leader scenario hit it (SIGTERM never finished). One RPC in
		// flight turns pipelining off; batching (MaxAppendEntries) keeps
		// replication throughput.
		MaxRPCsInFlight: 1,
		Timeout:         10 * time.Second,
		Logger:          hlog,
	})

	// The register keeps its own applied index durably, so raft need not
	// restore the last snapshot on start and replay; entries at or below the
	// register's index are skipped. Only a register behind the newest
	// snapshot (for example a wiped register file) needs the restore.
	noRestore := true
	if metas, err := n.snaps.List(); err == nil && len(metas) > 0 && sm.AppliedIndex() < metas[0].Index {
		noRestore = false
		n.log.Warn("register is behind the newest snapshot; restoring it on start",
			"applied", sm.AppliedIndex(), "snapshot", metas[0].Index)
	}
	n.adapter = newFSMAdapter(sm)
	n.applied = n.adapter.applied

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NoSnapshotRestoreOnStart = noRestore
	if err := raft.ValidateConfig(rc); err != nil {
		n.closeStores()
		return nil, fmt.Errorf("raftnode: %w", err)
	}
	// Replication reads each new entry back from the log store once per
	// follower; raft-boltdb decodes it from msgpack every time (about a
	// tenth of a follower's CPU under write load in a profile). The cache
	// keeps the newest entries decoded; writes still go to disk first.
	logs, err := raft.NewLogCache(logCacheEntries, n.logStore)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("raftnode: log cache: %w", err)
	}
	n.raft, err = raft.NewRaft(rc, n.adapter, logs, n.logStore, n.snaps, n.transport)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("raftnode: start raft: %w", err)
	}
	n.metrics = newNodeMetrics(n)
	n.wg.Add(4)
	go n.watchLeadership()
	go n.serveReadIndex()
	go func() {
		defer n.wg.Done()
		n.adapter.runCommitter(n.closed, cfg.CommitInterval)
	}()
	go func() {
		defer n.wg.Done()
		n.runSnapshotTrigger()
	}()
	n.log.Info("raft started", "id", cfg.ID, "addr", n.transport.LocalAddr(),
		"applied", sm.AppliedIndex(), "restore_snapshot_on_start", !noRestore)
	return n, nil
}

// HasState reports whether this node has been part of a cluster before.
func (n *Node) HasState() (bool, error) {
	return raft.HasExistingState(n.logStore, n.logStore, n.snaps)
}

// Bootstrap makes this node a one-member cluster, once. On a node with
// existing state it does nothing.
func (n *Node) Bootstrap() error {
	has, err := n.HasState()
	if err != nil {
		return err
	}
	if has {
		n.log.Info("existing raft state found; not bootstrapping again")
		return nil
	}
	cfg := raft.Configuration{Servers: []raft.Server{{
		ID: raft.ServerID(n.cfg.ID), Address: n.transport.LocalAddr(), Suffrage: raft.Voter,
	}}}
	if err := n.raft.BootstrapCluster(cfg).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("raftnode: bootstrap: %w", err)
	}
	return nil
}

// ID is this node's raft id.
func (n *Node) ID() string { return n.cfg.ID }

// RaftAddr is the address other nodes dial for raft.
func (n *Node) RaftAddr() string { return string(n.transport.LocalAddr()) }

// Apply proposes data and waits for it to be applied, returning the state
// machine's result. Errors say what is known: ErrNotLeader and
// ErrEnqueueTimeout mean nothing was proposed; ErrOutcomeUnknown (wrapping
// the cause, e.g. context.DeadlineExceeded) means it may have committed.
func (n *Node) Apply(ctx context.Context, data []byte) (any, error) {
	select {
	case <-n.closed:
		return nil, ErrShutdown
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	enqueue := n.cfg.EnqueueTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < enqueue {
		enqueue = max(time.Until(dl), time.Millisecond)
	}
	start := time.Now()
	f := n.raft.Apply(data, enqueue)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		n.metrics.observeApply(start, err)
		if err != nil {
			return nil, classifyApplyError(err)
		}
		return f.Response(), nil
	case <-ctx.Done():
		n.metrics.observeApply(start, ctx.Err())
		return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
	}
}

// classifyApplyError keeps "never proposed" apart from "may have committed".
func classifyApplyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrEnqueueTimeout
	default:
		// Leadership lost, shutdown or a storage error after the entry was
		// handed to raft: it may be in the log of a quorum already.
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
}

// WaitApplied blocks until the state machine reflects, readably, every
// entry up to index. Raft never hands no-op and barrier entries to the
// state machine, so an index that is one of those (a new leader's first
// entries) is reached once raft has dispatched it and the last real entry
// before it is committed. An entry applied but not yet committed by the
// register is committed now rather than at the next interval.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	target := index
	var poll *time.Ticker
	for {
		cur, handed, changed := n.applied.current()
		if cur >= target {
			return nil
		}
		if n.raft.AppliedIndex() >= index {
			if target = n.lastStateMachineEntry(index, cur); cur >= target {
				return nil
			}
		}
		if handed >= target {
			n.adapter.requestCommit()
		}
		if poll == nil {
			// raft's dispatch counter has no notification; poll it only
			// while waiting.
			poll = time.NewTicker(2 * time.Millisecond)
			defer poll.Stop()
		}
		select {
		case <-changed:
		case <-poll.C:
		case <-ctx.Done():
			return fmt.Errorf("waiting to apply index %d (at %d): %w", index, cur, ctx.Err())
		case <-n.closed:
			return ErrShutdown
		}
	}
}

// Flush returns once everything the state machine has applied so far is
// committed and readable, asking for the commit rather than waiting for
// the interval. Comparing registers across nodes needs it: each commits on
// its own timer.
func (n *Node) Flush(ctx context.Context) error {
	return n.WaitApplied(ctx, n.applied.handedIndex())
}

// lastStateMachineEntry is the highest index in (floor, index] that raft
// hands to the state machine, or floor if there is none.
func (n *Node) lastStateMachineEntry(index, floor uint64) uint64 {
	for i := index; i > floor; i-- {
		var l raft.Log
		if err := n.logStore.GetLog(i, &l); err != nil {
			// Unknown: assume it must be applied rather than risk a stale read.
			return i
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return i
		}
	}
	return floor
}

// AppliedIndex is the state machine's applied index.
func (n *Node) AppliedIndex() uint64 { return n.applied.get() }

// maxReadableScan bounds how many log entries readableIndex looks at; a gap
// wider than that is a node still applying, whose register index is the
// honest answer.
const maxReadableScan = 8

// ReadableIndex is the highest log index whose state a read here sees, given
// the state machine's committed index: that index carried over the entries
// raft never hands the state machine (a new leader's no-op, barriers) once
// raft has dispatched them, as they change nothing. Without the carry an
// idle cluster shows every node one entry behind its commit index after
// each election, which reads as lag that is not there.
func (n *Node) ReadableIndex(committed uint64) uint64 {
	dispatched := n.raft.AppliedIndex()
	if dispatched <= committed || dispatched-committed > maxReadableScan {
		return committed
	}
	if n.lastStateMachineEntry(dispatched, committed) != committed {
		// An entry the state machine has not committed yet.
		return committed
	}
	return dispatched
}

// Leader returns the current leader's id and raft address, empty if unknown.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node believes it leads. Never use it to
// decide that a local read is fresh: use ReadIndex.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Status is a point-in-time summary of this node's raft state.
type Status struct {
	ID          string
	State       string
	LeaderID    string
	LeaderAddr  string
	Term        uint64
	CommitIndex uint64
	// AppliedIndex is the state machine's committed index, carried over
	// the no-op entries after it (see ReadableIndex); not raft's dispatch
	// counter, which runs ahead of what a read sees.
	AppliedIndex uint64
	LastLogIndex uint64
	LastContact  time.Time
	// Ready is true on a leader that has confirmed its term.
	Ready bool
}

// Status returns this node's raft state.
func (n *Node) Status() Status {
	leaderAddr, leaderID := n.raft.LeaderWithID()
	term := n.raft.CurrentTerm()
	return Status{
		ID:           n.cfg.ID,
		State:        stateName(n.raft.State()),
		LeaderID:     string(leaderID),
		LeaderAddr:   string(leaderAddr),
		Term:         term,
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.ReadableIndex(n.applied.get()),
		LastLogIndex: n.raft.LastIndex(),
		LastContact:  n.raft.LastContact(),
		Ready:        n.raft.State() == raft.Leader && n.confirmedTerm.Load() == term,
	}
}

// StaleInfo says how far behind a local (stale) read may be: the highest index
// this node knows to be committed and how long since it heard from a leader.
func (n *Node) StaleInfo() (knownCommit uint64, sinceLeaderContact time.Duration) {
	if n.raft.State() == raft.Leader {
		return n.raft.CommitIndex(), 0
	}
	last := n.raft.LastContact()
	if last.IsZero() {
		return n.raft.CommitIndex(), -1
	}
	return n.raft.CommitIndex(), time.Since(last)
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	default:
		return "shutdown"
	}
}

// Shutdown hands leadership to another voter if this node leads, then stops
// raft and closes the transport and stores. The state machine is the
// caller's to close afterwards.
func (n *Node) Shutdown(ctx context.Context) error {
	return n.stop(ctx, true)
}

// Kill stops raft at once without handing over leadership, as a crash would
// (minus losing the page cache); for failure tests.
func (n *Node) Kill() error {
	ctx, cancel := context.WithTimeout(context.Background(), killTimeout)
	defer cancel()
	return n.stop(ctx, false)
}

// killTimeout bounds how long Kill waits for raft's goroutines.
const killTimeout = 10 * time.Second

func (n *Node) stop(ctx context.Context, transfer bool) error {
	var err error
	n.closeOnce.Do(func() {
		if transfer && n.raft.State() == raft.Leader && n.voterCount() > 1 {
			f := n.raft.LeadershipTransfer()
			done := make(chan error, 1)
			go func() { done <- f.Error() }()
			select {
			case terr := <-done:
				if terr != nil {
					n.log.Warn("leadership transfer on shutdown failed", "err", terr)
				} else {
					n.log.Info("leadership transferred on shutdown")
				}
			case <-ctx.Done():
			case <-time.After(n.cfg.TransferTimeout):
			}
		}
		close(n.closed)
		done := make(chan error, 1)
		go func() { done <- n.raft.Shutdown().Error() }()
		select {
		case err = <-done:
		case <-ctx.Done():
			// A raft that will not stop must not hold the process hostage:
			// the caller is about to exit, and the log store stays open so
			// that raft's goroutines never write to a closed file.
			n.log.Error("raft did not shut down in time; leaving it to process exit", "err", ctx.Err())
			n.transport.Close()
			err = fmt.Errorf("raft shutdown: %w", ctx.Err())
			return
		}
		n.wg.Wait()
		if cerr := n.closeStores(); err == nil {
			err = cerr
		}
	})
	return err
}

func (n *Node) closeStores() error {
	var errs []error
	if n.transport != nil {
		errs = append(errs, n.transport.Close())
	}
	if n.logStore != nil {
		errs = append(errs, n.logStore.Close())
	}
	return errors.Join(errs...)
}

func (n *Node) voterCount() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	c := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			c++
		}
	}
	return c
}

// FirstLogIndex is the oldest entry still in the log; followers behind it
// can only catch up by snapshot.
func (n *Node) FirstLogIndex() uint64 {
	i, err := n.logStore.FirstIndex()
	if err != nil {
		return 0
	}
	return i
}
