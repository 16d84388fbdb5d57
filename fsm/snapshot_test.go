package fsm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	bolt "go.etcd.io/bbolt"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// dump is every query answer for the given patients, byte for byte, for
// comparing stores.
func dump(t testing.TB, s *Store, patients []string) string {
	t.Helper()
	var b bytes.Buffer
	for _, p := range patients {
		rev, cs, err := s.GetConsents(p)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s@%d %+v\n", p, rev, cs)
		for _, k := range Kinds() {
			_, res, err := s.CheckConsents(k.Name, []string{p})
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "  check %s %+v\n", k.Name, res)
		}
		for _, h := range history(t, s, p, "") {
			enc, err := marshal(h)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "  %s\n", hex.EncodeToString(enc))
		}
	}
	rev, digest, err := s.Digest()
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := s.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		enc, _ := marshal(n)
		fmt.Fprintf(&b, "node %x\n", enc)
	}
	fmt.Fprintf(&b, "digest %s@%d applied %d\n", digest, rev, s.AppliedIndex())
	return b.String()
}

// populate applies a varied history for n patients and returns them.
func populate(t testing.TB, a *applier, n int) []string {
	t.Helper()
	var patients []string
	for i := 0; i < n; i++ {
		p := TestNHSNumber(100 + i)
		patients = append(patients, p)
		for j := 0; j < 4; j++ {
			kind := Kinds()[(i+j)%3]
			a.apply(record(decision(p, kind.Name, kind.States[(i*7+j)%len(kind.States)].Name, (i*j)%5, fmt.Sprintf("s-%d-%d", i, j))))
		}
		if i%5 == 0 {
			a.apply(markEIE(p, fmt.Sprintf("d-s-%d-3", i), fmt.Sprintf("e-%d", i)))
		}
	}
	a.apply(&commandv1.Envelope{Body: &commandv1.Envelope_UpsertNode{UpsertNode: &commandv1.UpsertNode{Id: "n1", RaftAddr: "127.0.0.1:7001"}}})
	return patients
}

func snapshotBytes(t testing.TB, s *Store) []byte {
	t.Helper()
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.(io.Closer).Close()
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSnapshotRestoreGivesEqualAnswers(t *testing.T) {
	a := newApplier(t)
	patients := populate(t, a, 200)
	want := dump(t, a.s, patients)

	fresh := openTest(t)
	applyNow(fresh, []uint64{1, 2}, [][]byte{encode(t, rec("scr", "dissent", 1, "to-be-replaced")), nil})
	if err := fresh.Restore(bytes.NewReader(snapshotBytes(t, a.s))); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, fresh, patients); got != want {
		t.Fatalf("restored store answers differently:\n got %s\nwant %s", got, want)
	}
	if _, hist, _, _ := fresh.ListDecisions(pt, "", 0, 10); len(hist) != 0 {
		t.Fatalf("state from before the restore survived: %v", hist)
	}

	// Both carry on identically, and the restored store survives a reopen.
	next := encode(t, record(decision(patients[3], "scr", "dissent", 30, "after")))
	applyNow(a.s, []uint64{a.index + 1}, [][]byte{next})
	applyNow(fresh, []uint64{a.index + 1}, [][]byte{next})
	want = dump(t, a.s, patients)
	if got := dump(t, fresh, patients); got != want {
		t.Fatal("stores diverge after applying the same entry")
	}
	path := fresh.cfg.Path
	if err := fresh.Close(); err != nil {
		t.Fatal(err)
	}
	reopened, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reopened.Close() })
	if got := dump(t, reopened, patients); got != want {
		t.Fatal("restored store changed across Close/Open")
	}
}

