package fsm

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

func TestApplyPersistsIndexInTheSameTransaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	s, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	b1 := encode(t, rec("scr", "dissent", 1, "a"))
	b2 := encode(t, rec("scr", "consent_core", 2, "b"))
	res := applyNow(s, []uint64{1, 2, 3}, [][]byte{b1, nil, b2})
	if res[0] == nil || res[1] != nil || res[2] == nil {
		t.Fatalf("results %v", res)
	}
	if s.AppliedIndex() != 3 {
		t.Fatalf("applied %d", s.AppliedIndex())
	}
	before := digest(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.AppliedIndex() != 3 {
		t.Fatalf("applied index after reopen %d, want 3", s.AppliedIndex())
	}
	if digest(t, s) != before {
		t.Fatal("register changed across Close/Open")
	}
	// Raft replays its log tail after a restart; already-applied entries are skipped.
	if again := applyNow(s, []uint64{2, 3}, [][]byte{nil, b2}); again[0] != nil || again[1] != nil {
		t.Fatalf("re-applied after reopen: %v", again)
	}
	if digest(t, s) != before {
		t.Fatal("replaying applied entries after reopen changed the register")
	}
	if c := state(t, s, pt, "scr"); c.State != "consent_core" || c.Version != 2 {
		t.Fatalf("after reopen %+v", c)
	}
}

func TestMalformedEntryAdvancesIndexWithoutWriting(t *testing.T) {
	format2 := encode(t, rec("scr", "dissent", 1, "f2"))
	format2[1] = 2 // the format field is the envelope's first byte pair
	entries := [][]byte{
		{0xff, 0x01},                 // not protobuf
		{},                           // no format, no body
		format2,                      // a format from the future
		{0x08, 0x01, 0xf8, 0x7, 0x0}, // format 1 with only an unknown field
		encode(t, record(decision("9990000017", "scr", "dissent", 1, "x"))),
	}
	s, empty := openTest(t), openTest(t)
	for i, b := range entries {
		idx := uint64(i + 1)
		var res *commandv1.Result
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("entry %d panicked: %v", idx, p)
				}
			}()
			res = applyNow(s, []uint64{idx}, [][]byte{b})[0].(*commandv1.Result)
		}()
		if res.GetCode() != commandv1.Result_CODE_INVALID_ARGUMENT || res.GetRaftIndex() != idx {
			t.Fatalf("entry %d: %v", idx, res)
		}
		applyNow(empty, []uint64{idx}, [][]byte{nil})
	}
	if s.AppliedIndex() != uint64(len(entries)) {
		t.Fatalf("applied %d", s.AppliedIndex())
	}
	if digest(t, s) != digest(t, empty) {
		t.Fatal("a malformed entry wrote to the register")
	}
	last := applyNow(s, []uint64{uint64(len(entries))}, [][]byte{entries[len(entries)-1]})
	if last[0] != nil {
		t.Fatal("a refused entry was applied twice")
	}
	res := applyNow(s, []uint64{9}, [][]byte{entries[len(entries)-1]})[0].(*commandv1.Result)
	if res.GetField() != "nhs_number" {
		t.Fatalf("invalid command names field %q", res.GetField())
	}
}

func TestApplySkipsReplayedBatch(t *testing.T) {
	s := openTest(t)
	batch := [][]byte{
		encode(t, rec("scr", "dissent", 1, "a")),
		encode(t, rec("scr", "consent_core", 2, "b")),
		encode(t, markEIE(pt, "d-b", "e")),
	}
	idx := []uint64{1, 2, 3}
	applyNow(s, idx, batch)
	d := digest(t, s)
	for i, r := range applyNow(s, idx, batch) {
		if r != nil {
			t.Fatalf("entry %d re-applied: %v", idx[i], r)
		}
	}
	if digest(t, s) != d || s.AppliedIndex() != 3 {
		t.Fatal("re-applying a batch changed the register")
	}
	// A batch that overlaps the applied index applies only the new part.
	res := applyNow(s, []uint64{3, 4}, [][]byte{batch[2], encode(t, rec("scr", "dissent", 3, "c"))})
	if res[0] != nil || res[1].(*commandv1.Result).GetCode() != 0 || s.AppliedIndex() != 4 {
		t.Fatalf("overlapping batch: %v, applied %d", res, s.AppliedIndex())
	}
}

func TestStorageFailurePanics(t *testing.T) {
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "r.db")})
	if err != nil {
		t.Fatal(err)
	}
	// Close the database underneath the Store, as a failing disk would leave it.
	s.db.Close()
	defer func() {
		msg, _ := recover().(string)
		if !strings.Contains(msg, "entries 1..1") {
			t.Fatalf("panic %q, want one naming the entries", msg)
		}
	}()
	applyNow(s, []uint64{1}, [][]byte{encode(t, rec("scr", "dissent", 1, "a"))})
	t.Fatal("Apply returned after its transaction failed")
}

func TestNodes(t *testing.T) {
	a := newApplier(t)
	up := func(id, addr string) *commandv1.Envelope {
		return &commandv1.Envelope{Body: &commandv1.Envelope_UpsertNode{UpsertNode: &commandv1.UpsertNode{Id: id, RaftAddr: addr}}}
	}
	for _, env := range []*commandv1.Envelope{up("n2", "b:1"), up("n1", "a:1"), up("n3", "c:1"), up("n2", "b:2")} {
		if res := a.apply(env); res.GetCode() != 0 {
			t.Fatal(res)
		}
	}
	a.apply(&commandv1.Envelope{Body: &commandv1.Envelope_RemoveNode{RemoveNode: &commandv1.RemoveNode{Id: "n3"}}})
	a.apply(&commandv1.Envelope{Body: &commandv1.Envelope_RemoveNode{RemoveNode: &commandv1.RemoveNode{Id: "never-there"}}})
	if res := a.apply(up("", "x:1")); res.GetCode() != commandv1.Result_CODE_INVALID_ARGUMENT || res.GetField() != "id" {
		t.Fatalf("node without id: %v", res)
	}
	nodes, err := a.s.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].GetId() != "n1" || nodes[1].GetId() != "n2" || nodes[1].GetRaftAddr() != "b:2" {
		t.Fatalf("nodes %v", nodes)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		field string // named in the error; "" when valid
	}{
		{"no path", Config{}, "Path"},
		{"negative mmap size", Config{Path: "x", InitialMmapSize: -1}, "InitialMmapSize"},
		{"negative lock timeout", Config{Path: "x", LockTimeout: -time.Second}, "LockTimeout"},
		{"negative check workers", Config{Path: "x", CheckWorkers: -1}, "CheckWorkers"},
		{"defaults", Config{Path: "x"}, ""},
		{"serial checks", Config{Path: "x", CheckWorkers: 1}, ""},
	} {
		err := tc.cfg.Validate()
		if tc.field == "" && err != nil || tc.field != "" && (err == nil || !strings.Contains(err.Error(), tc.field)) {
			t.Errorf("%s: Validate() = %v, want an error naming %q", tc.name, err, tc.field)
		}
	}
	if _, err := Open(Config{}); err == nil {
		t.Error("Open without a path succeeded")
	}
}

func TestOpenRefusesAnotherSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.db")
	s, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchemaVersion, u64Bytes(99)) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(Config{Path: path}); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("opening schema 99: %v", err)
	}
}

func TestClosedStoreRefusesQueries(t *testing.T) {
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "r.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetConsents(pt); err == nil {
		t.Error("GetConsents on a closed store")
	}
	if _, err := s.Snapshot(); err == nil {
		t.Error("Snapshot on a closed store")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
