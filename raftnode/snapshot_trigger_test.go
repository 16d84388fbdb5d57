package raftnode

import (
	"bytes"
	"context"
	"testing"
	"time"
)

func TestSnapshotDue(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name           string
		logBytes, size int64
		want           bool
	}{
		{"below the floor", 63 * mib, 0, false},
		{"at the floor, small register", 64 * mib, 100 * mib, true},
		{"at the floor, register eight times the log", 64 * mib, 512 * mib, true},
		{"at the floor, register more than eight times the log", 64 * mib, 513 * mib, false},
		{"an eighth of a large register", 1280 * mib, 10240 * mib, true},
		{"below an eighth of a large register", 1279 * mib, 10240 * mib, false},
		{"negative (never)", -1, 0, false},
	} {
		if got := snapshotDue(tc.logBytes, tc.size, 64*mib); got != tc.want {
			t.Errorf("%s: snapshotDue(%d, %d) = %v, want %v", tc.name, tc.logBytes, tc.size, got, tc.want)
		}
	}
}

// Raft's entry threshold is out of reach here; a snapshot must still come
// once the log since the last one carries SnapshotLogBytes, and the count
// starts again after it.
func TestSnapshotForLogBytes(t *testing.T) {
	sm := &memSM{}
	n, err := Open(Config{
		ID: "a", DataDir: t.TempDir(), BindAddr: "127.0.0.1:0",
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		SnapshotThreshold:  1 << 40, SnapshotLogBytes: 1 << 20,
	}, sm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	if err := n.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !n.Status().Ready {
		if ctx.Err() != nil {
			t.Fatal("never led")
		}
		time.Sleep(10 * time.Millisecond)
	}
	entry := bytes.Repeat([]byte("x"), 64<<10)
	for i := range 20 { // 1.25 MiB
		if _, err := n.Apply(ctx, entry); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	for {
		metas, err := n.snaps.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(metas) > 0 {
			if metas[0].Index < 20 {
				t.Fatalf("snapshot at index %d, before the entries that asked for it", metas[0].Index)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no snapshot after %d bytes of log", n.adapter.sinceSnapshot.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := n.adapter.sinceSnapshot.Load(); got >= 1<<20 {
		t.Fatalf("log bytes since the snapshot = %d; the snapshot did not restart the count", got)
	}
}
