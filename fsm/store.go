package fsm

// Database layout (bbolt), schema version 1. Every value is a protobuf
// message marshalled with deterministic options.
//
//	meta          "applied_index"  → uint64 big-endian: raft index of the last applied entry
//	              "schema_version" → uint64 big-endian: 1
//	decisions     nhs(10 bytes) ‖ raft index(8 bytes BE) → DecisionRecord
//	              (a prefix scan on the NHS number yields a patient's history in commit order)
//	decision_ids  decision id → decisions key (18 bytes)
//	current       nhs(10 bytes) ‖ kind name → CurrentRecord (absent: default state, version 0)
//	requests      request id → RequestRecord (the idempotency table)
//	nodes         node id → UpsertNode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Config configures a Store.
type Config struct {
	// Path of the bbolt database file. Required.
	Path string
	// Logger for debug-level detail; apply never logs at info.
	Logger *slog.Logger
	// InitialMmapSize is the size bbolt maps up front; 0 means
	// DefaultInitialMmapSize. A long snapshot read only blocks a write that
	// must grow the map beyond it.
	InitialMmapSize int
	// LockTimeout bounds the wait for the database file lock held by another
	// process; 0 means DefaultLockTimeout.
	LockTimeout time.Duration
	// CheckWorkers is how many goroutines may look up the numbers of one
	// CheckConsents at once (see DefaultCheckWorkers); 0 means
	// DefaultCheckWorkers, 1 looks them up one after another.
	CheckWorkers int
	// NoCheckReadAhead turns off reading a large check's pages ahead (see
	// readahead.go); for comparing, as in BenchmarkCheckConsents1000Cold.
	NoCheckReadAhead bool
	// NoApplyReadAhead turns off reading an apply batch's pages ahead (see
	// readahead_apply.go); for comparing, as in BenchmarkApplyBatchCold.
	NoApplyReadAhead bool
}

const (
	// DefaultInitialMmapSize is 1 GiB of address space (not of disk).
	DefaultInitialMmapSize = 1 << 30
	// DefaultLockTimeout is how long Open waits for another process to release the file.
	DefaultLockTimeout = 10 * time.Second
	// DefaultCheckWorkers is how many goroutines may look up one check's
	// numbers: with 16, a 1,000-number check of a register whose pages were
	// all on disk took 20-55% less time than one lookup after another
	// (BenchmarkCheckConsents1000Cold). Not more, since a page fault holds
	// its goroutine's P; the read-ahead (readahead.go) is what overlaps the
	// disk reads now, and the workers spread a check's CPU over the cores.
	DefaultCheckWorkers = 16
	// SchemaVersion is the layout version stored in the meta bucket.
	SchemaVersion = 1
)

// Validate reports a missing or bad setting.
func (c Config) Validate() error {
	if c.Path == "" {
		return errors.New("fsm: config: Path is required")
	}
	if c.InitialMmapSize < 0 {
		return fmt.Errorf("fsm: config: InitialMmapSize %d is negative", c.InitialMmapSize)
	}
	if c.LockTimeout < 0 {
		return fmt.Errorf("fsm: config: LockTimeout %s is negative", c.LockTimeout)
	}
	if c.CheckWorkers < 0 {
		return fmt.Errorf("fsm: config: CheckWorkers %d is negative", c.CheckWorkers)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.InitialMmapSize == 0 {
		c.InitialMmapSize = DefaultInitialMmapSize
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = DefaultLockTimeout
	}
	if c.CheckWorkers == 0 {
		c.CheckWorkers = DefaultCheckWorkers
	}
	return c
}

var (
	bucketMeta        = []byte("meta")
	bucketDecisions   = []byte("decisions")
	bucketDecisionIDs = []byte("decision_ids")
	bucketCurrent     = []byte("current")
	bucketRequests    = []byte("requests")
	bucketNodes       = []byte("nodes")

	keyAppliedIndex  = []byte("applied_index")
	keySchemaVersion = []byte("schema_version")
)

// allBuckets returns the layout's buckets; a fresh slice so nothing can change the layout.
func allBuckets() [][]byte {
	return [][]byte{bucketMeta, bucketDecisions, bucketDecisionIDs, bucketCurrent, bucketRequests, bucketNodes}
}

var errClosed = errors.New("fsm: store is closed")

// Store is the register: one bbolt database.
type Store struct {
	cfg Config
	log *slog.Logger
	reg *registry

	// txMu serialises everything that touches the apply transaction:
	// Apply, Commit, and Snapshot, Restore and Close, which end it first.
	// It is taken before mu, never after.
	txMu sync.Mutex
	// wtx is the open apply transaction: entries applied since the last
	// Commit, which neither readers nor a crash can see. nil when there
	// are none.
	wtx *bolt.Tx

	// mu is held for reading by queries, Apply and Snapshot, and for writing
	// by Restore and Close while they swap or close db.
	mu sync.RWMutex
	db *bolt.DB
	// applied is the index of the last committed entry: what readers see
	// and what a restart resumes from.
	applied atomic.Uint64

	// readAheadFailed is set once a read-ahead has failed and said so.
	readAheadFailed atomic.Bool

	// snaps are the snapshots not yet released; see abortIdleSnapshots.
	snapMu sync.Mutex
	snaps  map[*snapshot]struct{}
}

// Open opens or creates the register at cfg.Path.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Store{cfg: cfg, log: cfg.Logger, reg: builtin()}
	db, applied, err := s.openDB(cfg.Path, true)
	if err != nil {
		return nil, err
	}
	s.db = db
	s.applied.Store(applied)
	s.log.Debug("fsm: opened register", "path", cfg.Path, "applied_index", applied)
	return s, nil
}

