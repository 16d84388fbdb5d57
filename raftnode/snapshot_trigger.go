package raftnode

import (
	"errors"
	"time"

	"github.com/hashicorp/raft"
)

// snapshotCheckEvery is how often the log's size since the last snapshot
// is looked at; the look is one atomic load until it passes the floor.
const snapshotCheckEvery = time.Second

// snapshotDue reports whether logBytes of log since the last snapshot are
// worth a snapshot of a state machine of size bytes: at least floor, and at
// least an eighth of size so the snapshots' cost stays in proportion.
func snapshotDue(logBytes, size int64, floor uint64) bool {
	return logBytes >= 0 && uint64(logBytes) >= floor && logBytes >= size/8
}

// runSnapshotTrigger asks raft for a snapshot whenever snapshotDue holds.
// Raft's own trigger counts entries, and an entry may be one decision or a
// thousand; what a restart pays for is bytes (see Config.SnapshotLogBytes).
func (n *Node) runSnapshotTrigger() {
	tick := time.NewTicker(snapshotCheckEvery)
	defer tick.Stop()
	floor := n.cfg.SnapshotLogBytes
	for {
		select {
		case <-n.closed:
			return
		case <-tick.C:
		}
		logBytes := n.adapter.sinceSnapshot.Load()
		if logBytes < 0 || uint64(logBytes) < floor {
			continue
		}
		size := n.adapter.sm.Size()
		if !snapshotDue(logBytes, size, floor) {
			continue
		}
		start := time.Now()
		switch err := n.raft.Snapshot().Error(); {
		case err == nil:
			n.log.Info("snapshot taken for the log's size since the last one",
				"log_bytes", logBytes, "register_bytes", size, "took", time.Since(start).Round(time.Millisecond))
		case errors.Is(err, raft.ErrNothingNewToSnapshot), errors.Is(err, raft.ErrRaftShutdown):
		default:
			n.log.Warn("snapshot for the log's size failed; raft's entry count still triggers them", "err", err, "log_bytes", logBytes)
		}
	}
}
