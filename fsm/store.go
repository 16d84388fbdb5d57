package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
)

// bbolt layout:
//
//	meta       "applied" → uint64 BE raft index; "schema" → 1
//	decisions  nhs(10) ‖ index(8 BE) → DecisionRecord (history in commit order)
//	ids        decision id → nhs ‖ index
//	current    nhs(10) ‖ kind → CurrentRecord
//	requests   request id → RequestRecord
//	nodes      node id → UpsertNode
var (
	bucketMeta      = []byte("meta")
	bucketDecisions = []byte("decisions")
	bucketIDs       = []byte("ids")
	bucketCurrent   = []byte("current")
	bucketRequests  = []byte("requests")
	bucketNodes     = []byte("nodes")
	keyApplied      = []byte("applied")
	keySchema       = []byte("schema")
)

func allBuckets() [][]byte {
	return [][]byte{bucketMeta, bucketDecisions, bucketIDs, bucketCurrent, bucketRequests, bucketNodes}
}

// Config configures a Store.
type Config struct {
	// Path of the bbolt database file. Required.
	Path string
	// Logger for debug-level detail; apply never logs at info.
	Logger *slog.Logger
}

// Validate reports a missing or bad setting.
func (c Config) Validate() error {
	if c.Path == "" {
		return errors.New("fsm: Path is required")
	}
	return nil
}

// Store is the register: one bbolt database.
type Store struct {
	cfg   Config
	log   *slog.Logger
	kinds map[string]Kind
	order []string

	// mu guards db against Restore swapping it; queries and Apply hold it
	// shared.
	mu      sync.RWMutex
	db      *bbolt.DB
	applied atomic.Uint64
}

func boltOptions() *bbolt.Options {
	return &bbolt.Options{
		Timeout:         time.Second,
		NoFreelistSync:  true,
		FreelistType:    bbolt.FreelistMapType,
		InitialMmapSize: 1 << 30,
	}
}

// Open opens or creates the register at cfg.Path.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{cfg: cfg, log: cfg.Logger, kinds: map[string]Kind{}}
	for _, k := range Kinds() {
		s.kinds[k.Name] = k
		s.order = append(s.order, k.Name)
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) open() error {
	db, err := bbolt.Open(s.cfg.Path, 0o600, boltOptions())
	if err != nil {
		return fmt.Errorf("fsm: open %s: %w", s.cfg.Path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range allBuckets() {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if m.Get(keySchema) == nil {
			return m.Put(keySchema, []byte{1})
		}
		return nil
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("fsm: init %s: %w", s.cfg.Path, err)
	}
	var applied uint64
	db.View(func(tx *bbolt.Tx) error {
		applied = readApplied(tx)
		return nil
	})
	s.db = db
	s.applied.Store(applied)
	return nil
}

func readApplied(tx *bbolt.Tx) uint64 {
	v := tx.Bucket(bucketMeta).Get(keyApplied)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// Close closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	return err
}

// AppliedIndex is the raft index of the last entry applied (0 for a new store).
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

func (s *Store) view(fn func(tx *bbolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return errors.New("fsm: store is closed")
	}
	return s.db.View(fn)
}

// Apply applies committed log entries in order in one bbolt transaction and
// records the last index in that transaction. data[i] is nil for entries
// that carry no command (they only advance the applied index). Entries at or
// below AppliedIndex are skipped and get a nil result. results[i] is a
// *commandv1.Result (as any, because raftnode declares this signature).
func (s *Store) Apply(indexes []uint64, data [][]byte) []any {
	out := make([]any, len(indexes))
	s.mu.RLock()
	defer s.mu.RUnlock()
	var last uint64
	err := s.db.Update(func(tx *bbolt.Tx) error {
		applied := readApplied(tx)
		for i, idx := range indexes {
			if idx <= applied {
				continue
			}
			if data[i] != nil {
				res, err := s.applyOne(tx, idx, data[i])
				if err != nil {
					return err
				}
				out[i] = res
			}
			applied = idx
		}
		last = applied
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], applied)
		return tx.Bucket(bucketMeta).Put(keyApplied, b[:])
	})
	if err != nil {
		// Raft's FSM contract has no error: carrying on would let this
		// node's register silently diverge from the others.
		panic(fmt.Sprintf("fsm: cannot write the register: %v", err))
	}
	s.applied.Store(last)
	return out
}