func TestSnapshotIsPointInTime(t *testing.T) {
	a := newApplier(t)
	patients := populate(t, a, 20)
	at := a.index
	want := dump(t, a.s, patients)
	snap, err := a.s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Applied after Snapshot() but before the snapshot is written out.
	a.apply(record(decision(patients[1], "scr", "dissent", 30, "after-1")))
	a.apply(markEIE(patients[0], "d-s-0-0", "after-2"))
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if err := snap.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	if err := snap.(io.Closer).Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("CONSENTDSNAP\x02")) {
		t.Fatalf("snapshot header %q", buf.Bytes()[:13])
	}

	fresh := openTest(t)
	if err := fresh.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if fresh.AppliedIndex() != at {
		t.Fatalf("restored applied index %d, want %d", fresh.AppliedIndex(), at)
	}
	if got := dump(t, fresh, patients); got != want {
		t.Fatalf("snapshot holds entries applied after it was taken:\n got %s\nwant %s", got, want)
	}
	if _, hist, _, _ := fresh.ListDecisions(patients[1], "", 0, 100); hist[len(hist)-1].GetDecision().GetRequestId() == "after-1" {
		t.Fatal("a later decision is in the snapshot")
	}
}

func TestRestoreRefusesBadSnapshots(t *testing.T) {
	a := newApplier(t)
	a.apply(rec("scr", "dissent", 1, "a"))
	before := dump(t, a.s, []string{pt})

	emptyBolt := filepath.Join(t.TempDir(), "plain.db")
	db, err := bolt.Open(emptyBolt, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	plain, err := os.ReadFile(emptyBolt)
	if err != nil {
		t.Fatal(err)
	}
	good := snapshotBytes(t, a.s)
	raw := []byte("CONSENTDSNAP\x01")
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 0xff
	for name, in := range map[string][]byte{
		"empty":                     nil,
		"short header":              []byte("CONSENTD"),
		"wrong magic":               append([]byte("NOTASNAPSHOT\x02"), good[13:]...),
		"format from the future":    append([]byte("CONSENTDSNAP\x03"), good[13:]...),
		"raw but not bbolt":         append(bytes.Clone(raw), bytes.Repeat([]byte{7}, 8192)...),
		"raw bbolt but no register": append(bytes.Clone(raw), plain...),
		"snappy but not bbolt":      append([]byte("CONSENTDSNAP\x02"), snappyBytes(t, bytes.Repeat([]byte{7}, 8192))...),
		"snappy bbolt, no register": append([]byte("CONSENTDSNAP\x02"), snappyBytes(t, plain)...),
		"raw body under format 2":   append([]byte("CONSENTDSNAP\x02"), plain...),
		"truncated":                 good[:len(good)/2],
		"a corrupt chunk":           corrupt,
	} {
		err := a.s.Restore(bytes.NewReader(in))
		if err == nil {
			t.Errorf("%s: restore accepted", name)
			continue
		}
		// A damaged stream is an I/O error, not a format one.
		damaged := name == "truncated" || name == "a corrupt chunk" || name == "raw body under format 2"
		if !damaged && !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("%s: %v is not ErrUnknownFormat", name, err)
		}
	}
	if after := dump(t, a.s, []string{pt}); after != before {
		t.Fatal("a refused restore changed the register")
	}
	entries, _ := os.ReadDir(filepath.Dir(a.s.cfg.Path))
	if len(entries) != 1 {
		t.Fatalf("refused restores left files behind: %v", entries)
	}
	if res := a.apply(rec("scr", "consent_core", 2, "b")); res.GetCode() != 0 {
		t.Fatalf("store unusable after refused restores: %v", res)
	}
}

// TestRestoreWhileBusy runs queries, applies and snapshot writes while
// restores swap the database; run it with -race.
func TestRestoreWhileBusy(t *testing.T) {
	src := newApplier(t)
	patients := populate(t, src, 10)
	snap := snapshotBytes(t, src.s)

	a := newApplier(t)
	populate(t, a, 3)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 8)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := a.s.GetConsents(patients[0]); err != nil {
				errs <- err
				return
			}
			if _, _, err := a.s.Digest(); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			sn, err := a.s.Snapshot()
			if err != nil {
				errs <- err
				return
			}
			_, err = sn.WriteTo(io.Discard)
			sn.(io.Closer).Close()
			// A restore between taking and writing abandons the snapshot
			// (TestRestoreAbandonsATakenSnapshot); anything else is a failure.
			if err != nil && !errors.Is(err, errSnapshotAborted) {
				errs <- err
				return
			}
		}
	}()
	for i := 0; i < 5; i++ {
		if err := a.s.Restore(bytes.NewReader(snap)); err != nil {
			t.Fatal(err)
		}
		if a.s.AppliedIndex() != src.index {
			t.Fatalf("applied index %d after restore, want %d", a.s.AppliedIndex(), src.index)
		}
		// Raft applies only entries after the snapshot's index.
		idx := src.index + 1
		applyNow(a.s, []uint64{idx}, [][]byte{encode(t, record(decision(patients[0], "scr", "dissent", 40, fmt.Sprintf("busy-%d", i))))})
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if c := state(t, a.s, patients[0], "scr"); c.State != "dissent" || c.DecisionID != "d-busy-4" {
		t.Fatalf("after the last restore and apply: %+v", c)
	}
}

