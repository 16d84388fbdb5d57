package raftnode

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// The read-ahead relies on how raft-boltdb lays out its file; if an
// upgrade changes that, this fails rather than restarts quietly slowing.
func TestPrefetchLogFindsEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(1); i <= 60; i++ {
		// Small entries share leaf pages; a 100 KiB one (a batch of
		// decisions) spans overflow pages.
		size := 64
		if i%7 == 0 {
			size = 100 << 10
		}
		data := bytes.Repeat([]byte{byte(i)}, size)
		copy(data, fmt.Sprintf("entry-%03d|", i))
		logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data})
	}
	if err := store.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	for _, after := range []uint64{0, 20, 59, 60, 100} {
		t.Run(fmt.Sprintf("after=%d", after), func(t *testing.T) {
			next := after + 1
			err := forEachLogRange(path, after, func(off, n int64) error {
				if next > 60 {
					t.Fatalf("a range past the last entry: %d bytes at %d", n, off)
				}
				// The range must be that entry's stored value, which holds its data.
				if !bytes.Contains(file[off:off+n], logs[next-1].Data) {
					t.Fatalf("the range for entry %d (%d bytes at %d) does not hold its data", next, n, off)
				}
				next++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := max(after, 60) + 1; next != want {
				t.Fatalf("ranges for entries %d..%d, want %d..60", after+1, next-1, after+1)
			}
			st, err := prefetchLog(path, after)
			if err != nil {
				t.Fatal(err)
			}
			if want := int(60 - min(after, 60)); st.Entries != want {
				t.Fatalf("prefetchLog read ahead %d entries, want %d", st.Entries, want)
			}
		})
	}

	st, err := prefetchLog(filepath.Join(t.TempDir(), "none.db"), 0)
	if err != nil || st.Entries != 0 {
		t.Fatalf("a node with no log yet: %+v, %v", st, err)
	}
}
