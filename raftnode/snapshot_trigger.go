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

// quietSnapshotDue reports whether logBytes of log since the last snapshot,
// with no entry for quietFor, are worth a snapshot now: at least floor,
// whatever the state machine's size, once quiet for after (never when
// after is 0 or negative).
func quietSnapshotDue(logBytes int64, quietFor time.Duration, floor uint64, after time.Duration) bool {
	return after > 0 && quietFor >= after && logBytes >= 0 && uint64(logBytes) >= floor
}

// runSnapshotTrigger asks raft for a snapshot whenever snapshotDue holds,
// and once the log has been quiet for SnapshotWhenQuiet after at least
// SnapshotLogBytes of entries. Raft's own trigger counts entries, and an
// entry may be one decision or a thousand; what a restart or a rebuilt
// follower pays for is the bytes after the last snapshot (see
// Config.SnapshotLogBytes and Config.SnapshotWhenQuiet).
func (n *Node) runSnapshotTrigger() {
	tick := time.NewTicker(snapshotCheckEvery)
	defer tick.Stop()
	floor := n.cfg.SnapshotLogBytes
	lastBytes, quietSince := n.adapter.sinceSnapshot.Load(), time.Now()
	for {
		select {
		case <-n.closed:
			return
		case <-tick.C:
		}
		logBytes := n.adapter.sinceSnapshot.Load()
		if logBytes != lastBytes {
			lastBytes, quietSince = logBytes, time.Now()
		}
		if logBytes < 0 || uint64(logBytes) < floor {
			continue
		}
		size := n.adapter.sm.Size()
		reason := "the log's size since the last one"
		if !snapshotDue(logBytes, size, floor) {
			if !quietSnapshotDue(logBytes, time.Since(quietSince), floor, n.cfg.SnapshotWhenQuiet) {
				continue
			}
			reason = "a quiet log after a burst"
			// One try per quiet spell, whatever its outcome.
			quietSince = time.Now()
		}
		start := time.Now()
		switch err := n.raft.Snapshot().Error(); {
		case err == nil:
			n.log.Info("snapshot taken for "+reason,
				"log_bytes", logBytes, "register_bytes", size, "took", time.Since(start).Round(time.Millisecond))
		case errors.Is(err, raft.ErrNothingNewToSnapshot), errors.Is(err, raft.ErrRaftShutdown):
		default:
			n.log.Warn("snapshot for "+reason+" failed; raft's entry count still triggers them", "err", err, "log_bytes", logBytes)
		}
	}
}
