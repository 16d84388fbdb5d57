package raftnode

import (
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// recordingSM remembers how raft's batches reached the state machine and
// which of them each commit covered.
type recordingSM struct {
	calls     [][]uint64
	committed [][]uint64 // the indexes of each commit
	open      []uint64
	handed    uint64
	applied   uint64
}

func (r *recordingSM) Apply(indexes []uint64, data [][]byte) []any {
	r.calls = append(r.calls, slices.Clone(indexes))
	if indexes[len(indexes)-1] <= r.applied {
		return make([]any, len(indexes)) // a replay below the last commit: all skipped
	}
	out := make([]any, len(indexes))
	for i, idx := range indexes {
		out[i] = idx
	}
	r.open = append(r.open, indexes...)
	r.handed = indexes[len(indexes)-1]
	return out
}
func (r *recordingSM) Commit() {
	r.committed = append(r.committed, r.open)
	r.open = nil
	r.applied = r.handed
}
func (r *recordingSM) AppliedIndex() uint64           { return r.applied }
func (r *recordingSM) Snapshot() (io.WriterTo, error) { return nil, nil }
func (r *recordingSM) Restore(io.Reader) error        { return nil }
func (r *recordingSM) Size() int64                    { return 0 }

// A batch from raft reaches the register in order, and the register
// commits whenever maxApplyBytes of commands are pending (an oversized
// entry alone), so no transaction outgrows the bound; what is below it
// stays pending for the committer.
func TestApplyBatchBoundsTransactions(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name      string
		sizes     []int // bytes per entry
		committed [][]uint64
		pending   []uint64
	}{
		{"small entries stay pending", []int{10, 10, 10}, nil, []uint64{1, 2, 3}},
		{"1 MiB entries, four a commit", slices.Repeat([]int{mib}, 10), [][]uint64{{1, 2, 3, 4}, {5, 6, 7, 8}}, []uint64{9, 10}},
		{"an oversized entry goes alone", []int{mib, 5 * mib, mib}, [][]uint64{{1}, {2}}, []uint64{3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sm := &recordingSM{}
			a := newFSMAdapter(sm)
			var logs []*raft.Log
			for i, n := range tc.sizes {
				logs = append(logs, &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: make([]byte, n)})
			}
			res := a.ApplyBatch(logs)
			if !slices.EqualFunc(sm.committed, tc.committed, slices.Equal[[]uint64]) || !slices.Equal(sm.open, tc.pending) {
				t.Fatalf("commits %v then pending %v, want %v then %v", sm.committed, sm.open, tc.committed, tc.pending)
			}
			for i, r := range res {
				if r != uint64(i+1) {
					t.Fatalf("results %v: not one per entry in order", res)
				}
			}
			if len(res) != len(logs) || a.applied.handedIndex() != uint64(len(logs)) {
				t.Fatalf("%d results, handed %d; want %d", len(res), a.applied.handedIndex(), len(logs))
			}
			if want := uint64(len(logs) - len(tc.pending)); a.applied.get() != want {
				t.Fatalf("published %d, want the last commit %d", a.applied.get(), want)
			}
		})
	}
}

// After a restart raft replays entries at or below the register's last
// commit; they are skipped, leave nothing to commit, and must not make the
// size bound ask for a commit forever (a node once spun here, and then
// could not shut down).
func TestReplayBelowTheCommitNeverSpins(t *testing.T) {
	sm := &recordingSM{applied: 100}
	a := newFSMAdapter(sm)
	var logs []*raft.Log
	for i := range 12 {
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: make([]byte, 1<<20)})
	}
	done := make(chan []any, 1)
	go func() { done <- a.ApplyBatch(logs) }()
	select {
	case res := <-done:
		if len(res) != len(logs) || len(sm.committed) != 0 {
			t.Fatalf("%d results, commits %v", len(res), sm.committed)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ApplyBatch of a replay below the committed index never returned")
	}
}

// A snapshot counts as being written from its capture, when the bytes since
// the last one restart, until raft releases it, once however often.
func TestSnapshotsBeingWritten(t *testing.T) {
	a := newFSMAdapter(&recordingSM{})
	a.sinceSnapshot.Store(1 << 20)
	s1, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if got := a.writingSnapshots.Load(); got != 2 || a.sinceSnapshot.Load() != 0 {
		t.Fatalf("after two captures: %d being written, %d bytes since; want 2, 0", got, a.sinceSnapshot.Load())
	}
	s1.Release()
	s1.Release()
	if got := a.writingSnapshots.Load(); got != 1 {
		t.Fatalf("after one release (twice): %d being written, want 1", got)
	}
	s2.Release()
	if got := a.writingSnapshots.Load(); got != 0 {
		t.Fatalf("after both releases: %d being written, want 0", got)
	}
}
