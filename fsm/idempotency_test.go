package fsm

import (
	"errors"
	"testing"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// restamped is a retry of d as another node would propose it: same client
// content, new decision id, recorded_at and accepting node.
func restamped(d *commandv1.RecordDecision) *commandv1.RecordDecision {
	r := decision(d.GetNhsNumber(), d.GetKind(), d.GetState(), 0, d.GetRequestId())
	r.EffectiveFromMicros, r.EffectiveFromGiven = d.GetEffectiveFromMicros(), d.GetEffectiveFromGiven()
	r.ExpectedVersion = d.ExpectedVersion
	r.DecisionId, r.AcceptedBy = d.GetDecisionId()+"-retry", "n2"
	r.RecordedAtMicros = d.GetRecordedAtMicros() + 7_000_000
	r.RecordedBy = &commandv1.Actor{OdsCode: d.GetRecordedBy().GetOdsCode(), UserId: "someone-else"}
	return r
}

func TestRetryReturnsTheOriginalDecision(t *testing.T) {
	for _, tc := range []struct {
		name        string
		before      []*commandv1.Envelope
		wantChanged bool
	}{
		{"decision that changed the state", nil, true},
		{"late decision that did not", []*commandv1.Envelope{rec("scr", "consent_core", 9, "z")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newApplier(t)
			for _, env := range tc.before {
				a.apply(env)
			}
			orig := decision(pt, "scr", "dissent", 1, "req-1")
			first := a.apply(record(orig))
			if first.GetCode() != 0 || first.GetDuplicate() || first.GetChanged() != tc.wantChanged {
				t.Fatalf("first: %v", first)
			}
			a.apply(rec("local_shared_record", "consent", 1, "unrelated"))

			dup := a.apply(record(restamped(orig)))
			if dup.GetCode() != 0 || !dup.GetDuplicate() {
				t.Fatalf("retry: %v", dup)
			}
			if dup.GetDecision().GetDecision().GetDecisionId() != "d-req-1" || dup.GetDecision().GetRaftIndex() != first.GetRaftIndex() {
				t.Fatalf("retry answered decision %v", dup.GetDecision())
			}
			if dup.GetChanged() != tc.wantChanged {
				t.Fatalf("retry changed %v, want the original's %v", dup.GetChanged(), tc.wantChanged)
			}
			if dup.GetRaftIndex() != a.index {
				t.Fatalf("retry result at index %d, want %d", dup.GetRaftIndex(), a.index)
			}
			if got := history(t, a.s, pt, "scr"); len(got) != len(tc.before)+1 {
				t.Fatalf("history has %d entries after a retry, want %d", len(got), len(tc.before)+1)
			}
			if cur := state(t, a.s, pt, "scr"); dup.GetCurrent().GetVersion() != cur.Version || dup.GetCurrent().GetState() != cur.State {
				t.Fatalf("retry reports current %v, store has %+v", dup.GetCurrent(), cur)
			}
			if ResultError(dup) != nil {
				t.Fatalf("a duplicate is a success: %v", ResultError(dup))
			}
		})
	}
}

func TestRetryReportsTheCurrentStateNow(t *testing.T) {
	a := newApplier(t)
	orig := decision(pt, "scr", "dissent", 1, "req-1")
	a.apply(record(orig))
	a.apply(rec("scr", "consent_core", 2, "later"))
	dup := a.apply(record(restamped(orig)))
	if !dup.GetDuplicate() || dup.GetCurrent().GetState() != "consent_core" || dup.GetCurrent().GetVersion() != 2 {
		t.Fatalf("retry after a later decision: %v", dup)
	}
}

func TestRequestIDConflict(t *testing.T) {
	base := func() *commandv1.RecordDecision { return decision(pt, "scr", "dissent", 1, "req-1") }
	for _, tc := range []struct {
		name string
		mut  func(d *commandv1.RecordDecision)
	}{
		{"state", func(d *commandv1.RecordDecision) { d.State = "consent_core" }},
		{"kind", func(d *commandv1.RecordDecision) { d.Kind, d.State = "gp_secondary_use", "dissent" }},
		{"patient", func(d *commandv1.RecordDecision) { d.NhsNumber = other }},
		{"effective_from", func(d *commandv1.RecordDecision) { d.EffectiveFromMicros++ }},
		{"effective_from given", func(d *commandv1.RecordDecision) { d.EffectiveFromGiven = false }},
		{"decision maker", func(d *commandv1.RecordDecision) {
			d.DecisionMaker = &commandv1.DecisionMaker{Type: "proxy", ProxyRole: "court_deputy"}
		}},
		{"channel", func(d *commandv1.RecordDecision) { d.Channel = "phone" }},
		{"reason", func(d *commandv1.RecordDecision) { d.Reason = "changed mind" }},
		{"restricted", func(d *commandv1.RecordDecision) { d.Restricted = true }},
		{"expected_version", func(d *commandv1.RecordDecision) { v := uint64(0); d.ExpectedVersion = &v }},
		{"organisation", func(d *commandv1.RecordDecision) { d.RecordedBy.OdsCode = "B82002" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newApplier(t)
			a.apply(record(base()))
			changed := restamped(base())
			tc.mut(changed)
			res := a.apply(record(changed))
			if res.GetCode() != commandv1.Result_CODE_REQUEST_CONFLICT || res.GetField() != "request_id" {
				t.Fatalf("reuse with other content: %v", res)
			}
			if !errors.Is(ResultError(res), ErrRequestConflict) {
				t.Fatalf("ResultError: %v", ResultError(res))
			}
			if got := history(t, a.s, pt, ""); len(got) != 1 {
				t.Fatalf("conflict wrote a decision: %d in history", len(got))
			}
			if c := state(t, a.s, pt, "scr"); c.State != "dissent" || c.Version != 1 {
				t.Fatalf("conflict changed the state: %+v", c)
			}
		})
	}
}

func TestRetryWithoutEffectiveFromMatches(t *testing.T) {
	a := newApplier(t)
	implicit := decision(pt, "local_shared_record", "consent", 1, "req-2")
	implicit.EffectiveFromGiven = false
	a.apply(record(implicit))
	retry := restamped(implicit)
	retry.EffectiveFromMicros = retry.GetRecordedAtMicros() // defaulted to the new recorded_at
	if res := a.apply(record(retry)); !res.GetDuplicate() || res.GetDecision().GetDecision().GetDecisionId() != "d-req-2" {
		t.Fatalf("retry of a request without effective_from: %v", res)
	}
}

func TestRefusedRequestDoesNotUseUpItsID(t *testing.T) {
	a := newApplier(t)
	a.apply(rec("scr", "dissent", 1, "a"))
	if res := a.apply(withExpected(rec("scr", "consent_core", 2, "b"), 0)); res.GetCode() != commandv1.Result_CODE_VERSION_MISMATCH {
		t.Fatalf("stale write: %v", res)
	}
	res := a.apply(withExpected(rec("scr", "consent_core", 2, "b"), 1))
	if res.GetCode() != 0 || res.GetDuplicate() || !res.GetChanged() {
		t.Fatalf("corrected retry: %v", res)
	}
}

func TestEnteredInErrorRetry(t *testing.T) {
	a := newApplier(t)
	a.apply(rec("scr", "dissent", 1, "a"))
	a.apply(rec("scr", "consent_core", 2, "b"))
	first := a.apply(markEIE(pt, "d-b", "e"))
	if first.GetCode() != 0 || !first.GetChanged() || first.GetCurrent().GetVersion() != 3 {
		t.Fatalf("first: %v", first)
	}
	retry := markEIE(pt, "d-b", "e")
	retry.GetMarkEnteredInError().RecordedAtMicros += 1_000_000
	dup := a.apply(retry)
	if dup.GetCode() != 0 || !dup.GetDuplicate() || dup.GetDecision().GetDecision().GetDecisionId() != "d-b" {
		t.Fatalf("retry: %v", dup)
	}
	if dup.GetDecision().GetEnteredInError().GetRaftIndex() != first.GetRaftIndex() {
		t.Fatalf("retry reports a different marking: %v", dup.GetDecision().GetEnteredInError())
	}
	if c := state(t, a.s, pt, "scr"); c.Version != 3 || c.State != "dissent" {
		t.Fatalf("retry changed the register: %+v", c)
	}
	conflict := markEIE(pt, "d-a", "e")
	if res := a.apply(conflict); res.GetCode() != commandv1.Result_CODE_REQUEST_CONFLICT {
		t.Fatalf("same id, other decision: %v", res)
	}
}
