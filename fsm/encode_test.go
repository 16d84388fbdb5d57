package fsm

import (
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// The encoding of a log entry is pinned: if this test fails, logs written by
// earlier versions may no longer replay. Add a new field or format instead of
// changing an existing one; update the golden file only with a migration.
func TestCommandEncodingIsPinned(t *testing.T) {
	d := decision(pt, "scr", "dissent", 1, "golden")
	v := uint64(3)
	d.ExpectedVersion = &v
	d.DecisionMaker = &commandv1.DecisionMaker{Type: "proxy", ProxyRole: "lpa_health_welfare"}
	d.Reason, d.Restricted, d.AcceptedBy = "patient asked", true, "n1"
	b, err := EncodeCommand(record(d))
	if err != nil {
		t.Fatal(err)
	}
	got := hex.EncodeToString(b)
	const path = "testdata/record_decision_v1.hex"
	if os.Getenv("CONSENTD_UPDATE_GOLDEN") != "" {
		os.WriteFile(path, []byte(got+"\n"), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != strings.TrimSpace(string(want)) {
		t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
	}
	env, err := DecodeCommand(b)
	if err != nil || !proto.Equal(env.GetRecordDecision(), d) {
		t.Fatalf("round trip: %v %v", err, env)
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
}

func FuzzDecodeCommand(f *testing.F) {
	good, _ := EncodeCommand(record(decision(pt, "scr", "dissent", 1, "seed")))
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := DecodeCommand(b)
		if err != nil {
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
		// Applying whatever decodes must never panic.
		s := openTest(t)
		s.Apply([]uint64{1}, [][]byte{b})
	})
}