// openDB opens path, creating the layout when init is true and checking it
// otherwise, and returns the applied index it records.
func (s *Store) openDB(path string, init bool) (*bolt.DB, uint64, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: s.cfg.LockTimeout,
		// The freelist is written with every commit. Without it bbolt finds
		// the free pages on open by walking every page of the file: at ten
		// million patients (a 10 GB register) that took three minutes from
		// a cold page cache, all of it before the node could rejoin. The
		// register is append-mostly, so its freelist stays small and
		// writing it costs little. (The raft log is the opposite: it
		// deletes whole ranges after each snapshot, and keeps
		// NoFreelistSync.)
		NoFreelistSync:  false,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: s.cfg.InitialMmapSize,
		NoSync:          false,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("fsm: open %s: %w", path, err)
	}
	var applied uint64
	check := func(tx *bolt.Tx) error {
		var err error
		applied, err = checkLayout(tx)
		return err
	}
	if init {
		err = db.Update(func(tx *bolt.Tx) error {
			if err := createLayout(tx); err != nil {
				return err
			}
			return check(tx)
		})
	} else {
		err = db.View(check)
	}
	if err != nil {
		db.Close()
		return nil, 0, fmt.Errorf("fsm: open %s: %w", path, err)
	}
	return db, applied, nil
}

func createLayout(tx *bolt.Tx) error {
	for _, name := range allBuckets() {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	if meta.Get(keySchemaVersion) == nil {
		if err := meta.Put(keySchemaVersion, u64Bytes(SchemaVersion)); err != nil {
			return err
		}
		if err := meta.Put(keyAppliedIndex, u64Bytes(0)); err != nil {
			return err
		}
	}
	return nil
}

// checkLayout verifies that every bucket exists and the schema is one this
// version reads, and returns the applied index.
func checkLayout(tx *bolt.Tx) (uint64, error) {
	for _, name := range allBuckets() {
		if tx.Bucket(name) == nil {
			return 0, fmt.Errorf("bucket %s missing: %w", name, ErrUnknownFormat)
		}
	}
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(keySchemaVersion)
	if len(v) != 8 {
		return 0, fmt.Errorf("schema version missing: %w", ErrUnknownFormat)
	}
	if sv := binary.BigEndian.Uint64(v); sv != SchemaVersion {
		return 0, fmt.Errorf("schema version %d, this build reads %d: %w", sv, SchemaVersion, ErrUnknownFormat)
	}
	return readApplied(meta)
}

func readApplied(meta *bolt.Bucket) (uint64, error) {
	v := meta.Get(keyAppliedIndex)
	if len(v) != 8 {
		return 0, fmt.Errorf("applied index missing or malformed: %w", ErrUnknownFormat)
	}
	return binary.BigEndian.Uint64(v), nil
}

// Close commits what is applied and closes the database. It waits for
// snapshots being written.
func (s *Store) Close() error {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	cerr := s.commitLocked()
	s.abortIdleSnapshots()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return cerr
	}
	err := s.db.Close()
	s.db = nil
	if err != nil {
		return errors.Join(cerr, fmt.Errorf("fsm: close: %w", err))
	}
	return cerr
}

// AppliedIndex is the raft index of the last committed entry (0 for a new
// store): the state readers see, and the state a restart begins from.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// Commit makes every entry applied so far durable and visible to readers
// in one bbolt commit. It does nothing when there is nothing to commit,
// including on a closed store (Close commits first).
//
// A failed commit loses applied entries that raft may have acknowledged,
// so the store refuses to go on: Commit panics, like Apply. The process
// restarts from the last commit and raft applies the lost entries again
// from its log, which keeps every entry after the newest snapshot.
func (s *Store) Commit() {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	if err := s.commitLocked(); err != nil {
		panic(err.Error())
	}
}

// Size is the register's size in bytes as of its last commit (0 when
// closed): what a snapshot reads.
func (s *Store) Size() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return 0
	}
	var size int64
	_ = s.db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	return size
}

// commitLocked commits wtx; s.txMu must be held.
func (s *Store) commitLocked() error {
	if s.wtx == nil {
		return nil
	}
	tx := s.wtx
	s.wtx = nil
	applied, err := readApplied(tx.Bucket(bucketMeta))
	if err != nil {
		tx.Rollback()
		return fmt.Errorf("fsm: commit: %w", err)
	}
	if applied == s.applied.Load() {
		// Only skipped entries (a replay below the last commit): an empty
		// bbolt commit would still write and sync a meta page.
		return tx.Rollback()
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("fsm: bbolt commit of entries up to %d failed; the register cannot go on without them: %w", applied, err)
	}
	s.applied.Store(applied)
	return nil
}

// rollbackLocked drops wtx; s.txMu must be held. Only Restore may: what it
// drops is about to be replaced.
func (s *Store) rollbackLocked() {
	if s.wtx != nil {
		s.wtx.Rollback()
		s.wtx = nil
	}
}

// view runs fn in a read transaction and passes it the applied index that
// transaction sees.
func (s *Store) view(fn func(tx *bolt.Tx, revision uint64) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return errClosed
	}
	return s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("fsm: bucket meta missing: %w", ErrUnknownFormat)
		}
		rev, err := readApplied(meta)
		if err != nil {
			return fmt.Errorf("fsm: %w", err)
		}
		return fn(tx, rev)
	})
}

func u64Bytes(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
