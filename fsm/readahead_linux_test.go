package fsm

import (
	"os"
	"testing"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// countResident counts b's pages in the page cache.
func countResident(t *testing.T, b []byte) int {
	t.Helper()
	n, err := residentPages(b)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// coldLeaves counts the distinct leaves keys lead to in b and their pages
// not resident; it reads only branch pages (Bucket.Stats would read every
// page). depth 0 is found from the first key's path.
func coldLeaves(t *testing.T, tx *bolt.Tx, b *bolt.Bucket, keys [][]byte, depth int) (leaves, cold int, err error) {
	t.Helper()
	m, _, err := newMapView(tx, b)
	if err != nil {
		return 0, 0, err
	}
	root := uint64(b.Root())
	if depth == 0 {
		if depth, _, err = probeLeaves(m, root, keys[:1]); err != nil {
			return 0, 0, err
		}
	}
	if depth < 2 {
		return 0, 0, nil // the root is the only leaf
	}
	ids, err := walkToLeaves(m, root, depth, keys, func([]uint64) error { return nil })
	if err != nil {
		return 0, 0, err
	}
	ids = distinct(ids)
	for _, id := range ids {
		pg, err := m.first(id)
		if err != nil {
			return 0, 0, err
		}
		cold += len(pg)/os.Getpagesize() - countResident(t, pg)
	}
	return len(ids), cold, nil
}

// On a register whose pages are not in memory, a check's read-ahead asks
// for the pages its lookups need and the kernel reads them; once they are
// resident it asks for nothing.
func TestReadAheadReadsAColdRegister(t *testing.T) {
	path, nums := readAheadRegister(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	// The build's pages are written and clean, and no process maps them:
	// DONTNEED drops them from the page cache.
	err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Numbers spread over the register, as a practice's patients are.
	var sample []string
	for i := 0; i < len(nums); i += 20 {
		sample = append(sample, nums[i])
	}
	keys := checkKeys(sample)

	readAhead := func() readAheadStats {
		t.Helper()
		var st readAheadStats
		err := s.view(func(tx *bolt.Tx, _ uint64) error {
			var err error
			st, err = readAheadLookups(tx, tx.Bucket(bucketCurrent), keys)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	var resident, pages int
	s.view(func(tx *bolt.Tx, _ uint64) error {
		m, _, err := newMapView(tx, tx.Bucket(bucketCurrent))
		if err != nil {
			t.Fatal(err)
		}
		whole := unsafe.Slice((*byte)(m.base), m.size)
		resident, pages = countResident(t, whole), len(whole)/os.Getpagesize()
		return nil
	})
	if resident > pages/10 {
		t.Skipf("%d of %d pages stayed in memory after FADV_DONTNEED (tmpfs?): nothing cold to read ahead here", resident, pages)
	}

	st := readAhead()
	if st.Levels != 1 || st.Leaves < 100 || st.Advised <= st.Leaves {
		t.Fatalf("read-ahead of a cold register: %+v; want one branch level below the root, its pages and the leaves advised", st)
	}
	// The advice only queues the reads; they land soon after.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var leaves, cold int
		err := s.view(func(tx *bolt.Tx, _ uint64) error {
			var err error
			leaves, cold, err = coldLeaves(t, tx, tx.Bucket(bucketCurrent), keys, st.Levels+2)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if leaves != st.Leaves {
			t.Fatalf("the keys lead to %d leaves, read-ahead said %d", leaves, st.Leaves)
		}
		if cold == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d leaves read ahead are still not resident", cold, leaves)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := readAhead(); st.Advised != 0 {
		t.Fatalf("read-ahead of a resident register advised %d pages", st.Advised)
	}
}
