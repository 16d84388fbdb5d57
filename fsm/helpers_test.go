package fsm

import (
	"path/filepath"
	"testing"
	"time"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "register.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// applier proposes commands at increasing raft indexes, as raft would.
type applier struct {
	t     testing.TB
	s     *Store
	index uint64
}

func newApplier(t testing.TB) *applier { return &applier{t: t, s: openTest(t)} }

func (a *applier) apply(env *commandv1.Envelope) *commandv1.Result {
	a.t.Helper()
	b, err := EncodeCommand(env)
	if err != nil {
		a.t.Fatal(err)
	}
	a.index++
	res := applyNow(a.s, []uint64{a.index}, [][]byte{b})
	r, ok := res[0].(*commandv1.Result)
	if !ok {
		a.t.Fatalf("result %T", res[0])
	}
	return r
}

var base = time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)

// decision builds a valid RecordDecision; day offsets effective_from.
func decision(nhs, kind, state string, day int, reqID string) *commandv1.RecordDecision {
	return &commandv1.RecordDecision{
		DecisionId: "d-" + reqID, RequestId: reqID, NhsNumber: nhs, Kind: kind, State: state,
		EffectiveFromMicros: base.AddDate(0, 0, day).UnixMicro(), EffectiveFromGiven: true,
		RecordedAtMicros: base.AddDate(0, 1, 0).UnixMicro(),
		DecisionMaker:    &commandv1.DecisionMaker{Type: "patient"}, Channel: "in_person",
		RecordedBy: &commandv1.Actor{OdsCode: "A81001", Role: "practice"},
	}
}

func record(d *commandv1.RecordDecision) *commandv1.Envelope {
	return &commandv1.Envelope{Body: &commandv1.Envelope_RecordDecision{RecordDecision: d}}
}

func markEIE(nhs, decisionID, reqID string) *commandv1.Envelope {
	return &commandv1.Envelope{Body: &commandv1.Envelope_MarkEnteredInError{MarkEnteredInError: &commandv1.MarkEnteredInError{
		RequestId: reqID, NhsNumber: nhs, DecisionId: decisionID, Reason: "wrong patient",
		RecordedAtMicros: base.AddDate(0, 2, 0).UnixMicro(),
	}}}
}

func state(t testing.TB, s *Store, nhs, kind string) Consent {
	t.Helper()
	_, cs, err := s.GetConsents(nhs)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Kind == kind {
			return c
		}
	}
	t.Fatalf("kind %s missing", kind)
	return Consent{}
}

// withExpected sets expected_version on a RecordDecision or MarkEnteredInError.
func withExpected(env *commandv1.Envelope, v uint64) *commandv1.Envelope {
	if d := env.GetRecordDecision(); d != nil {
		d.ExpectedVersion = &v
	}
	if m := env.GetMarkEnteredInError(); m != nil {
		m.ExpectedVersion = &v
	}
	return env
}

func digest(t testing.TB, s *Store) string {
	t.Helper()
	_, d, err := s.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func history(t testing.TB, s *Store, nhs, kind string) []*commandv1.DecisionRecord {
	t.Helper()
	_, hist, _, err := s.ListDecisions(nhs, kind, 0, MaxListLimit)
	if err != nil {
		t.Fatal(err)
	}
	return hist
}

func encode(t testing.TB, env *commandv1.Envelope) []byte {
	t.Helper()
	b, err := EncodeCommand(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// applyNow applies and commits, as a node does before anyone reads.
func applyNow(s *Store, indexes []uint64, data [][]byte) []any {
	res := s.Apply(indexes, data)
	s.Commit()
	return res
}
