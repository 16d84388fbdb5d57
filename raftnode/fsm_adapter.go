package raftnode

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// StateMachine is what a Node replicates. It is declared here in plain types
// so raftnode never imports the register; fsm.Store satisfies it.
type StateMachine interface {
	// Apply applies committed entries in log order, durably, in one
	// transaction, skipping indexes it has already applied. data[i] is nil
	// for entries without a command; they still advance the applied index.
	Apply(indexes []uint64, data [][]byte) []any
	// AppliedIndex is the last index made durable by Apply or Restore.
	AppliedIndex() uint64
	// Snapshot captures a point-in-time view cheaply; writing it happens
	// later, concurrently with Apply. If the value is an io.Closer it is
	// closed when raft releases the snapshot.
	Snapshot() (io.WriterTo, error)
	// Restore replaces the whole state with a snapshot's content.
	Restore(r io.Reader) error
}

// fsmAdapter turns a StateMachine into raft.BatchingFSM and tells waiting
// readers when the applied index moves.
type fsmAdapter struct {
	sm       StateMachine
	applied  *appliedIndex
	restores atomic.Uint64
}

var _ raft.BatchingFSM = (*fsmAdapter)(nil)

func (a *fsmAdapter) Apply(l *raft.Log) any {
	return a.ApplyBatch([]*raft.Log{l})[0]
}

// maxApplyBytes bounds the command bytes applied in one StateMachine.Apply
// (one transaction). Raft hands over up to MaxAppendEntries entries at
// once, and an entry may be a batch of a thousand decisions: a follower
// catching up from an empty disk applied 256 such entries (128,000
// decisions) in one bbolt transaction, whose dirty pages got it killed in
// a 300 MB memory cgroup. Smaller transactions also let readers waiting
// on the applied index go sooner.
const maxApplyBytes = 4 << 20

func (a *fsmAdapter) ApplyBatch(logs []*raft.Log) []any {
	res := make([]any, 0, len(logs))
	for len(logs) > 0 {
		n, size := 0, 0
		for n < len(logs) && (n == 0 || size+len(logs[n].Data) <= maxApplyBytes) {
			size += len(logs[n].Data)
			n++
		}
		res = append(res, a.apply(logs[:n])...)
		logs = logs[n:]
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
	a.applied.set(a.sm.AppliedIndex())
	return res
}

func (a *fsmAdapter) Snapshot() (raft.FSMSnapshot, error) {
	w, err := a.sm.Snapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{w: w}, nil
}

func (a *fsmAdapter) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := a.sm.Restore(rc); err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	a.applied.set(a.sm.AppliedIndex())
	a.restores.Add(1)
	return nil
}

type fsmSnapshot struct{ w io.WriterTo }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.w.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {
	if c, ok := s.w.(io.Closer); ok {
		c.Close()
	}
}

// appliedIndex lets many readers wait for the state machine to reach an index
// without polling: each change closes the channel they wait on.
type appliedIndex struct {
	mu      sync.Mutex
	index   uint64
	changed chan struct{}
}

func newAppliedIndex(start uint64) *appliedIndex {
	return &appliedIndex{index: start, changed: make(chan struct{})}
}

func (a *appliedIndex) set(i uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i == a.index {
		return
	}
	a.index = i
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *appliedIndex) get() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index
}

// current returns the index and a channel closed at its next change.
func (a *appliedIndex) current() (uint64, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.index, a.changed
}

// SnapshotRestores counts snapshots installed into the state machine since
// Open (a follower catching up by snapshot, or a start-up restore).
func (n *Node) SnapshotRestores() uint64 { return n.adapter.restores.Load() }
