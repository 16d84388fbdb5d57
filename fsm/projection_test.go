package fsm

import (
	"errors"
	"strings"
	"testing"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

const (
	pt    = "9990000018"
	other = "9000000009"
)

// step is one command and what the kind under test looks like after it.
type step struct {
	env     *commandv1.Envelope
	code    commandv1.Result_Code
	changed bool
	state   string
	version uint64
}

func ok(env *commandv1.Envelope, changed bool, state string, version uint64) step {
	return step{env: env, changed: changed, state: state, version: version}
}

func refused(env *commandv1.Envelope, code commandv1.Result_Code, state string, version uint64) step {
	return step{env: env, code: code, state: state, version: version}
}

func rec(kind, state string, day int, req string) *commandv1.Envelope {
	return record(decision(pt, kind, state, day, req))
}

func TestProjection(t *testing.T) {
	const (
		notFound = commandv1.Result_CODE_NOT_FOUND
		invalid  = commandv1.Result_CODE_INVALID_ARGUMENT
		mismatch = commandv1.Result_CODE_VERSION_MISMATCH
	)
	for _, tc := range []struct {
		name       string
		kind       string
		steps      []step
		decisionID string // current decision after the last step
		history    int
	}{
		{"first decision", "scr", []step{
			ok(rec("scr", "dissent", 1, "a"), true, "dissent", 1),
		}, "d-a", 1},
		{"later decision wins", "scr", []step{
			ok(rec("scr", "dissent", 1, "a"), true, "dissent", 1),
			ok(rec("scr", "consent_core", 2, "b"), true, "consent_core", 2),
		}, "d-b", 2},
		{"late-arriving older decision is kept but does not change state", "scr", []step{
			ok(rec("scr", "dissent", 5, "a"), true, "dissent", 1),
			ok(rec("scr", "consent_core", 2, "b"), false, "dissent", 2),
		}, "d-a", 2},
		{"tie on effective_from goes to the later raft index", "scr", []step{
			ok(rec("scr", "dissent", 3, "a"), true, "dissent", 1),
			ok(rec("scr", "consent_core_additional", 3, "b"), true, "consent_core_additional", 2),
		}, "d-b", 2},
		{"older than a tie changes nothing", "scr", []step{
			ok(rec("scr", "dissent", 3, "a"), true, "dissent", 1),
			ok(rec("scr", "consent_core", 3, "b"), true, "consent_core", 2),
			ok(rec("scr", "consent_core_additional", 2, "c"), false, "consent_core", 3),
		}, "d-b", 3},
		{"withdrawal of a type 1 dissent", "gp_secondary_use", []step{
			ok(rec("gp_secondary_use", "dissent", 1, "a"), true, "dissent", 1),
			ok(rec("gp_secondary_use", "dissent_withdrawn", 2, "b"), true, "dissent_withdrawn", 2),
			ok(rec("gp_secondary_use", "dissent", 0, "c"), false, "dissent_withdrawn", 3),
		}, "d-b", 3},
		{"entered in error of the current decision reverts to the previous", "scr", []step{
			ok(rec("scr", "dissent", 1, "a"), true, "dissent", 1),
			ok(rec("scr", "consent_core", 2, "b"), true, "consent_core", 2),
			ok(markEIE(pt, "d-b", "e"), true, "dissent", 3),
		}, "d-a", 2},
		{"entered in error of the only decision reverts to the default", "scr", []step{
			ok(rec("scr", "dissent", 1, "a"), true, "dissent", 1),
			ok(markEIE(pt, "d-a", "e"), true, "implied_core", 2),
		}, "", 1},
		{"entered in error of a non-current decision leaves the state", "scr", []step{
			ok(rec("scr", "dissent", 1, "a"), true, "dissent", 1),
			ok(rec("scr", "consent_core", 2, "b"), true, "consent_core", 2),
			ok(markEIE(pt, "d-a", "e"), false, "consent_core", 3),
		}, "d-b", 2},
		{"revert picks the greatest effective_from, not the latest recorded", "scr", []step{
			ok(rec("scr", "consent_core", 5, "a"), true, "consent_core", 1),
			ok(rec("scr", "dissent", 1, "b"), false, "consent_core", 2),
			ok(rec("scr", "consent_core_additional", 9, "c"), true, "consent_core_additional", 3),
			ok(markEIE(pt, "d-c", "e"), true, "consent_core", 4),
		}, "d-a", 3},
		{"revert breaks a tie by the later raft index", "scr", []step{
			ok(rec("scr", "dissent", 3, "a"), true, "dissent", 1),
			ok(rec("scr", "consent_core", 3, "b"), true, "consent_core", 2),
			ok(rec("scr", "consent_core_additional", 4, "c"), true, "consent_core_additional", 3),
			ok(markEIE(pt, "d-c", "e"), true, "consent_core", 4),
		}, "d-b", 3},
		{"an entered-in-error decision never wins again", "scr", []step{
			ok(rec("scr", "dissent", 9, "a"), true, "dissent", 1),
			ok(markEIE(pt, "d-a", "e"), true, "implied_core", 2),
			ok(rec("scr", "consent_core", 2, "b"), true, "consent_core", 3),
		}, "d-b", 2},
		{"another patient's decision is not found", "scr", []step{
			ok(rec("scr", "dissent", 1, "a"), true, "dissent", 1),
			refused(markEIE(other, "d-a", "e"), notFound, "dissent", 1),
			refused(markEIE(pt, "d-nope", "e2"), notFound, "dissent", 1),
		}, "d-a", 1},
		{"marking twice is refused", "scr", []step{
			ok(rec("scr", "dissent", 1, "a"), true, "dissent", 1),
			ok(markEIE(pt, "d-a", "e1"), true, "implied_core", 2),
			refused(markEIE(pt, "d-a", "e2"), invalid, "implied_core", 2),
		}, "", 1},
		{"expected_version that matches", "scr", []step{
			ok(withExpected(rec("scr", "dissent", 1, "a"), 0), true, "dissent", 1),
			ok(withExpected(rec("scr", "consent_core", 2, "b"), 1), true, "consent_core", 2),
			ok(withExpected(markEIE(pt, "d-b", "e"), 2), true, "dissent", 3),
		}, "d-a", 2},
		{"expected_version that does not match", "scr", []step{
			ok(rec("scr", "dissent", 1, "a"), true, "dissent", 1),
			refused(withExpected(rec("scr", "consent_core", 2, "b"), 0), mismatch, "dissent", 1),
			refused(withExpected(markEIE(pt, "d-a", "e"), 7), mismatch, "dissent", 1),
		}, "d-a", 1},
		{"kinds keep separate versions", "scr", []step{
			ok(rec("scr", "dissent", 1, "a"), true, "dissent", 1),
			ok(rec("gp_secondary_use", "dissent", 1, "b"), true, "dissent", 1),
			ok(withExpected(rec("local_shared_record", "consent", 1, "c"), 0), true, "dissent", 1),
		}, "d-a", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newApplier(t)
			for i, st := range tc.steps {
				res := a.apply(st.env)
				if res.GetCode() != st.code {
					t.Fatalf("step %d: code %s (%s: %s), want %s", i, res.GetCode(), res.GetField(), res.GetMessage(), st.code)
				}
				if res.GetRaftIndex() != a.index {
					t.Fatalf("step %d: result raft_index %d, want %d", i, res.GetRaftIndex(), a.index)
				}
				if st.code == commandv1.Result_CODE_OK {
					if res.GetChanged() != st.changed {
						t.Fatalf("step %d: changed %v, want %v", i, res.GetChanged(), st.changed)
					}
					if res.GetDecision().GetDecision().GetKind() == tc.kind &&
						(res.GetCurrent().GetState() != st.state || res.GetCurrent().GetVersion() != st.version) {
						t.Fatalf("step %d: result current %v, want %s v%d", i, res.GetCurrent(), st.state, st.version)
					}
				} else if ResultError(res) == nil {
					t.Fatalf("step %d: ResultError of %s is nil", i, res.GetCode())
				}
				if c := state(t, a.s, pt, tc.kind); c.State != st.state || c.Version != st.version {
					t.Fatalf("step %d: %s is %s v%d, want %s v%d", i, tc.kind, c.State, c.Version, st.state, st.version)
				}
			}
			c := state(t, a.s, pt, tc.kind)
			if c.DecisionID != tc.decisionID {
				t.Fatalf("current decision %q, want %q", c.DecisionID, tc.decisionID)
			}
			if (c.DecisionID == "") != c.EffectiveFrom.IsZero() {
				t.Fatalf("effective_from %v for current decision %q", c.EffectiveFrom, c.DecisionID)
			}
			hist := history(t, a.s, pt, tc.kind)
			if len(hist) != tc.history {
				t.Fatalf("history has %d decisions, want %d", len(hist), tc.history)
			}
			for i := 1; i < len(hist); i++ {
				if hist[i].GetRaftIndex() <= hist[i-1].GetRaftIndex() {
					t.Fatalf("history not in commit order: %d after %d", hist[i].GetRaftIndex(), hist[i-1].GetRaftIndex())
				}
			}
		})
	}
}

