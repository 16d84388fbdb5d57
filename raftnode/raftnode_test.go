package raftnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// memSM is a minimal StateMachine: it records applied commands in order.
type memSM struct {
	mu      sync.Mutex
	applied uint64
	cmds    []string
}

func (m *memSM) Apply(indexes []uint64, data [][]byte) []any {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]any, len(indexes))
	for i, idx := range indexes {
		if idx <= m.applied {
			continue
		}
		if data[i] != nil {
			m.cmds = append(m.cmds, string(data[i]))
			out[i] = fmt.Sprintf("ok:%s@%d", data[i], idx)
		}
		m.applied = idx
	}
	return out
}

func (m *memSM) AppliedIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied
}

func (m *memSM) Snapshot() (io.WriterTo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d\n", m.applied)
	return &b, nil
}

func (m *memSM) Restore(r io.Reader) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err := fmt.Fscanf(r, "%d\n", &m.applied)
	return err
}

func openSingle(t *testing.T) (*Node, *memSM) {
	t.Helper()
	sm := &memSM{}
	n, err := Open(Config{
		ID: "a", DataDir: t.TempDir(), BindAddr: "127.0.0.1:0",
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
	}, sm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	if err := n.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	return n, sm
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
	cur, ch := a.current()
	if cur != 3 {
		t.Fatalf("current = %d", cur)
	}
	a.set(3)
	select {
	case <-ch:
		t.Fatal("notified without a change")
	default:
	}
	a.set(5)
	select {
	case <-ch:
	default:
		t.Fatal("not notified of a change")
	}
	if cur, _ := a.current(); cur != 5 {
		t.Fatalf("current = %d, want 5", cur)
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
	} {
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
	if err := (Config{ID: "a", DataDir: "d", BindAddr: "127.0.0.1:0"}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults rejected: %v", err)
	}
}
