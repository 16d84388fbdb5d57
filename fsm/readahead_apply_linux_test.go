package fsm

import (
	"os"
	"runtime"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// evict drops path's pages from the page cache; it skips the test when
// they stay (tmpfs), as nothing would be cold to read ahead.
func evict(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Dirty pages are not dropped: write them out first.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// threadMajorFaults counts the calling thread's page faults that waited on
// the disk; the caller has locked its goroutine to the thread.
func threadMajorFaults(t *testing.T) int64 {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		t.Fatal(err)
	}
	return ru.Majflt
}

// A batch applied to a register whose pages are not in memory waits on the
// disk for each page it looks up, one at a time; read ahead, the pages are
// asked for together and the apply itself waits for (almost) none.
func TestApplyReadAheadSparesTheFaults(t *testing.T) {
	path, nums := readAheadRegister(t)
	without := path + ".without"
	copyFile(t, path, without)
	ds := secondDecisions(nums, 40, "cold") // 500 patients spread over the register
	data := [][]byte{encode(t, batch(ds...))}
	indexes := []uint64{1_000_000}

	// applyCold opens the register from a cold page cache and applies the
	// batch, returning the faults the Apply call took.
	applyCold := func(path string, readAhead bool) int64 {
		t.Helper()
		evict(t, path)
		s, err := Open(Config{Path: path, NoApplyReadAhead: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if readAhead {
			envs := []*commandv1.Envelope{batch(ds...)}
			s.txMu.Lock()
			s.mu.RLock()
			s.readAheadApply(indexes, envs)
			s.mu.RUnlock()
			s.txMu.Unlock()
			waitResident(t, s, collectApplyKeys(indexes, envs, -1))
		}
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		before := threadMajorFaults(t)
		res := s.Apply(indexes, data)
		faults := threadMajorFaults(t) - before
		if r := res[0].(*commandv1.Result); r.GetCode() != commandv1.Result_CODE_OK {
			t.Fatalf("apply: %v %s", r.GetCode(), r.GetMessage())
		}
		return faults
	}
	cold := applyCold(without, false)
	if cold < int64(len(ds)) {
		t.Skipf("applying %d decisions to an evicted register took only %d major faults: the page cache was not emptied (tmpfs?)", len(ds), cold)
	}
	warmed := applyCold(path, true)
	// The pages apply touches beyond the looked-up leaves: a few roots.
	if warmed > cold/20 {
		t.Fatalf("after the read-ahead the apply took %d major faults, without it %d", warmed, cold)
	}
	t.Logf("major faults applying %d decisions to a cold register: %d without read-ahead, %d after it", len(ds), cold, warmed)
}

// waitResident waits until the leaves the keys lead to, in each bucket, are
// in the page cache: the advice only queues the reads. All but 1% of them:
// on a machine short of memory or busy (CI runs packages side by side) the
// kernel may drop a few advised pages again, seen once as 6 of 1,934. The
// test's point, the faults the apply then takes, is asserted by its caller;
// a read-ahead that does nothing leaves nearly all of them cold and fails
// here.
func waitResident(t *testing.T, s *Store, k *applyKeys) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cold, leaves := 0, 0
		err := s.view(func(tx *bolt.Tx, _ uint64) error {
			for _, bk := range k.buckets() {
				l, c, err := coldLeaves(t, tx, tx.Bucket(bk.name), bk.keys, 0)
				if err != nil {
					return err
				}
				leaves, cold = leaves+l, cold+c
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if cold*100 <= leaves {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d leaves read ahead are still not resident", cold, leaves)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
