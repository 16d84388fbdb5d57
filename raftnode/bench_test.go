package raftnode

import (
	"context"
	"testing"
	"time"
)

// BenchmarkLinearizableReadParallel measures the read barrier on a
// one-node cluster: concurrent readers share VerifyLeader rounds.
func BenchmarkLinearizableReadParallel(b *testing.B) {
	sm := &memSM{}
	n, err := Open(Config{ID: "a", DataDir: b.TempDir(), BindAddr: "127.0.0.1:0",
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond}, sm)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	if err := n.Bootstrap(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !n.Status().Ready {
		if time.Now().After(deadline) {
			b.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := n.LinearizableRead(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
