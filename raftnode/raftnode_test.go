package raftnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// memSM is a minimal StateMachine: it records applied commands in order
// and, like the register, makes them visible only at Commit.
type memSM struct {
	mu        sync.Mutex
	applied   uint64   // committed
	cmds      []string // committed
	pendingAt uint64
	pending   []string
	commits   int
	size      int64 // what Size reports
}

func (m *memSM) Apply(indexes []uint64, data [][]byte) []any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]any, len(indexes))
	for i, idx := range indexes {
		if idx <= max(m.applied, m.pendingAt) {
			continue
		}
		if data[i] != nil {
			m.pending = append(m.pending, string(data[i]))
			out[i] = fmt.Sprintf("ok:%s@%d", data[i], idx)
		}
		m.pendingAt = idx
	}
	return out
}

func (m *memSM) Commit() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.commitLocked()
}

func (m *memSM) commitLocked() {
	if m.pendingAt > m.applied {
		m.applied = m.pendingAt
		m.cmds = append(m.cmds, m.pending...)
		m.pending = nil
		m.commits++
	}
}

func (m *memSM) AppliedIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied
}

// committed returns the commands readers would see.
func (m *memSM) committed() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.cmds)
}

func (m *memSM) Snapshot() (io.WriterTo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.commitLocked()
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d\n", m.applied)
	return &b, nil
}

func (m *memSM) Size() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.size
}

func (m *memSM) Restore(r io.Reader) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending, m.pendingAt = nil, 0
	_, err := fmt.Fscanf(r, "%d\n", &m.applied)
	return err
}

func openSingle(t *testing.T) (*Node, *memSM) {
	return openSingleCommitting(t, 0)
}

// openSingleCommitting opens a one-node cluster whose state machine
// commits every interval (0: the default).
func openSingleCommitting(t *testing.T, interval time.Duration) (*Node, *memSM) {
	t.Helper()
	sm := &memSM{}
	return openSingleWith(t, sm, Config{CommitInterval: interval}), sm
}