func TestLateDecisionIsStoredUnchanged(t *testing.T) {
	a := newApplier(t)
	a.apply(rec("scr", "dissent", 5, "a"))
	late := a.apply(rec("scr", "consent_core", 2, "b"))
	hist := history(t, a.s, pt, "scr")
	if len(hist) != 2 || hist[1].GetChanged() || !hist[0].GetChanged() {
		t.Fatalf("history %v", hist)
	}
	if hist[1].GetVersion() != 2 || hist[1].GetRaftIndex() != late.GetRaftIndex() {
		t.Fatalf("late decision stored as v%d at %d", hist[1].GetVersion(), hist[1].GetRaftIndex())
	}
}

func TestEnteredInErrorIsRecordedOnTheDecision(t *testing.T) {
	a := newApplier(t)
	a.apply(rec("scr", "dissent", 1, "a"))
	res := a.apply(markEIE(pt, "d-a", "e"))
	eie := res.GetDecision().GetEnteredInError()
	if eie == nil || eie.GetRaftIndex() != a.index || eie.GetRequestId() != "e" || eie.GetReason() != "wrong patient" {
		t.Fatalf("result decision %v", res.GetDecision())
	}
	if res.GetDecision().GetDecision().GetDecisionId() != "d-a" {
		t.Fatalf("result names decision %q", res.GetDecision().GetDecision().GetDecisionId())
	}
	hist := history(t, a.s, pt, "")
	if len(hist) != 1 || hist[0].GetEnteredInError().GetRaftIndex() != a.index {
		t.Fatalf("stored history %v", hist)
	}
	if res.GetCurrent().GetDecisionId() != "" || res.GetCurrent().GetState() != "implied_core" || res.GetCurrent().GetVersion() != 2 {
		t.Fatalf("current after the only decision was marked: %v", res.GetCurrent())
	}
}