// TestRestoreAbandonsATakenSnapshot: raft can hold a snapshot it has taken
// but not yet written while its main loop waits for a restore; the restore
// must not wait for that snapshot (it did, and the node deadlocked). The
// abandoned snapshot then refuses to be written instead of writing a
// register that no longer exists.
func TestRestoreAbandonsATakenSnapshot(t *testing.T) {
	src := newApplier(t)
	populate(t, src, 5)
	snap := snapshotBytes(t, src.s)

	a := newApplier(t)
	populate(t, a, 3)
	held, err := a.s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	finishes(t, "Restore", func() error { return a.s.Restore(bytes.NewReader(snap)) })
	if _, err := held.WriteTo(io.Discard); !errors.Is(err, errSnapshotAborted) {
		t.Fatalf("writing the abandoned snapshot: %v", err)
	}
	if err := held.(io.Closer).Close(); err != nil {
		t.Fatalf("releasing the abandoned snapshot: %v", err)
	}

	// Close does the same for a snapshot taken after the restore.
	held, err = a.s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	finishes(t, "Close", a.s.Close)
	held.(io.Closer).Close()
}

// finishes runs fn and fails the test if it errs or is still waiting after
// ten seconds (for a snapshot nobody is writing).
func finishes(t *testing.T, what string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s waited for a snapshot nobody was writing", what)
	}
}

func snappyBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := snappy.NewBufferedWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Snapshots written before format 2 (the bbolt file as is) still restore,
// so a rolling upgrade can install an older leader's snapshot.
func TestRestoreReadsFormat1(t *testing.T) {
	src := newApplier(t)
	patients := populate(t, src, 5)
	want := dump(t, src.s, patients)
	var raw bytes.Buffer
	raw.WriteString("CONSENTDSNAP\x01")
	if err := src.s.db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&raw); return err }); err != nil {
		t.Fatal(err)
	}
	size := raw.Len()
	fresh := openTest(t)
	if err := fresh.Restore(&raw); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, fresh, patients); got != want {
		t.Fatalf("format 1 restore:\n got %s\nwant %s", got, want)
	}
	// And format 2 is much smaller than the file it copies.
	if n := len(snapshotBytes(t, src.s)); n*2 > size {
		t.Fatalf("format 2 snapshot is %d bytes for a %d-byte register: not compressed", n, size)
	}
}

// FuzzRestore: a snapshot arrives from another node; whatever its bytes, a
// restore either succeeds with a valid register or fails leaving the
// register as it was, and never panics.
func FuzzRestore(f *testing.F) {
	a := newApplier(f)
	a.apply(rec("scr", "dissent", 1, "a"))
	good := snapshotBytes(f, a.s)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("CONSENTDSNAP\x01"))
	f.Add(append([]byte("CONSENTDSNAP\x02"), snappyBytes(f, []byte("not a database"))...))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := openTest(t)
		empty := dump(t, s, []string{pt})
		if err := s.Restore(bytes.NewReader(in)); err != nil {
			if s.AppliedIndex() != 0 || dump(t, s, []string{pt}) != empty {
				t.Fatalf("a refused restore (%v) changed the register", err)
			}
			return
		}
		// Accepted: it must be a register that reads and takes writes.
		dump(t, s, []string{pt})
		next := &applier{t: t, s: s, index: s.AppliedIndex()}
		if res := next.apply(rec("scr", "consent_core", 2, "fuzz-after")); res.GetCode() != 0 {
			t.Fatalf("restored register refuses a valid write: %v", res)
		}
	})
}