// openSingleWith opens and bootstraps a one-node cluster of sm with the
// tests' short timeouts and cfg's other settings.
func openSingleWith(t *testing.T, sm *memSM, cfg Config) *Node {
	t.Helper()
	cfg.ID, cfg.DataDir, cfg.BindAddr = "a", t.TempDir(), "127.0.0.1:0"
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	n, err := Open(cfg, sm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	if err := n.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSingleNodeApplyAndReadIndex(t *testing.T) {
	n, sm := openSingle(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Before the leader has confirmed its term, a read index is refused
	// (ErrNotLeader or ErrNotReady), never served.
	deadline := time.Now().Add(5 * time.Second)
	for !n.Status().Ready {
		if time.Now().After(deadline) {
			t.Fatal("leader never confirmed its term")
		}
		if _, _, err := n.ReadIndex(ctx); err == nil && !n.Status().Ready {
			// A read index may only succeed once the gate has passed.
			t.Fatal("read index served before the leadership barrier")
		}
		time.Sleep(10 * time.Millisecond)
	}
	res, err := n.Apply(ctx, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := res.(string); s == "" || s[:4] != "ok:x" {
		t.Fatalf("result %v", res)
	}
	idx, err := n.LinearizableRead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sm.AppliedIndex() < idx {
		t.Fatalf("applied %d < read index %d after LinearizableRead", sm.AppliedIndex(), idx)
	}
	// Many concurrent reads share verification rounds and all succeed.
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := n.LinearizableRead(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestApplyAfterShutdownIsRefusedDefinitely(t *testing.T) {
	n, _ := openSingle(t)
	if err := n.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Apply(context.Background(), []byte("late")); !errors.Is(err, ErrShutdown) {
		t.Fatalf("apply after shutdown: %v, want ErrShutdown", err)
	}
}

func TestClassifyApplyError(t *testing.T) {
	for _, tc := range []struct {
		in   error
		want error
	}{
		{raft.ErrNotLeader, ErrNotLeader},
		{raft.ErrLeadershipTransferInProgress, ErrNotLeader},
		{raft.ErrEnqueueTimeout, ErrEnqueueTimeout},
		{raft.ErrLeadershipLost, ErrOutcomeUnknown},
		{raft.ErrRaftShutdown, ErrOutcomeUnknown},
		{raft.ErrAbortedByRestore, ErrOutcomeUnknown},
		{errors.New("disk full"), ErrOutcomeUnknown},
	} {
		if got := classifyApplyError(tc.in); !errors.Is(got, tc.want) {
			t.Errorf("classify(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestApplyRefusedBeforeProposalWhenContextExpired(t *testing.T) {
	n, _ := openSingle(t)
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := n.Apply(expired, []byte("y"))
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v, want a plain context error (nothing proposed)", err)
	}
}

// A leader that loses its only follower cannot commit: a write proposed then
// must come back as outcome unknown, never as a definite failure.
func TestProposalThatCannotCommitIsUnknown(t *testing.T) {
	slow := func(id string) Config {
		return Config{ID: id, DataDir: t.TempDir(), BindAddr: "127.0.0.1:0",
			HeartbeatTimeout: 2 * time.Second, ElectionTimeout: 2 * time.Second, LeaderLeaseTimeout: time.Second}
	}
	a, err := Open(slow("a"), &memSM{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Kill() })
	b, err := Open(slow("b"), &memSM{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Kill() })
	if err := a.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !a.Status().Ready {
		if ctx.Err() != nil {
			t.Fatal("a never led")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.AddMember(ctx, "b", b.RaftAddr(), true); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, []byte("both")); err != nil {
		t.Fatal(err)
	}
	b.Kill()
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	_, err = a.Apply(short, []byte("orphan"))
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("write that could not commit: %v, want ErrOutcomeUnknown", err)
	}
}

func TestAppliedIndexNotifies(t *testing.T) {
	a := newAppliedIndex(3)
	notified := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	cur, handed, ch := a.current()
	if cur != 3 || handed != 3 {
		t.Fatalf("current = %d, %d", cur, handed)
	}
	a.set(3)
	a.set(2)
	if notified(ch) {
		t.Fatal("notified without a forward change")
	}
	a.setHanded(4)
	if !notified(ch) {
		t.Fatal("not notified of a handed change")
	}
	_, _, ch = a.current()
	a.set(5)
	if !notified(ch) {
		t.Fatal("not notified of a commit")
	}
	if cur, handed, _ := a.current(); cur != 5 || handed != 5 {
		t.Fatalf("current = %d, %d; want 5, 5", cur, handed)
	}
	a.reset(2)
	if cur, handed, _ := a.current(); cur != 2 || handed != 2 {
		t.Fatalf("after reset = %d, %d; want 2, 2", cur, handed)
	}
}

// A new leader's commit index points at its no-op/barrier entries, which
// the state machine never sees; a read at that index must still complete.
func TestLinearizableReadRightAfterElectionWithoutWrites(t *testing.T) {
	n, sm := openSingle(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for !n.Status().Ready {
		if ctx.Err() != nil {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	idx, err := n.LinearizableRead(ctx)
	if err != nil {
		t.Fatalf("read after election with no writes: %v (state machine at %d)", err, sm.AppliedIndex())
	}
	if idx <= sm.AppliedIndex() {
		t.Logf("read index %d already applied", idx)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, c := range map[string]Config{
		"no id":        {DataDir: "d", BindAddr: "127.0.0.1:0"},
		"no dir":       {ID: "a", BindAddr: "127.0.0.1:0"},
		"bad bind":     {ID: "a", DataDir: "d", BindAddr: "nohost"},
		"lease > hb":   {ID: "a", DataDir: "d", BindAddr: "127.0.0.1:0", HeartbeatTimeout: time.Second, LeaderLeaseTimeout: 2 * time.Second},
		"bad maxappnd": {ID: "a", DataDir: "d", BindAddr: "127.0.0.1:0", MaxAppendEntries: 5000},
		"tiny snaplog": {ID: "a", DataDir: "d", BindAddr: "127.0.0.1:0", SnapshotLogBytes: 1000},
	} {
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
	if err := (Config{ID: "a", DataDir: "d", BindAddr: "127.0.0.1:0"}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults rejected: %v", err)
	}
}

// eventually polls cond until it returns nil, failing the test with its
// last error once timeout has passed.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitReady(t *testing.T, n *Node) {
	t.Helper()
	eventually(t, 5*time.Second, func() error {
		if !n.Status().Ready {
			return errors.New("leader never confirmed its term")
		}
		return nil
	})
}

// A write is acknowledged once applied, before the state machine commits;
// a linearizable read then commits it rather than wait for the interval
// (10 s here, so a read that waited would miss its deadline).
func TestLinearizableReadCommitsWhatItNeeds(t *testing.T) {
	n, sm := openSingleCommitting(t, 10*time.Second)
	waitReady(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := n.Apply(ctx, []byte("w1")); err != nil {
		t.Fatal(err)
	}
	if got := sm.committed(); slices.Contains(got, "w1") {
		t.Fatalf("committed %v right after the write: expected the commit to wait for a reader or the interval", got)
	}
	idx, err := n.LinearizableRead(ctx)
	if err != nil {
		t.Fatalf("read: %v (a read must not wait for the commit interval)", err)
	}
	if got := sm.committed(); !slices.Contains(got, "w1") || sm.AppliedIndex() < idx {
		t.Fatalf("after the read the state machine shows %v at %d, read index %d", got, sm.AppliedIndex(), idx)
	}
	if n.AppliedIndex() < idx {
		t.Fatalf("node publishes %d, below the read index %d", n.AppliedIndex(), idx)
	}
}

// Without readers the interval alone commits.
func TestCommitIntervalCommitsWithoutReaders(t *testing.T) {
	n, sm := openSingleCommitting(t, 20*time.Millisecond)
	waitReady(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for i := range 5 {
		if _, err := n.Apply(ctx, fmt.Appendf(nil, "w%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for !slices.Contains(sm.committed(), "w4") {
		if ctx.Err() != nil {
			t.Fatalf("never committed by the interval: %v", sm.committed())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := sm.committed(); !slices.Equal(got, []string{"w0", "w1", "w2", "w3", "w4"}) {
		t.Fatalf("committed %v", got)
	}
}

// After an election on an idle cluster the commit index is the new leader's
// no-op, which the state machine never sees; status must still show the
// node caught up rather than one entry behind for as long as nobody writes.
func TestStatusAppliedReachesCommitAfterElectionWithoutWrites(t *testing.T) {
	n, sm := openSingle(t)
	waitReady(t, n)
	var st Status
	eventually(t, 5*time.Second, func() error {
		if st = n.Status(); st.CommitIndex == 0 || st.AppliedIndex != st.CommitIndex {
			return fmt.Errorf("status applied %d, commit %d, state machine %d: never caught up", st.AppliedIndex, st.CommitIndex, sm.AppliedIndex())
		}
		return nil
	})
	if sm.AppliedIndex() >= st.CommitIndex {
		t.Fatalf("state machine at %d, commit %d: the test needs a no-op entry past the state machine", sm.AppliedIndex(), st.CommitIndex)
	}
}

// An entry the state machine has not committed is not carried over.
func TestStatusAppliedWaitsForTheStateMachine(t *testing.T) {
	n, sm := openSingleCommitting(t, 10*time.Second)
	waitReady(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.Apply(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	st := n.Status()
	if st.AppliedIndex != sm.AppliedIndex() {
		t.Fatalf("status applied %d with the state machine committed at %d and an applied entry uncommitted (commit %d)", st.AppliedIndex, sm.AppliedIndex(), st.CommitIndex)
	}
}
