package fsm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/golang/snappy"
	bolt "go.etcd.io/bbolt"
)

// A snapshot is a header (magic, format byte) followed by a copy of the bbolt
// file as one read transaction sees it: as is in format 1, in snappy's
// framing format in format 2, which is what this build writes.
//
// Format 2 exists because a snapshot is a full copy of the register: at ten
// million patients that is gigabytes per copy on every node and on the wire
// to a follower being rebuilt. bbolt pages are half empty and protobuf
// values repeat kinds and states, so snappy shrinks a register about four
// times at over a gigabyte a second, and its framing checks every chunk
// with a CRC, so a damaged snapshot fails before it replaces anything.
const (
	snapshotMagic     = "CONSENTDSNAP"
	snapshotRaw       = 1
	snapshotSnappy    = 2
	snapshotFormat    = snapshotSnappy
	snapshotHeaderLen = len(snapshotMagic) + 1
)

func snapshotHeader() []byte { return append([]byte(snapshotMagic), snapshotFormat) }

// countingWriter counts what reaches the snapshot sink.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// snapshot is a read transaction opened when Snapshot was called, so what it
// writes is the register at exactly that applied index, however much is
// applied while it is written.
type snapshot struct {
	store *Store
	mu    sync.Mutex // guards state and the end of tx
	state snapState
	tx    *bolt.Tx
	err   error
}

type snapState int

const (
	snapIdle    snapState = iota // taken, not being written
	snapWriting                  // WriteTo in progress
	snapAborted                  // released early by Restore or Close
	snapClosed
)

// errSnapshotAborted is what a snapshot's writer gets after a restore or
// close gave its read transaction up; raft just tries a later snapshot.
var errSnapshotAborted = errors.New("fsm: snapshot abandoned: the register was restored or closed before it was written")

// WriteTo writes the header and the database as the transaction sees it.
func (sn *snapshot) WriteTo(w io.Writer) (int64, error) {
	sn.mu.Lock()
	if sn.state != snapIdle {
		sn.mu.Unlock()
		return 0, errSnapshotAborted
	}
	sn.state = snapWriting
	sn.mu.Unlock()
	defer func() {
		sn.mu.Lock()
		if sn.state == snapWriting {
			sn.state = snapIdle
		}
		sn.mu.Unlock()
	}()
	cw := &countingWriter{w: w}
	if _, err := cw.Write(snapshotHeader()); err != nil {
		return cw.n, fmt.Errorf("fsm: write snapshot header: %w", err)
	}
	// Close flushes the last frame; it does not close w.
	sw := snappy.NewBufferedWriter(cw)
	if _, err := sn.tx.WriteTo(sw); err != nil {
		return cw.n, fmt.Errorf("fsm: write snapshot: %w", err)
	}
	if err := sw.Close(); err != nil {
		return cw.n, fmt.Errorf("fsm: write snapshot: %w", err)
	}
	return cw.n, nil
}

// Close releases the read transaction.
func (sn *snapshot) Close() error {
	// Forgotten first: abortIdleSnapshots takes the store's list before a
	// snapshot's own lock, so this must not hold the latter while taking
	// the former.
	sn.store.forgetSnapshot(sn)
	sn.mu.Lock()
	defer sn.mu.Unlock()
	switch sn.state {
	case snapIdle, snapWriting:
		sn.err = sn.tx.Rollback()
	}
	sn.state = snapClosed
	return sn.err
}

// Snapshot commits what is applied and captures that point-in-time view.
// The returned value also implements io.Closer, which releases it.
func (s *Store) Snapshot() (io.WriterTo, error) {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	// Raft truncates its log up to the snapshot's index once the snapshot
	// is written, so the register must be durable up to that index first:
	// a restart resumes from the last commit and replays the log from there.
	if err := s.commitLocked(); err != nil {
		panic(err.Error())
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return nil, errClosed
	}
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("fsm: snapshot: %w", err)
	}
	sn := &snapshot{store: s, tx: tx}
	s.snapMu.Lock()
	if s.snaps == nil {
		s.snaps = map[*snapshot]struct{}{}
	}
	s.snaps[sn] = struct{}{}
	s.snapMu.Unlock()
	return sn, nil
}

func (s *Store) forgetSnapshot(sn *snapshot) {
	s.snapMu.Lock()
	delete(s.snaps, sn)
	s.snapMu.Unlock()
}

