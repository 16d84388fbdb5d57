package raftnode

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// Config configures one raft node. Zero durations and counts take the
// defaults of DefaultConfig when passed through WithDefaults.
type Config struct {
	// ID is the raft server id; it must stay the same across restarts.
	ID string
	// DataDir holds raft.db (log and stable store) and snapshots/.
	DataDir string
	// BindAddr is the raft listen address (host:port; port 0 picks one).
	BindAddr string
	// AdvertiseAddr is the address other nodes dial; defaults to the bound
	// address, which must then not be unspecified (0.0.0.0).
	AdvertiseAddr string
	// StreamLayer replaces the TCP stream layer altogether (tests).
	StreamLayer raft.StreamLayer
	// ServerTLS and ClientTLS, when set, put raft on mutual TLS: accepted
	// connections are TLS servers with ServerTLS (which decides who may speak
	// raft), dialed ones TLS clients with ClientTLS. Both or neither.
	ServerTLS, ClientTLS *tls.Config
	Logger               *slog.Logger

	HeartbeatTimeout   time.Duration // default 1s
	ElectionTimeout    time.Duration // default 1s
	LeaderLeaseTimeout time.Duration // default 500ms
	CommitTimeout      time.Duration // default 50ms
	// MaxAppendEntries bounds entries per AppendEntries RPC and per FSM batch.
	// An entry may be a batch of up to 1,000 decisions (hundreds of KB), and
	// a follower holds an RPC's entries decoded until they are applied: at
	// 256, one rebuilt from an empty disk under a 300 MiB memory cap was
	// OOM-killed; at 64 it caught up.
	MaxAppendEntries int // default 64
	// SnapshotInterval is how often raft checks SnapshotThreshold.
	SnapshotInterval  time.Duration // default 30s
	SnapshotThreshold uint64        // default 8192 entries since the last snapshot
	// SnapshotLogBytes also asks for a snapshot once the log since the last
	// one carries this many bytes of commands, or an eighth of the state
	// machine's size if that is more. A restart reads every entry after the
	// last snapshot twice (raft scans them for membership changes before
	// the node can serve, then hands them to the register, which skips
	// them), and an entry may be a batch of 1,000 decisions: after loading
	// a million patients in 2,610 such entries and no snapshot, that read
	// was 3 of a follower's 3.1 s restart in a 300 MiB memory cgroup. The
	// eighth keeps the snapshots' own cost, a full copy of the register
	// each, within a few times the log's bytes as the register grows.
	SnapshotLogBytes uint64 // default 64 MiB
	// SnapshotWhenQuiet also asks for a snapshot once no entry has come for
	// this long and the log since the last snapshot holds SnapshotLogBytes,
	// however large the state machine: a bulk load can leave up to an
	// eighth of the register (and up to SnapshotThreshold entries) after
	// the last snapshot, which a follower rebuilt from an empty disk then
	// replays after installing the snapshot (a minute of its two at ten
	// million patients) and a restart reads. The snapshot costs a read of
	// the register, taken while nothing is written. Negative turns it off.
	SnapshotWhenQuiet time.Duration // default 30s
	// TrailingLogs stay after a snapshot so a briefly lagging follower
	// catches up from the log rather than by snapshot install.
	TrailingLogs uint64 // default 10240
	// RetainSnapshots is how many snapshots stay on disk. Each is a full
	// copy of the register, and the register is durable on its own (it is
	// not restored from a snapshot on start), while raft finishes writing a
	// new snapshot before it reaps the old one: one is enough.
	RetainSnapshots int // default 1
	// CommitInterval is the longest the state machine holds applied entries
	// before committing them (making them durable and visible to stale
	// reads); it commits sooner for a linearizable read, a snapshot, or
	// 4 MiB of pending commands. Raft's log holds the entries meanwhile.
	// A commit holds off applying, for longer the more it carries: at
	// 100 ms a write's p99 at concurrency 64 was 44 ms, at 20 ms 30 ms,
	// for a tenth less throughput (bench/README.md).
	CommitInterval time.Duration // default 20ms
	// EnqueueTimeout bounds handing an entry to raft (not its commit).
	EnqueueTimeout time.Duration // default 5s
	// BarrierTimeout bounds the barrier a new leader issues before serving reads.
	BarrierTimeout time.Duration // default 10s
	// TransferTimeout bounds the leadership transfer on shutdown.
	TransferTimeout time.Duration // default 5s
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		MaxAppendEntries:   64,
		SnapshotInterval:   30 * time.Second,
		SnapshotThreshold:  8192,
		SnapshotLogBytes:   64 << 20,
		SnapshotWhenQuiet:  30 * time.Second,
		TrailingLogs:       10240,
		RetainSnapshots:    1,
		CommitInterval:     20 * time.Millisecond,
		EnqueueTimeout:     5 * time.Second,
		BarrierTimeout:     10 * time.Second,
		TransferTimeout:    5 * time.Second,
	}
}

// WithDefaults fills every zero field from DefaultConfig.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setDur(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	setDur(&c.ElectionTimeout, d.ElectionTimeout)
	setDur(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	setDur(&c.CommitTimeout, d.CommitTimeout)
	setDur(&c.SnapshotInterval, d.SnapshotInterval)
	setDur(&c.SnapshotWhenQuiet, d.SnapshotWhenQuiet)
	setDur(&c.CommitInterval, d.CommitInterval)
	setDur(&c.EnqueueTimeout, d.EnqueueTimeout)
	setDur(&c.BarrierTimeout, d.BarrierTimeout)
	setDur(&c.TransferTimeout, d.TransferTimeout)
	if c.MaxAppendEntries == 0 {
		c.MaxAppendEntries = d.MaxAppendEntries
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = d.SnapshotThreshold
	}
	if c.SnapshotLogBytes == 0 {
		c.SnapshotLogBytes = d.SnapshotLogBytes
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = d.TrailingLogs
	}
	if c.RetainSnapshots == 0 {
		c.RetainSnapshots = d.RetainSnapshots
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first missing or inconsistent setting.
func (c Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("raftnode: ID is required"))
	}
	if (c.ServerTLS == nil) != (c.ClientTLS == nil) {
		errs = append(errs, errors.New("raftnode: ServerTLS and ClientTLS go together"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("raftnode: DataDir is required"))
	}
	if c.StreamLayer == nil {
		if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
			errs = append(errs, fmt.Errorf("raftnode: BindAddr %q: %w", c.BindAddr, err))
		}
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdvertiseAddr); err != nil {
			errs = append(errs, fmt.Errorf("raftnode: AdvertiseAddr %q: %w", c.AdvertiseAddr, err))
		}
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		errs = append(errs, errors.New("raftnode: LeaderLeaseTimeout must not exceed HeartbeatTimeout"))
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		errs = append(errs, errors.New("raftnode: ElectionTimeout must be at least HeartbeatTimeout"))
	}
	if c.CommitInterval < time.Millisecond || c.CommitInterval > 10*time.Second {
		errs = append(errs, fmt.Errorf("raftnode: CommitInterval %v must be 1ms..10s", c.CommitInterval))
	}
	if c.SnapshotLogBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("raftnode: SnapshotLogBytes %d must be at least 1 MiB", c.SnapshotLogBytes))
	}
	if c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024 {
		errs = append(errs, errors.New("raftnode: MaxAppendEntries must be 1..1024"))
	}
	return errors.Join(errs...)
}
