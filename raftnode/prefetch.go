package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
	"unsafe"

	"go.etcd.io/bbolt"
)

// logBucket is where raft-boltdb keeps entries, keyed by big-endian index.
// If a later raft-boltdb moved them, prefetchLog would find nothing to read
// ahead and restarts would only be slower (TestPrefetchLogFindsEntries
// says so on upgrade).
const logBucket = "logs"

// prefetchStats says what prefetchLog asked the kernel to read.
type prefetchStats struct {
	Entries int
	Bytes   int64
	Took    time.Duration
}

// prefetchLog asks the kernel to read into the page cache, in the
// background, the raft log entries after index `after` in the raft-boltdb
// file at path. raft.NewRaft reads each of them before the node can serve
// (it looks for membership changes after the last snapshot), and bbolt maps
// its file for random access, so without this every 4 KiB page of them is
// a page fault waiting on the disk: 351 MiB after a 10M-patient load took
// 5 to 7 s that way, and 1 s once read ahead an entry at a time.
//
// It is only a hint. It opens the file read-only and closes it before the
// log store opens it; any failure leaves the restart as it was, slower.
func prefetchLog(path string, after uint64) (prefetchStats, error) {
	start := time.Now()
	var st prefetchStats
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	defer f.Close()
	err = forEachLogRange(path, after, func(off, n int64) error {
		st.Entries++
		st.Bytes += n
		return readAhead(f, off, n)
	})
	st.Took = time.Since(start)
	return st, err
}

// forEachLogRange calls fn with the file offset and length of each stored
// entry after index `after`, in index order.
func forEachLogRange(path string, after uint64, fn func(off, n int64) error) error {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("open %s read-only: %w", path, err)
	}
	defer db.Close()
	// A value's offset in the file is its address in bbolt's map less the
	// map's start: bbolt maps the file from offset 0, and a read-only
	// transaction's values point into the map.
	info := db.Info()
	return db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte(logBucket))
		if b == nil {
			return nil
		}
		size := tx.Size()
		var from [8]byte
		binary.BigEndian.PutUint64(from[:], after+1)
		c := b.Cursor()
		for k, v := c.Seek(from[:]); k != nil; k, v = c.Next() {
			off := int64(uintptr(unsafe.Pointer(unsafe.SliceData(v))) - info.Data)
			n := int64(len(v))
			if n == 0 || off < 0 || off+n > size {
				continue
			}
			if err := fn(off, n); err != nil {
				return err
			}
		}
		return nil
	})
}
