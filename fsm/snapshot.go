package fsm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.etcd.io/bbolt"
)

// snapshotMagic starts every snapshot; the byte after it is the format.
var snapshotMagic = []byte("CONSENTDSNAP")

const snapshotFormat = 1

// snapshot is a read transaction opened when raft asked for the snapshot,
// so what it writes is the register at exactly that applied index.
type snapshot struct{ tx *bbolt.Tx }

func (s *snapshot) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(append(bytes.Clone(snapshotMagic), snapshotFormat))
	if err != nil {
		return int64(n), err
	}
	m, err := s.tx.WriteTo(w)
	return int64(n) + m, err
}

func (s *snapshot) Close() error { return s.tx.Rollback() }

// Snapshot captures a point-in-time view. The returned value also implements
// io.Closer, which releases it.
func (s *Store) Snapshot() (io.WriterTo, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("fsm: snapshot: %w", err)
	}
	return &snapshot{tx: tx}, nil
}

// Restore replaces the whole register atomically with a snapshot's content:
// it is written beside the database, checked, then renamed over it.
func (s *Store) Restore(r io.Reader) error {
	br := bufio.NewReader(r)
	head := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(br, head); err != nil {
		return fmt.Errorf("fsm: restore: read header: %w", err)
	}
	if !bytes.Equal(head[:len(snapshotMagic)], snapshotMagic) || head[len(snapshotMagic)] != snapshotFormat {
		return fmt.Errorf("fsm: restore: %w: not a consentd snapshot of format %d", ErrUnknownFormat, snapshotFormat)
	}
	tmp := s.cfg.Path + ".restore"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if _, err := io.Copy(f, br); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("fsm: restore: copy: %w", err)
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("fsm: restore: %w", err)
	}
	check, err := bbolt.Open(tmp, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("fsm: restore: snapshot is not a valid register: %w", err)
	}
	check.Close()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			return fmt.Errorf("fsm: restore: close old register: %w", err)
		}
		s.db = nil
	}
	if err := os.Rename(tmp, s.cfg.Path); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if d, err := os.Open(dirOf(s.cfg.Path)); err == nil {
		d.Sync()
		d.Close()
	}
	return s.open()
}

func dirOf(p string) string { return filepath.Dir(p) }
