package fsm

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// Set CONSENTD_UPDATE_GOLDEN=1 to rewrite the golden files; only do so with a
// migration plan, because the files pin what old logs and tables contain.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv("CONSENTD_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, []byte(got+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != strings.TrimSpace(string(want)) {
		t.Fatalf("%s changed:\n got %s\nwant %s", name, got, strings.TrimSpace(string(want)))
	}
}

func goldenRecordDecision() *commandv1.RecordDecision {
	d := decision(pt, "scr", "dissent", 1, "golden")
	v := uint64(3)
	d.ExpectedVersion = &v
	d.DecisionMaker = &commandv1.DecisionMaker{Type: "proxy", ProxyRole: "lpa_health_welfare"}
	d.Reason, d.Restricted, d.AcceptedBy = "patient asked", true, "n1"
	return d
}

func goldenEnvelopes() map[string]*commandv1.Envelope {
	v := uint64(2)
	eie := markEIE(pt, "d-golden", "golden-eie")
	eie.GetMarkEnteredInError().ExpectedVersion = &v
	eie.GetMarkEnteredInError().RecordedBy = &commandv1.Actor{OdsCode: "A81001", UserId: "u1", Role: "clinician"}
	eie.GetMarkEnteredInError().AcceptedBy = "n2"
	return map[string]*commandv1.Envelope{
		"record_decision_v1.hex":       record(goldenRecordDecision()),
		"mark_entered_in_error_v1.hex": eie,
		"upsert_node_v1.hex": {Body: &commandv1.Envelope_UpsertNode{UpsertNode: &commandv1.UpsertNode{
			Id: "n1", RaftAddr: "10.0.0.1:7000", GrpcAddr: "10.0.0.1:7001", HttpAddr: "10.0.0.1:7002"}}},
		"remove_node_v1.hex": {Body: &commandv1.Envelope_RemoveNode{RemoveNode: &commandv1.RemoveNode{Id: "n3"}}},
		"record_decisions_v1.hex": batch(goldenRecordDecision(),
			decision("9000000009", "gp_secondary_use", "dissent", 2, "golden-2")),
	}
}

// The encoding of log entries is pinned: if this test fails, logs written by
// earlier versions may no longer replay. Add a field or a format instead of
// changing an existing one.
func TestCommandEncodingIsPinned(t *testing.T) {
	for name, env := range goldenEnvelopes() {
		t.Run(name, func(t *testing.T) {
			b, err := EncodeCommand(env)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name, hex.EncodeToString(b))
			// What the file holds must still decode to the same command.
			want, _ := os.ReadFile(filepath.Join("testdata", name))
			raw, err := hex.DecodeString(strings.TrimSpace(string(want)))
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeCommand(raw)
			if err != nil || !proto.Equal(got, env) {
				t.Fatalf("golden entry decodes to %v (%v), want %v", got, err, env)
			}
		})
	}
}

// Fingerprints are stored in the idempotency table: if they changed, a retry
// arriving after an upgrade would be refused as a conflict, and nodes on
// different versions would disagree.
func TestFingerprintsArePinned(t *testing.T) {
	eie := goldenEnvelopes()["mark_entered_in_error_v1.hex"].GetMarkEnteredInError()
	implicit := goldenRecordDecision()
	implicit.EffectiveFromGiven, implicit.ExpectedVersion = false, nil
	got := strings.Join([]string{
		hex.EncodeToString(recordDecisionFingerprint(goldenRecordDecision())),
		hex.EncodeToString(recordDecisionFingerprint(implicit)),
		hex.EncodeToString(markEnteredInErrorFingerprint(eie)),
	}, " ")
	golden(t, "fingerprints_v1.txt", got)
}

func TestEncodeSetsFormat(t *testing.T) {
	env := &commandv1.Envelope{Format: 7, Body: &commandv1.Envelope_RemoveNode{RemoveNode: &commandv1.RemoveNode{Id: "x"}}}
	b, err := EncodeCommand(env)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCommand(b)
	if err != nil || got.GetFormat() != CommandFormat {
		t.Fatalf("format %d, %v", got.GetFormat(), err)
	}
	if _, err := EncodeCommand(&commandv1.Envelope{}); err == nil {
		t.Error("an envelope without a body encodes")
	}
	if _, err := EncodeCommand(nil); err == nil {
		t.Error("nil encodes")
	}
}

func TestDecodeRefusesUnknownFormats(t *testing.T) {
	b, _ := proto.Marshal(&commandv1.Envelope{Format: 2, Body: &commandv1.Envelope_RemoveNode{RemoveNode: &commandv1.RemoveNode{Id: "x"}}})
	if _, err := DecodeCommand(b); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("format 2: %v", err)
	}
	b, _ = proto.Marshal(&commandv1.Envelope{Format: 1})
	if _, err := DecodeCommand(b); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("no body: %v", err)
	}
	if _, err := DecodeCommand(nil); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("empty entry: %v", err)
	}
	_, err := DecodeCommand([]byte{0x0a, 0xff})
	if err == nil || errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("bad protobuf: %v", err)
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, env := range goldenEnvelopes() {
		b, err := EncodeCommand(env)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01})
	f.Add([]byte{0x08, 0x02, 0x6a, 0x00})
	// One store per fuzzing process, without fsync: durability is not under
	// test here, and syncing every input would dominate the run.
	s := openTest(f)
	s.db.NoSync = true
	var index uint64
	f.Fuzz(func(t *testing.T, b []byte) {
		index++
		res, ok := applyNow(s, []uint64{index}, [][]byte{b})[0].(*commandv1.Result)
		if !ok || res.GetRaftIndex() != index {
			t.Fatalf("apply gave %v", res)
		}
		env, err := DecodeCommand(b)
		if err != nil {
			if res.GetCode() != commandv1.Result_CODE_INVALID_ARGUMENT {
				t.Fatalf("undecodable entry applied with %s", res.GetCode())
			}
			return
		}
		again, err := EncodeCommand(env)
		if err != nil {
			t.Fatalf("decoded entry does not re-encode: %v", err)
		}
		env2, err := DecodeCommand(again)
		if err != nil || !proto.Equal(env, env2) {
			t.Fatalf("re-encoded entry decodes differently: %v", err)
		}
	})
}
