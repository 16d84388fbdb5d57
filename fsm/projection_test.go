package fsm

import (
	"errors"
	"testing"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

const pt = "9990000018"

func TestProjection(t *testing.T) {
	type step struct {
		env         *commandv1.Envelope
		wantCode    commandv1.Result_Code
		wantChanged bool
	}
	type want struct {
		state      string
		version    uint64
		decisionID string
		history    int
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  want
	}{
		{"first decision", []step{
			{record(decision(pt, "scr", "dissent", 1, "a")), 0, true},
		}, want{"dissent", 1, "d-a", 1}},
		{"later decision wins", []step{
			{record(decision(pt, "scr", "dissent", 1, "a")), 0, true},
			{record(decision(pt, "scr", "consent_core", 2, "b")), 0, true},
		}, want{"consent_core", 2, "d-b", 2}},
		{"late-arriving older decision is kept but does not change state", []step{
			{record(decision(pt, "scr", "dissent", 5, "a")), 0, true},
			{record(decision(pt, "scr", "consent_core", 2, "b")), 0, false},
		}, want{"dissent", 2, "d-a", 2}},
		{"tie on effective_from goes to the later raft index", []step{
			{record(decision(pt, "scr", "dissent", 3, "a")), 0, true},
			{record(decision(pt, "scr", "consent_core_additional", 3, "b")), 0, true},
		}, want{"consent_core_additional", 2, "d-b", 2}},
		{"withdrawal of a type 1 dissent", []step{
			{record(decision(pt, "gp_secondary_use", "dissent", 1, "a")), 0, true},
			{record(decision(pt, "gp_secondary_use", "dissent_withdrawn", 2, "b")), 0, true},
		}, want{"dissent_withdrawn", 2, "d-b", 2}},
		{"entered in error of the current decision reverts to the previous", []step{
			{record(decision(pt, "scr", "dissent", 1, "a")), 0, true},
			{record(decision(pt, "scr", "consent_core", 2, "b")), 0, true},
			{markEIE(pt, "d-b", "e"), 0, true},
		}, want{"dissent", 3, "d-a", 2}},
		{"entered in error of the only decision reverts to the default", []step{
			{record(decision(pt, "scr", "dissent", 1, "a")), 0, true},
			{markEIE(pt, "d-a", "e"), 0, true},
		}, want{"implied_core", 2, "", 1}},
		{"entered in error of a non-current decision leaves the state", []step{
			{record(decision(pt, "scr", "dissent", 1, "a")), 0, true},
			{record(decision(pt, "scr", "consent_core", 2, "b")), 0, true},
			{markEIE(pt, "d-a", "e"), 0, false},
		}, want{"consent_core", 3, "d-b", 2}},
		{"an entered-in-error decision never wins again", []step{
			{record(decision(pt, "scr", "dissent", 9, "a")), 0, true},
			{markEIE(pt, "d-a", "e"), 0, true},
			{record(decision(pt, "scr", "consent_core", 2, "b")), 0, true},
		}, want{"consent_core", 3, "d-b", 2}},
		{"entered in error of another patient's decision is not found", []step{
			{record(decision(pt, "scr", "dissent", 1, "a")), 0, true},
			{markEIE("9000000009", "d-a", "e"), commandv1.Result_CODE_NOT_FOUND, false},
		}, want{"dissent", 1, "d-a", 1}},
		{"marking twice is refused", []step{
			{record(decision(pt, "scr", "dissent", 1, "a")), 0, true},
			{markEIE(pt, "d-a", "e1"), 0, true},
			{markEIE(pt, "d-a", "e2"), commandv1.Result_CODE_INVALID_ARGUMENT, false},
		}, want{"implied_core", 2, "", 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newApplier(t)
			for i, st := range tc.steps {
				res := a.apply(st.env)
				if res.GetCode() != st.wantCode {
					t.Fatalf("step %d: code %s (%s), want %s", i, res.GetCode(), res.GetMessage(), st.wantCode)
				}
				if st.wantCode == 0 && res.GetChanged() != st.wantChanged {
					t.Fatalf("step %d: changed %v, want %v", i, res.GetChanged(), st.wantChanged)
				}
			}
			kind := "scr"
			if tc.steps[0].env.GetRecordDecision().GetKind() == "gp_secondary_use" {
				kind = "gp_secondary_use"
			}
			c := state(t, a.s, pt, kind)
			if c.State != tc.want.state || c.Version != tc.want.version || c.DecisionID != tc.want.decisionID {
				t.Fatalf("got %s v%d %q, want %s v%d %q", c.State, c.Version, c.DecisionID, tc.want.state, tc.want.version, tc.want.decisionID)
			}
			_, hist, _, err := a.s.ListDecisions(pt, kind, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(hist) != tc.want.history {
				t.Fatalf("history has %d decisions, want %d", len(hist), tc.want.history)
			}
			for i := 1; i < len(hist); i++ {
				if hist[i].GetRaftIndex() <= hist[i-1].GetRaftIndex() {
					t.Fatalf("history not in commit order: %d after %d", hist[i].GetRaftIndex(), hist[i-1].GetRaftIndex())
				}
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

func TestExpectedVersion(t *testing.T) {
	a := newApplier(t)
	a.apply(record(decision(pt, "scr", "dissent", 1, "a")))

	stale := decision(pt, "scr", "consent_core", 2, "b")
	v0 := uint64(0)
	stale.ExpectedVersion = &v0
	res := a.apply(record(stale))
	if res.GetCode() != commandv1.Result_CODE_VERSION_MISMATCH {
		t.Fatalf("stale expected_version: %s", res.GetCode())
	}
	if !errors.Is(ResultError(res), ErrVersionMismatch) {
		t.Fatalf("ResultError: %v", ResultError(res))
	}
	// Only the applied index moved: the data did not.
	if c := state(t, a.s, pt, "scr"); c.State != "dissent" || c.Version != 1 {
		t.Fatalf("mismatch wrote: %+v", c)
	}
	_, hist, _, _ := a.s.ListDecisions(pt, "", 0, 10)
	if len(hist) != 1 {
		t.Fatalf("history %d after a refused write", len(hist))
	}

	ok := decision(pt, "scr", "consent_core", 2, "c")
	v1 := uint64(1)
	ok.ExpectedVersion = &v1
	if res := a.apply(record(ok)); res.GetCode() != 0 || res.GetCurrent().GetVersion() != 2 {
		t.Fatalf("matching expected_version: %s %v", res.GetCode(), res.GetCurrent())
	}
}

func TestIdempotency(t *testing.T) {
	a := newApplier(t)
	first := a.apply(record(decision(pt, "scr", "dissent", 1, "req-1")))
	if first.GetCode() != 0 || first.GetDuplicate() {
		t.Fatalf("first: %v", first)
	}
	// The same request again, re-stamped by another node: same outcome, once.
	again := decision(pt, "scr", "dissent", 1, "req-1")
	again.DecisionId, again.RecordedAtMicros, again.AcceptedBy = "d-other", base.AddDate(0, 3, 0).UnixMicro(), "n2"
	dup := a.apply(record(again))
	if dup.GetCode() != 0 || !dup.GetDuplicate() || dup.GetDecision().GetDecision().GetDecisionId() != "d-req-1" {
		t.Fatalf("retry: %v", dup)
	}
	if dup.GetDecision().GetRaftIndex() != first.GetDecision().GetRaftIndex() {
		t.Fatalf("retry answered a different decision")
	}
	_, hist, _, _ := a.s.ListDecisions(pt, "", 0, 10)
	if len(hist) != 1 {
		t.Fatalf("history has %d entries after a retry, want 1", len(hist))
	}
	// The same id with a different body is a conflict and writes nothing.
	other := decision(pt, "scr", "consent_core", 1, "req-1")
	res := a.apply(record(other))
	if res.GetCode() != commandv1.Result_CODE_REQUEST_CONFLICT || !errors.Is(ResultError(res), ErrRequestConflict) {
		t.Fatalf("reuse with other content: %v", res)
	}
	if c := state(t, a.s, pt, "scr"); c.State != "dissent" || c.Version != 1 {
		t.Fatalf("conflict wrote: %+v", c)
	}
	// A request that relied on the default effective_from matches its retry
	// even though the retry is stamped at a different time.
	implicit := decision(pt, "local_shared_record", "consent", 1, "req-2")
	implicit.EffectiveFromGiven = false
	a.apply(record(implicit))
	retry := decision(pt, "local_shared_record", "consent", 4, "req-2")
	retry.EffectiveFromGiven, retry.DecisionId = false, "d-retry"
	if res := a.apply(record(retry)); !res.GetDuplicate() {
		t.Fatalf("retry of a request without effective_from: %v", res)
	}
}

func TestApplySkipsAppliedIndexesAndPersistsIndex(t *testing.T) {
	path := t.TempDir() + "/r.db"
	s, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := EncodeCommand(record(decision(pt, "scr", "dissent", 1, "a")))
	b2, _ := EncodeCommand(record(decision(pt, "scr", "consent_core", 2, "b")))
	res := s.Apply([]uint64{1, 2, 3}, [][]byte{b1, nil, b2})
	if res[1] != nil || res[0] == nil || res[2] == nil {
		t.Fatalf("results %v", res)
	}
	if s.AppliedIndex() != 3 {
		t.Fatalf("applied %d", s.AppliedIndex())
	}
	_, d1, _ := s.Digest()
	// Raft replays entries after a restart; already-applied ones are skipped.
	again := s.Apply([]uint64{2, 3}, [][]byte{nil, b2})
	if again[0] != nil || again[1] != nil {
		t.Fatalf("re-applied: %v", again)
	}
	_, d2, _ := s.Digest()
	if d1 != d2 {
		t.Fatal("replaying applied entries changed the register")
	}
	s.Close()
	s, err = Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.AppliedIndex() != 3 {
		t.Fatalf("applied index after reopen %d, want 3", s.AppliedIndex())
	}
	if c := state(t, s, pt, "scr"); c.State != "consent_core" || c.Version != 2 {
		t.Fatalf("after reopen %+v", c)
	}
}

func TestMalformedEntryAdvancesIndexWithoutWriting(t *testing.T) {
	s := openTest(t)
	res := s.Apply([]uint64{1, 2}, [][]byte{{0xff, 0x01}, {}})
	for i, r := range res {
		if r.(*commandv1.Result).GetCode() != commandv1.Result_CODE_INVALID_ARGUMENT {
			t.Fatalf("entry %d: %v", i, r)
		}
	}
	if s.AppliedIndex() != 2 {
		t.Fatalf("applied %d", s.AppliedIndex())
	}
	invalid := decision("9990000017", "scr", "dissent", 1, "x")
	b, _ := EncodeCommand(record(invalid))
	r := s.Apply([]uint64{3}, [][]byte{b})[0].(*commandv1.Result)
	if r.GetCode() != commandv1.Result_CODE_INVALID_ARGUMENT || r.GetField() != "nhs_number" {
		t.Fatalf("invalid command applied: %v", r)
	}
}

func TestCheckConsentsAndPaging(t *testing.T) {
	a := newApplier(t)
	for i := 0; i < 5; i++ {
		a.apply(record(decision(TestNHSNumber(i+10), "scr", "dissent", 1, "c"+TestNHSNumber(i+10))))
	}
	for i := 0; i < 7; i++ {
		a.apply(record(decision(pt, "scr", []string{"dissent", "consent_core"}[i%2], i, "p"+string(rune('a'+i)))))
	}
	nums := []string{TestNHSNumber(10), TestNHSNumber(19), TestNHSNumber(14)}
	rev, res, err := a.s.CheckConsents("scr", nums)
	if err != nil || rev != a.index {
		t.Fatalf("rev %d err %v", rev, err)
	}
	if res[0].State != "dissent" || res[1].State != "implied_core" || res[1].Version != 0 || res[2].NHSNumber != nums[2] {
		t.Fatalf("results %+v", res)
	}
	var fe *FieldError
	if _, _, err := a.s.CheckConsents("scr", []string{pt, "123"}); !errors.As(err, &fe) || fe.Field != "nhs_numbers[1]" {
		t.Fatalf("bad number: %v", err)
	}
	var all []*commandv1.DecisionRecord
	var after uint64
	for {
		_, page, next, err := a.s.ListDecisions(pt, "scr", after, 3)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if next == 0 {
			break
		}
		after = next
	}
	if len(all) != 7 {
		t.Fatalf("paged %d decisions, want 7", len(all))
	}
}
