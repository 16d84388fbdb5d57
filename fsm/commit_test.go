package fsm

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// crash ends the store as a killed process would: whatever is applied but
// not committed is gone. (A real crash also loses the page cache; bbolt's
// commit protocol makes that equivalent to losing the transaction.)
func (s *Store) crash(t testing.TB) {
	t.Helper()
	s.txMu.Lock()
	defer s.txMu.Unlock()
	s.rollbackLocked()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	s.db = nil
}

func reopen(t testing.TB, s *Store) *Store {
	t.Helper()
	r, err := Open(Config{Path: s.cfg.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// entries encodes n decisions for distinct patients, each its own entry.
func entries(t testing.TB, n int) [][]byte {
	t.Helper()
	out := make([][]byte, n)
	for i := range out {
		state := []string{"dissent", "consent_core"}[i%2]
		out[i] = encode(t, record(decision(TestNHSNumber(i), "scr", state, i%28+1, fmt.Sprintf("req-%d", i))))
	}
	return out
}

func indexes(from, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(from + i)
	}
	return out
}

func TestAppliedIsInvisibleUntilCommit(t *testing.T) {
	s := openTest(t)
	es := entries(t, 3)
	applyNow(s, indexes(1, 1), es[:1])
	before := digest(t, s)

	res := s.Apply(indexes(2, 2), es[1:])
	if r := res[1].(*commandv1.Result); r.GetCode() != commandv1.Result_CODE_OK {
		t.Fatalf("apply: %v %s", r.GetCode(), r.GetMessage())
	}
	if got := s.AppliedIndex(); got != 1 {
		t.Fatalf("AppliedIndex before commit = %d, want 1 (the committed index)", got)
	}
	rev, consents, err := s.GetConsents(TestNHSNumber(2))
	if err != nil {
		t.Fatal(err)
	}
	if rev != 1 || consents[0].Version != 0 {
		t.Fatalf("read before commit saw revision %d, %+v: uncommitted state leaked", rev, consents[0])
	}
	if got := digest(t, s); got != before {
		t.Fatal("digest changed before commit")
	}

	s.Commit()
	if got := s.AppliedIndex(); got != 3 {
		t.Fatalf("AppliedIndex after commit = %d, want 3", got)
	}
	if c := state(t, s, TestNHSNumber(2), "scr"); c.Version != 1 {
		t.Fatalf("after commit: %+v, want version 1", c)
	}
}

// The invariant deferral must keep: an entry applied (and perhaps
// acknowledged) but lost in a crash before its commit is applied again
// from raft's log after restart, with the same results and the same state
// as a node that never crashed.
func TestCrashBeforeCommitReplaysToTheSameState(t *testing.T) {
	es := entries(t, 40)
	// A second decision for an earlier patient and a repeated request id,
	// so the replay exercises the projection and the idempotency table.
	es = append(es, encode(t, record(decision(TestNHSNumber(3), "scr", "dissent", 29, "req-late"))),
		encode(t, record(decision(TestNHSNumber(5), "scr", "consent_core", 2, "req-5"))))
	n := len(es)

	steady := openTest(t)
	want := applyNow(steady, indexes(1, n), es)

	s := openTest(t)
	applyNow(s, indexes(1, 20), es[:20])
	first := s.Apply(indexes(21, n-20), es[20:])
	s.crash(t)

	r := reopen(t, s)
	if got := r.AppliedIndex(); got != 20 {
		t.Fatalf("after crash AppliedIndex = %d, want 20 (the last commit)", got)
	}
	// Raft replays from its snapshot index (here: the log's start).
	again := applyNow(r, indexes(1, n), es)
	for i := range n {
		if i < 20 {
			if again[i] != nil {
				t.Fatalf("entry %d re-applied below the committed index: %v", i+1, again[i])
			}
			continue
		}
		if !proto.Equal(again[i].(*commandv1.Result), first[i-20].(*commandv1.Result)) ||
			!proto.Equal(again[i].(*commandv1.Result), want[i].(*commandv1.Result)) {
			t.Fatalf("entry %d: replay gave %v, first application %v, steady node %v", i+1, again[i], first[i-20], want[i])
		}
	}
	if got, w := digest(t, r), digest(t, steady); got != w {
		t.Fatalf("replayed register digest %s, steady node %s", got, w)
	}
}

func TestCloseCommits(t *testing.T) {
	s := openTest(t)
	es := entries(t, 5)
	s.Apply(indexes(1, 5), es)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := reopen(t, s).AppliedIndex(); got != 5 {
		t.Fatalf("reopened at %d, want 5: Close dropped applied entries", got)
	}
}

// Raft truncates its log up to a snapshot's index, so a snapshot must
// cover everything applied and leave it committed.
func TestSnapshotCommitsFirst(t *testing.T) {
	s := openTest(t)
	es := entries(t, 6)
	applyNow(s, indexes(1, 2), es[:2])
	s.Apply(indexes(3, 4), es[2:])
	snap := snapshotBytes(t, s)
	if got := s.AppliedIndex(); got != 6 {
		t.Fatalf("AppliedIndex after snapshot = %d, want 6", got)
	}
	fresh := openTest(t)
	if err := fresh.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if got := fresh.AppliedIndex(); got != 6 {
		t.Fatalf("snapshot restored at %d, want 6", got)
	}
	if got, want := digest(t, fresh), digest(t, s); got != want {
		t.Fatal("snapshot misses applied entries")
	}
}

func TestRestoreDropsUncommitted(t *testing.T) {
	src := openTest(t)
	es := entries(t, 10)
	applyNow(src, indexes(1, 8), es[:8])
	snap := snapshotBytes(t, src)

	s := openTest(t)
	applyNow(s, indexes(1, 2), es[:2])
	s.Apply(indexes(3, 1), [][]byte{encode(t, record(decision(TestNHSNumber(9), "scr", "dissent", 1, "only-here")))})
	if err := s.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	s.Commit()
	if got := s.AppliedIndex(); got != 8 {
		t.Fatalf("AppliedIndex = %d, want the snapshot's 8", got)
	}
	if got, want := digest(t, s), digest(t, src); got != want {
		t.Fatal("an entry applied before the restore survived it")
	}
	// It carries on from the snapshot.
	applyNow(s, indexes(9, 2), es[8:])
	applyNow(src, indexes(9, 2), es[8:])
	if got, want := digest(t, s), digest(t, src); got != want {
		t.Fatal("diverged after the restore")
	}
}

// Size is what raftnode weighs a snapshot's cost by: the committed register.
func TestSizeFollowsCommits(t *testing.T) {
	s := openTest(t)
	empty := s.Size()
	if empty <= 0 {
		t.Fatalf("Size of an empty register = %d", empty)
	}
	s.Apply(indexes(1, 2000), entries(t, 2000))
	if got := s.Size(); got != empty {
		t.Fatalf("Size = %d before the commit, want %d", got, empty)
	}
	s.Commit()
	if got := s.Size(); got <= empty {
		t.Fatalf("Size after committing 2,000 decisions = %d, not above %d", got, empty)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := s.Size(); got != 0 {
		t.Fatalf("Size of a closed store = %d", got)
	}
}