func TestVersionMismatchReportsTheCurrentVersion(t *testing.T) {
	a := newApplier(t)
	a.apply(rec("scr", "dissent", 1, "a"))
	a.apply(rec("scr", "dissent", 2, "b"))
	res := a.apply(withExpected(rec("scr", "consent_core", 3, "c"), 1))
	err := ResultError(res)
	if !errors.Is(err, ErrVersionMismatch) || !strings.Contains(err.Error(), "current version is 2") {
		t.Fatalf("error %v", err)
	}
	if res.GetCurrent().GetVersion() != 2 {
		t.Fatalf("result current %v", res.GetCurrent())
	}
}

// TestRefusedCommandsWriteNothing compares a store that applied a refused or
// duplicate command with one that applied an empty entry at the same index:
// only the applied index may move, so the digests must be equal.
func TestRefusedCommandsWriteNothing(t *testing.T) {
	prefix := func() []*commandv1.Envelope {
		return []*commandv1.Envelope{
			rec("scr", "dissent", 1, "a"),
			rec("scr", "consent_core", 2, "b"),
			markEIE(pt, "d-a", "e"),
		}
	}
	for _, tc := range []struct {
		name string
		env  *commandv1.Envelope
		code commandv1.Result_Code
	}{
		{"record with a stale expected_version", withExpected(rec("scr", "dissent", 3, "x"), 1), commandv1.Result_CODE_VERSION_MISMATCH},
		{"entered in error with a stale expected_version", withExpected(markEIE(pt, "d-b", "x"), 0), commandv1.Result_CODE_VERSION_MISMATCH},
		{"request id reused for other content", rec("scr", "dissent", 3, "b"), commandv1.Result_CODE_REQUEST_CONFLICT},
		{"request id reused by another command type", markEIE(pt, "d-b", "a"), commandv1.Result_CODE_REQUEST_CONFLICT},
		{"decision of another patient", markEIE(other, "d-b", "x"), commandv1.Result_CODE_NOT_FOUND},
		{"already entered in error", markEIE(pt, "d-a", "x"), commandv1.Result_CODE_INVALID_ARGUMENT},
		{"invalid state", rec("scr", "dissent_withdrawn", 3, "x"), commandv1.Result_CODE_INVALID_ARGUMENT},
		{"retried decision", record(restamped(decision(pt, "scr", "consent_core", 2, "b"))), commandv1.Result_CODE_OK},
		{"retried entered in error", markEIE(pt, "d-a", "e"), commandv1.Result_CODE_OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused, empty := newApplier(t), newApplier(t)
			for _, env := range prefix() {
				refused.apply(env)
				empty.apply(env)
			}
			if res := refused.apply(tc.env); res.GetCode() != tc.code {
				t.Fatalf("code %s (%s), want %s", res.GetCode(), res.GetMessage(), tc.code)
			}
			empty.index++
			applyNow(empty.s, []uint64{empty.index}, [][]byte{nil})
			if refused.s.AppliedIndex() != empty.s.AppliedIndex() {
				t.Fatalf("applied index %d, want %d", refused.s.AppliedIndex(), empty.s.AppliedIndex())
			}
			if digest(t, refused.s) != digest(t, empty.s) {
				t.Fatal("the refused command changed the register")
			}
		})
	}
}

func TestUnrecordedPatientHasEveryDefault(t *testing.T) {
	s := openTest(t)
	rev, cs, err := s.GetConsents(pt)
	if err != nil {
		t.Fatal(err)
	}
	if rev != 0 || len(cs) != len(Kinds()) {
		t.Fatalf("rev %d, %d kinds", rev, len(cs))
	}
	for i, k := range Kinds() {
		if cs[i].Kind != k.Name || cs[i].State != k.DefaultState || cs[i].Version != 0 {
			t.Errorf("%+v, want %s at default %s v0", cs[i], k.Name, k.DefaultState)
		}
	}
}
