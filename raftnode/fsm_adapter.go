package raftnode

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// StateMachine is what a Node replicates. It is declared here in plain types
// so raftnode never imports the register; fsm.Store satisfies it.
type StateMachine interface {
	// Apply applies committed entries in log order, skipping indexes it has
	// already applied, into an open transaction that only Commit makes
	// durable and visible to readers. data[i] is nil for entries without a
	// command; they still advance the applied index.
	Apply(indexes []uint64, data [][]byte) []any
	// Commit makes everything applied durable and visible. It panics when
	// it cannot: entries raft acknowledged would be lost, and only a
	// restart (which replays them from raft's log) can recover.
	Commit()
	// AppliedIndex is the last index made durable and visible by Commit,
	// Snapshot or Restore.
	AppliedIndex() uint64
	// Snapshot commits, then captures that point-in-time view cheaply;
	// writing it happens later, concurrently with Apply. If the value is an
	// io.Closer it is closed when raft releases the snapshot.
	Snapshot() (io.WriterTo, error)
	// Restore replaces the whole state with a snapshot's content, dropping
	// whatever was applied and not committed.
	Restore(r io.Reader) error
	// Size is about how many bytes a snapshot has to read: what a snapshot
	// costs, which decides how much log may pile up between two.
	Size() int64
}

// fsmAdapter turns a StateMachine into raft.BatchingFSM, decides when the
// state machine commits, and tells waiting readers when the applied index
// moves.
//
// Commits are decoupled from raft's batches, as etcd's backend does: a
// register commit costs two fsyncs and most of a follower's CPU under write
// load, and raft's log already holds every applied entry durably. The
// register commits when CommitInterval has passed, when maxApplyBytes of
// commands are pending, before a snapshot, and whenever a reader waits for
// an index that is applied but not yet committed, so linearizable reads
// never wait for the interval.
type fsmAdapter struct {
	sm       StateMachine
	applied  *appliedIndex
	restores atomic.Uint64

	// commitMu serialises commits with publishing their index, so the
	// published index never goes backwards.
	commitMu sync.Mutex
	// pending approximates the command bytes applied since the last commit.
	pending atomic.Int64
	// sinceSnapshot counts the bytes of entries handed over since the last
	// snapshot or restore, including entries replayed after a restart (they
	// are still in the log after the snapshot, and a restart reads them).
	sinceSnapshot atomic.Int64
	// writingSnapshots counts snapshots captured and not yet released by
	// raft: sinceSnapshot restarts at the capture, but the snapshot is still
	// being written (a minute at ten million patients).
	writingSnapshots atomic.Int32
	// want asks the committer for a commit now (a reader is waiting).
	want chan struct{}
	// commitSeconds times commits by what asked for them.
	commitSeconds *prometheus.HistogramVec
}

// Why the register committed, for consentd_register_commit_seconds.
const (
	commitInterval = "interval" // the committer's tick
	commitRead     = "read"     // a reader waits for an applied entry
	commitSize     = "size"     // maxApplyBytes pending
	commitSnapshot = "snapshot"
)

func newFSMAdapter(sm StateMachine) *fsmAdapter {
	return &fsmAdapter{
		sm: sm, applied: newAppliedIndex(sm.AppliedIndex()), want: make(chan struct{}, 1),
		commitSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "consentd_register_commit_seconds",
			Help:    "Time to commit the register's applied entries (holding off further applies), by what asked for it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"reason"}),
	}
}

var _ raft.BatchingFSM = (*fsmAdapter)(nil)

func (a *fsmAdapter) Apply(l *raft.Log) any {
	return a.ApplyBatch([]*raft.Log{l})[0]
}

// maxApplyBytes bounds the command bytes in one register transaction. Raft
// hands over up to MaxAppendEntries entries at once, and an entry may be a
// batch of a thousand decisions: a follower catching up from an empty disk
// applied 256 such entries (128,000 decisions) in one bbolt transaction,
// whose dirty pages got it killed in a 300 MB memory cgroup.
const maxApplyBytes = 4 << 20

func (a *fsmAdapter) ApplyBatch(logs []*raft.Log) []any {
	var all int64
	for _, l := range logs {
		all += int64(len(l.Data))
	}
	a.sinceSnapshot.Add(all)
	res := make([]any, 0, len(logs))
	for len(logs) > 0 {
		pending := a.pending.Load()
		n, size := 0, int64(0)
		for n < len(logs) && (pending+size+int64(len(logs[n].Data)) <= maxApplyBytes || pending+size == 0) {
			size += int64(len(logs[n].Data))
			n++
		}
		if n == 0 {
			a.commit(commitSize)
			continue
		}
		res = append(res, a.apply(logs[:n])...)
		logs = logs[n:]
		if a.pending.Add(size) >= maxApplyBytes {
			a.commit(commitSize)
		}
	}
	return res
}

