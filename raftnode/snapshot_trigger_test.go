package raftnode

import (
	"bytes"
	"context"
	"fmt"
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

func TestQuietSnapshotDue(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name     string
		logBytes int64
		quietFor time.Duration
		after    time.Duration
		want     bool
	}{
		{"quiet long enough, log at the floor", 64 * mib, 30 * time.Second, 30 * time.Second, true},
		{"quiet long enough, log below the floor", 64*mib - 1, time.Hour, 30 * time.Second, false},
		{"writes still coming", 640 * mib, 29 * time.Second, 30 * time.Second, false},
		{"turned off", 640 * mib, time.Hour, -1, false},
		{"negative (never)", -1, time.Hour, 30 * time.Second, false},
	} {
		if got := quietSnapshotDue(tc.logBytes, tc.quietFor, 64*mib, tc.after); got != tc.want {
			t.Errorf("%s: quietSnapshotDue(%d, %v, after %v) = %v, want %v", tc.name, tc.logBytes, tc.quietFor, tc.after, got, tc.want)
		}
	}
}

// A register far larger than the log, so that neither the size rule nor
// raft's entry count asks for a snapshot: once writes stop, the quiet rule
// must take one, so that what a burst left is not replayed by every
// restart and every rebuilt follower.
func TestSnapshotWhenQuiet(t *testing.T) {
	n := openSingleWith(t, &memSM{size: 1 << 40}, Config{
		SnapshotThreshold: 1 << 40, SnapshotLogBytes: 1 << 20, SnapshotWhenQuiet: time.Second,
	})
	waitReady(t, n)
	last := writeBurst(t, n)
	eventually(t, 20*time.Second, func() error {
		metas, err := n.snaps.List()
		if err != nil {
			return err
		}
		if len(metas) == 0 || metas[0].Index < last {
			return fmt.Errorf("no snapshot of the burst (to index %d) after the log went quiet (%d bytes since the last)",
				last, n.adapter.sinceSnapshot.Load())
		}
		return nil
	})
}

// Raft's entry threshold is out of reach here; a snapshot must still come
// once the log since the last one carries SnapshotLogBytes, and the count
// starts again after it.
func TestSnapshotForLogBytes(t *testing.T) {
	n := openSingleWith(t, &memSM{}, Config{SnapshotThreshold: 1 << 40, SnapshotLogBytes: 1 << 20})
	waitReady(t, n)
	writeBurst(t, n)
	eventually(t, 20*time.Second, func() error {
		metas, err := n.snaps.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(metas) == 0 {
			return fmt.Errorf("no snapshot after %d bytes of log", n.adapter.sinceSnapshot.Load())
		}
		if metas[0].Index < 20 {
			t.Fatalf("snapshot at index %d, before the entries that asked for it", metas[0].Index)
		}
		return nil
	})
	if got := n.adapter.sinceSnapshot.Load(); got >= 1<<20 {
		t.Fatalf("log bytes since the snapshot = %d; the snapshot did not restart the count", got)
	}
}

// writeBurst applies 1.25 MiB of commands in 64 KiB entries, more than
// the SnapshotLogBytes the tests above set, and returns the last index.
func writeBurst(t *testing.T, n *Node) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	entry := bytes.Repeat([]byte("x"), 64<<10)
	for i := range 20 {
		if _, err := n.Apply(ctx, entry); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	return n.raft.LastIndex()
}