// abortIdleSnapshots gives up the read transactions of snapshots taken but
// not being written. bbolt's Close waits for every read transaction, and
// hashicorp/raft can hold a taken snapshot while its main loop waits for the
// very restore that would be waiting here: a deadlock (seen in the Jepsen
// kill-snapshot runs). A snapshot being written finishes on its own, so
// that one is waited for.
func (s *Store) abortIdleSnapshots() {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	for sn := range s.snaps {
		sn.mu.Lock()
		if sn.state == snapIdle {
			sn.err = sn.tx.Rollback()
			sn.state = snapAborted
			delete(s.snaps, sn)
		}
		sn.mu.Unlock()
	}
}

// Restore replaces the whole register atomically with a snapshot's content.
// The snapshot is written to a file beside the database and checked before
// it replaces anything; a snapshot that fails the check leaves the register
// as it was.
func (s *Store) Restore(r io.Reader) error {
	head := make([]byte, snapshotHeaderLen)
	if _, err := io.ReadFull(r, head); err != nil {
		return fmt.Errorf("fsm: restore: read header: %w: %w", ErrUnknownFormat, err)
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return fmt.Errorf("fsm: restore: not a consentd snapshot: %w", ErrUnknownFormat)
	}
	body := r
	switch f := head[len(snapshotMagic)]; f {
	case snapshotRaw:
		// Written by builds before format 2; still accepted, so a node
		// upgraded first can be sent a snapshot by an older leader.
	case snapshotSnappy:
		body = snappy.NewReader(r)
	default:
		return fmt.Errorf("fsm: restore: snapshot format %d, this build reads %d and %d: %w", f, snapshotRaw, snapshotSnappy, ErrUnknownFormat)
	}
	tmp, err := s.writeTemp(body)
	if err != nil {
		return err
	}
	applied, err := s.checkSnapshotFile(tmp)
	if err != nil {
		os.Remove(tmp)
		return err
	}

	s.txMu.Lock()
	defer s.txMu.Unlock()
	// Entries applied since the last commit are all in the snapshot or
	// superseded by it.
	s.rollbackLocked()
	s.abortIdleSnapshots()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		os.Remove(tmp)
		return errClosed
	}
	if err := s.db.Close(); err != nil {
		s.db = nil
		os.Remove(tmp)
		return fmt.Errorf("fsm: restore: close the register: %w", err)
	}
	s.db = nil
	if err := os.Rename(tmp, s.cfg.Path); err != nil {
		os.Remove(tmp)
		return errors.Join(fmt.Errorf("fsm: restore: %w", err), s.reopenLocked())
	}
	syncDir(filepath.Dir(s.cfg.Path))
	if err := s.reopenLocked(); err != nil {
		return err
	}
	if got := s.applied.Load(); got != applied {
		return fmt.Errorf("fsm: restore: reopened register is at index %d, the snapshot at %d", got, applied)
	}
	s.log.Debug("fsm: restored register from snapshot", "applied_index", applied)
	return nil
}

// writeTemp streams a snapshot body into a synced file beside the database.
func (s *Store) writeTemp(r io.Reader) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(s.cfg.Path), filepath.Base(s.cfg.Path)+".restore-*")
	if err != nil {
		return "", fmt.Errorf("fsm: restore: %w", err)
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("fsm: restore: write %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}

// checkSnapshotFile opens a restored file read-only and checks its layout
// and schema version, returning its applied index.
func (s *Store) checkSnapshotFile(path string) (uint64, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: s.cfg.LockTimeout})
	if err != nil {
		return 0, fmt.Errorf("fsm: restore: snapshot is not a bbolt database: %w: %w", ErrUnknownFormat, err)
	}
	var applied uint64
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		applied, err = checkLayout(tx)
		return err
	})
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("fsm: restore: snapshot is not a register: %w", err)
	}
	return applied, nil
}

// reopenLocked opens s.cfg.Path again; s.mu must be held for writing.
func (s *Store) reopenLocked() error {
	db, applied, err := s.openDB(s.cfg.Path, false)
	if err != nil {
		return fmt.Errorf("fsm: restore: reopen: %w", err)
	}
	s.db = db
	s.applied.Store(applied)
	return nil
}

// syncDir makes a rename durable; a failure only risks the old file coming
// back after a crash, which raft repairs by restoring again.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync()
	d.Close()
}