func (a *fsmAdapter) apply(logs []*raft.Log) []any {
	indexes := make([]uint64, len(logs))
	data := make([][]byte, len(logs))
	for i, l := range logs {
		indexes[i] = l.Index
		if l.Type == raft.LogCommand {
			data[i] = l.Data
		}
	}
	res := a.sm.Apply(indexes, data)
	a.applied.setHanded(indexes[len(indexes)-1])
	return res
}

// commit commits what is applied, if anything, and publishes the index.
func (a *fsmAdapter) commit(reason string) {
	a.commitMu.Lock()
	defer a.commitMu.Unlock()
	// Zeroed even when there is nothing to commit: entries replayed below
	// the committed index after a restart count as pending bytes but are
	// skipped, and ApplyBatch would otherwise ask for a commit forever.
	a.pending.Store(0)
	if a.applied.handedIndex() <= a.applied.get() {
		return
	}
	start := time.Now()
	a.sm.Commit()
	a.commitSeconds.WithLabelValues(reason).Observe(time.Since(start).Seconds())
	a.applied.set(a.sm.AppliedIndex())
}

// requestCommit asks the committer for a commit without waiting for it;
// requests made while one is pending share it.
func (a *fsmAdapter) requestCommit() {
	select {
	case a.want <- struct{}{}:
	default:
	}
}

// runCommitter commits on request and every interval until closed. Commits
// run here rather than on a reader's goroutine because a failed commit
// panics, and a panic on a request goroutine could be recovered by a server
// and leave the node running without entries it acknowledged.
func (a *fsmAdapter) runCommitter(closed <-chan struct{}, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		reason := commitInterval
		select {
		case <-closed:
			return
		case <-a.want:
			reason = commitRead
		case <-tick.C:
		}
		a.commit(reason)
	}
}

func (a *fsmAdapter) Snapshot() (raft.FSMSnapshot, error) {
	a.commitMu.Lock()
	defer a.commitMu.Unlock()
	start := time.Now()
	w, err := a.sm.Snapshot()
	a.commitSeconds.WithLabelValues(commitSnapshot).Observe(time.Since(start).Seconds())
	a.pending.Store(0)
	if err == nil {
		a.sinceSnapshot.Store(0)
	}
	a.applied.set(a.sm.AppliedIndex())
	if err != nil {
		return nil, err
	}
	a.writingSnapshots.Add(1)
	return &fsmSnapshot{w: w, writing: &a.writingSnapshots}, nil
}

func (a *fsmAdapter) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	a.commitMu.Lock()
	defer a.commitMu.Unlock()
	if err := a.sm.Restore(rc); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	a.pending.Store(0)
	a.sinceSnapshot.Store(0)
	a.applied.reset(a.sm.AppliedIndex())
	a.restores.Add(1)
	return nil
}

type fsmSnapshot struct {
	w        io.WriterTo
	writing  *atomic.Int32
	released sync.Once
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.w.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {
	s.released.Do(func() {
		s.writing.Add(-1)
		if c, ok := s.w.(io.Closer); ok {
			c.Close()
		}
	})
}

// appliedIndex lets many readers wait for the state machine to reach an
// index without polling: each change closes the channel they wait on. It
// tracks two indexes: the committed one (readable) and the one handed to
// the state machine (applied, not yet readable); readers waiting for the
// latter ask for a commit.
type appliedIndex struct {
	mu      sync.Mutex
	index   uint64
	handed  uint64
	changed chan struct{}
}

func newAppliedIndex(start uint64) *appliedIndex {
	return &appliedIndex{index: start, handed: start, changed: make(chan struct{})}
}

func (a *appliedIndex) notifyLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// set publishes a committed index; it never moves backwards.
func (a *appliedIndex) set(i uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i <= a.index {
		return
	}
	a.index = i
	a.handed = max(a.handed, i)
	a.notifyLocked()
}

// setHanded records that the state machine has applied up to i.
func (a *appliedIndex) setHanded(i uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i <= a.handed {
		return
	}
	a.handed = i
	a.notifyLocked()
}

// reset is for a restore, which replaces the state wholesale.
func (a *appliedIndex) reset(i uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.index, a.handed = i, i
	a.notifyLocked()
}

func (a *appliedIndex) get() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index
}

func (a *appliedIndex) handedIndex() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.handed
}

// current returns the committed and handed indexes and a channel closed at
// the next change of either.
func (a *appliedIndex) current() (committed, handed uint64, changed <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index, a.handed, a.changed
}

// SnapshotRestores counts snapshots installed into the state machine since
// Open (a follower catching up by snapshot, or a start-up restore).
func (n *Node) SnapshotRestores() uint64 { return n.adapter.restores.Load() }
