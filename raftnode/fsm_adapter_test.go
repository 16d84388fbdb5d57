package raftnode

import (
	"io"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
)

// recordingSM remembers how raft's batches reached the state machine.
type recordingSM struct {
	calls   [][]uint64
	applied uint64
}

func (r *recordingSM) Apply(indexes []uint64, data [][]byte) []any {
	r.calls = append(r.calls, slices.Clone(indexes))
	out := make([]any, len(indexes))
	for i, idx := range indexes {
		out[i] = idx
	}
	r.applied = indexes[len(indexes)-1]
	return out
}
func (r *recordingSM) AppliedIndex() uint64           { return r.applied }
func (r *recordingSM) Snapshot() (io.WriterTo, error) { return nil, nil }
func (r *recordingSM) Restore(io.Reader) error        { return nil }

// A batch from raft reaches the register in transactions of at most
// maxApplyBytes of commands (one oversized entry alone), in log order, with
// one result per entry and the applied index moved after each.
func TestApplyBatchBoundsTransactions(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name  string
		sizes []int // bytes per entry
		want  [][]uint64
	}{
		{"small entries share one", []int{10, 10, 10}, [][]uint64{{1, 2, 3}}},
		{"1 MiB entries, four a time", slices.Repeat([]int{mib}, 10), [][]uint64{{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10}}},
		{"an oversized entry goes alone", []int{mib, 5 * mib, mib}, [][]uint64{{1}, {2}, {3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sm := &recordingSM{}
			a := &fsmAdapter{sm: sm, applied: newAppliedIndex(0)}
			var logs []*raft.Log
			for i, n := range tc.sizes {
				logs = append(logs, &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: make([]byte, n)})
			}
			res := a.ApplyBatch(logs)
			if !slices.EqualFunc(sm.calls, tc.want, slices.Equal[[]uint64]) {
				t.Fatalf("transactions %v, want %v", sm.calls, tc.want)
			}
			for i, r := range res {
				if r != uint64(i+1) {
					t.Fatalf("results %v: not one per entry in order", res)
				}
			}
			if len(res) != len(logs) || a.applied.get() != uint64(len(logs)) {
				t.Fatalf("%d results, applied %d; want %d", len(res), a.applied.get(), len(logs))
			}
		})
	}
}
