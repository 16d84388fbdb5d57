package fsm

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"testing"
)

// dump is every query answer for the given patients, for comparing stores.
func dump(t testing.TB, s *Store, patients []string) string {
	t.Helper()
	var b bytes.Buffer
	for _, p := range patients {
		rev, cs, err := s.GetConsents(p)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s@%d %+v\n", p, rev, cs)
		_, hist, _, err := s.ListDecisions(p, "", 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hist {
			fmt.Fprintf(&b, "  %v\n", h)
		}
	}
	rev, digest, err := s.Digest()
	if err != nil {
		t.Fatal(err)
	}
	nodes, _ := s.Nodes()
	fmt.Fprintf(&b, "digest %s@%d nodes %v\n", digest, rev, nodes)
	return b.String()
}

func TestSnapshotRestoreGivesEqualAnswers(t *testing.T) {
	a := newApplier(t)
	var patients []string
	for i := 0; i < 40; i++ {
		p := TestNHSNumber(100 + i)
		patients = append(patients, p)
		for j := 0; j < 3; j++ {
			kind := Kinds()[j%3]
			a.apply(record(decision(p, kind.Name, kind.States[(i+j)%len(kind.States)].Name, j, fmt.Sprintf("s-%d-%d", i, j))))
		}
	}
	a.apply(markEIE(patients[0], "d-s-0-0", "eie"))
	snap, err := a.s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := dump(t, a.s, patients)

	// Entries applied after Snapshot() must not appear in it: point in time.
	a.apply(record(decision(patients[1], "scr", "dissent", 30, "after-snapshot")))
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.(io.Closer).Close()

	fresh := openTest(t)
	fresh.Apply([]uint64{1}, [][]byte{nil}) // something to be replaced
	if err := fresh.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, fresh, patients); got != want {
		t.Fatalf("restored store answers differently:\n got %s\nwant %s", got, want)
	}
	if fresh.AppliedIndex() != a.index-1 {
		t.Fatalf("restored applied index %d, want %d", fresh.AppliedIndex(), a.index-1)
	}
	// The restored store carries on applying where the snapshot ended.
	b, _ := EncodeCommand(record(decision(patients[1], "scr", "dissent", 30, "after-snapshot")))
	fresh.Apply([]uint64{a.index}, [][]byte{b})
	if !reflect.DeepEqual(dump(t, fresh, patients), dump(t, a.s, patients)) {
		t.Fatal("stores diverge after applying the same entry")
	}
}

func TestRestoreRefusesGarbage(t *testing.T) {
	a := newApplier(t)
	a.apply(record(decision(pt, "scr", "dissent", 1, "a")))
	before := dump(t, a.s, []string{pt})
	for name, in := range map[string][]byte{
		"empty":       nil,
		"wrong magic": []byte("NOTASNAPSHOT\x01rest"),
		"not bbolt":   append(append([]byte{}, snapshotMagic...), append([]byte{snapshotFormat}, bytes.Repeat([]byte{7}, 8192)...)...),
	} {
		if err := a.s.Restore(bytes.NewReader(in)); err == nil {
			t.Errorf("%s: restore accepted", name)
		}
	}
	if after := dump(t, a.s, []string{pt}); after != before {
		t.Fatal("a refused restore changed the register")
	}
}
