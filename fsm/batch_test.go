package fsm

import (
	"bytes"
	"fmt"
	"regexp"
	"testing"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

func batch(ds ...*commandv1.RecordDecision) *commandv1.Envelope {
	return &commandv1.Envelope{Body: &commandv1.Envelope_RecordDecisions{RecordDecisions: &commandv1.RecordDecisions{Decisions: ds}}}
}

// batchOf is n valid decisions for n different patients.
func batchOf(n int, prefix string) []*commandv1.RecordDecision {
	ds := make([]*commandv1.RecordDecision, n)
	for i := range ds {
		ds[i] = decision(TestNHSNumber(i), "scr", "dissent", 1, fmt.Sprintf("%s-%d", prefix, i))
	}
	return ds
}

func TestBatchAppliesEveryItemAtOneIndex(t *testing.T) {
	a := newApplier(t)
	a.apply(record(decision(TestNHSNumber(1), "scr", "consent_core", 0, "before")))
	ds := batchOf(3, "b")
	res := a.apply(batch(ds...))
	if res.GetCode() != commandv1.Result_CODE_OK || len(res.GetItems()) != 3 || res.GetRaftIndex() != a.index {
		t.Fatalf("batch: %v", res)
	}
	for i, item := range res.GetItems() {
		if item.GetDuplicate() || !item.GetChanged() || item.GetDecision().GetDecision().GetRequestId() != ds[i].GetRequestId() {
			t.Fatalf("item %d: %v", i, item)
		}
		if item.GetDecision().GetRaftIndex() != a.index {
			t.Fatalf("item %d at index %d, want %d", i, item.GetDecision().GetRaftIndex(), a.index)
		}
	}
	if got := state(t, a.s, TestNHSNumber(1), "scr"); got.State != "dissent" || got.Version != 2 {
		t.Fatalf("patient with an earlier decision: %+v", got)
	}
	if got := state(t, a.s, TestNHSNumber(2), "scr"); got.State != "dissent" || got.Version != 1 {
		t.Fatalf("new patient: %+v", got)
	}
}

func TestBadBatchIsRejectedWholeNamingTheItem(t *testing.T) {
	const earlierPatient = "9000000009" // not among batchOf's
	v := uint64(7)
	for _, tc := range []struct {
		name      string
		ds        func() []*commandv1.RecordDecision
		wantCode  commandv1.Result_Code
		wantField string
	}{
		{"empty", func() []*commandv1.RecordDecision { return nil }, commandv1.Result_CODE_INVALID_ARGUMENT, "decisions"},
		{"over MaxBatch", func() []*commandv1.RecordDecision { return batchOf(MaxBatch+1, "big") }, commandv1.Result_CODE_INVALID_ARGUMENT, "decisions"},
		{"bad NHS number", func() []*commandv1.RecordDecision {
			ds := batchOf(5, "x")
			ds[3].NhsNumber = "9990000017"
			return ds
		}, commandv1.Result_CODE_INVALID_ARGUMENT, "decisions[3].nhs_number"},
		{"unknown state", func() []*commandv1.RecordDecision {
			ds := batchOf(5, "x")
			ds[4].State = "maybe"
			return ds
		}, commandv1.Result_CODE_INVALID_ARGUMENT, "decisions[4].state"},
		{"no request id", func() []*commandv1.RecordDecision {
			ds := batchOf(5, "x")
			ds[2].RequestId = ""
			return ds
		}, commandv1.Result_CODE_INVALID_ARGUMENT, "decisions[2].request_id"},
		{"same patient twice", func() []*commandv1.RecordDecision {
			ds := batchOf(5, "x")
			ds[4].NhsNumber, ds[4].Kind, ds[4].State = ds[1].NhsNumber, "gp_secondary_use", "dissent"
			return ds
		}, commandv1.Result_CODE_INVALID_ARGUMENT, "decisions[4].nhs_number"},
		{"same request id twice", func() []*commandv1.RecordDecision {
			ds := batchOf(5, "x")
			ds[3].RequestId = ds[0].RequestId
			return ds
		}, commandv1.Result_CODE_INVALID_ARGUMENT, "decisions[3].request_id"},
		{"same decision id twice", func() []*commandv1.RecordDecision {
			ds := batchOf(5, "x")
			ds[1].DecisionId = ds[0].DecisionId
			return ds
		}, commandv1.Result_CODE_INVALID_ARGUMENT, "decisions[1].decision_id"},
		{"expected version mismatch", func() []*commandv1.RecordDecision {
			ds := batchOf(5, "x")
			ds[2].ExpectedVersion = &v
			return ds
		}, commandv1.Result_CODE_VERSION_MISMATCH, "decisions[2].expected_version"},
		{"request id reused with another body", func() []*commandv1.RecordDecision {
			ds := batchOf(5, "x")
			ds[4].RequestId = "earlier"
			return ds
		}, commandv1.Result_CODE_REQUEST_CONFLICT, "decisions[4].request_id"},
		{"decision id already stored", func() []*commandv1.RecordDecision {
			ds := batchOf(5, "x")
			ds[1].DecisionId = "d-earlier"
			return ds
		}, commandv1.Result_CODE_INVALID_ARGUMENT, "decisions[1].decision_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newApplier(t)
			a.apply(record(decision(earlierPatient, "scr", "dissent", 1, "earlier")))
			patients := []string{earlierPatient}
			for i := 0; i <= MaxBatch; i++ {
				patients = append(patients, TestNHSNumber(i))
			}
			before := dump(t, a.s, patients[:8])
			res := a.apply(batch(tc.ds()...))
			if res.GetCode() != tc.wantCode || res.GetField() != tc.wantField {
				t.Fatalf("got %v %q (%s), want %v %q", res.GetCode(), res.GetField(), res.GetMessage(), tc.wantCode, tc.wantField)
			}
			if len(res.GetItems()) != 0 {
				t.Fatalf("a rejected batch has item results: %v", res.GetItems())
			}
			err := ResultError(res)
			if fe, ok := err.(*FieldError); !ok || fe.Field != tc.wantField {
				t.Fatalf("ResultError = %v, want a FieldError on %s", err, tc.wantField)
			}
			// Only the applied index moved.
			after := dump(t, a.s, patients[:8])
			if revisions.ReplaceAllString(after, "") != revisions.ReplaceAllString(before, "") {
				t.Fatalf("a rejected batch changed the register:\nbefore %s\nafter %s", before, after)
			}
			for _, p := range patients[1:] {
				if got := history(t, a.s, p, ""); len(got) != 0 {
					t.Fatalf("patient %s has %d decisions after a rejected batch", p, len(got))
				}
			}
		})
	}
}

// revisions are the read revisions, applied index and digest (which covers
// the applied index) in a dump: a rejected entry still advances them.
var revisions = regexp.MustCompile(`@\d+|applied \d+|digest [0-9a-f]+`)

func TestBatchRetryReplaysEachItemAsDuplicate(t *testing.T) {
	a := newApplier(t)
	ds := batchOf(4, "r")
	first := a.apply(batch(ds...))
	if first.GetCode() != commandv1.Result_CODE_OK {
		t.Fatalf("first: %v", first)
	}
	firstIndex := a.index
	single := decision(TestNHSNumber(10), "scr", "dissent", 1, "single-earlier")
	a.apply(record(single))

	// The same batch retried through another node, plus one item that was
	// applied on its own before, plus a new one.
	retry := make([]*commandv1.RecordDecision, 0, 6)
	for _, d := range ds {
		retry = append(retry, restamped(d))
	}
	retry = append(retry, restamped(single), decision(TestNHSNumber(11), "scr", "dissent", 1, "new"))
	res := a.apply(batch(retry...))
	if res.GetCode() != commandv1.Result_CODE_OK || len(res.GetItems()) != 6 {
		t.Fatalf("retry: %v", res)
	}
	for i, item := range res.GetItems()[:5] {
		if !item.GetDuplicate() || item.GetDecision().GetDecision().GetDecisionId() == retry[i].GetDecisionId() {
			t.Fatalf("item %d is not the original replayed: %v", i, item)
		}
	}
	if got := res.GetItems()[0].GetDecision().GetRaftIndex(); got != firstIndex {
		t.Fatalf("replayed item says index %d, want the original %d", got, firstIndex)
	}
	if n := res.GetItems()[5]; n.GetDuplicate() || n.GetDecision().GetRaftIndex() != a.index {
		t.Fatalf("new item: %v", n)
	}
	for i := range 4 {
		if got := history(t, a.s, TestNHSNumber(i), ""); len(got) != 1 {
			t.Fatalf("patient %d has %d decisions after a retried batch, want 1", i, len(got))
		}
	}
}

func TestBatchSurvivesSnapshotRestore(t *testing.T) {
	a := newApplier(t)
	populate(t, a, 20)
	ds := batchOf(MaxBatch, "snap")
	if res := a.apply(batch(ds...)); res.GetCode() != commandv1.Result_CODE_OK || len(res.GetItems()) != MaxBatch {
		t.Fatalf("batch: %v %s", res.GetCode(), res.GetMessage())
	}
	patients := make([]string, MaxBatch)
	for i := range patients {
		patients[i] = TestNHSNumber(i)
	}
	want := dump(t, a.s, patients)
	fresh := openTest(t)
	if err := fresh.Restore(bytes.NewReader(snapshotBytes(t, a.s))); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, fresh, patients); got != want {
		t.Fatal("the restored store answers differently after a batch")
	}
	// The idempotency table came across too: a retry is a duplicate there.
	res := applyNow(fresh, []uint64{a.index + 1}, [][]byte{encode(t, batch(restamped(ds[0]), restamped(ds[MaxBatch-1])))})[0].(*commandv1.Result)
	if res.GetCode() != commandv1.Result_CODE_OK || !res.GetItems()[0].GetDuplicate() || !res.GetItems()[1].GetDuplicate() {
		t.Fatalf("retry after restore: %v", res)
	}
}

func TestValidateRecordDecisionsChecksTheClock(t *testing.T) {
	ds := batchOf(3, "clock")
	ds[1].EffectiveFromMicros = base.AddDate(1, 0, 0).UnixMicro()
	err := ValidateRecordDecisions(&commandv1.RecordDecisions{Decisions: ds}, base.AddDate(0, 2, 0))
	if fe, ok := err.(*FieldError); !ok || fe.Field != "decisions[1].effective_from" {
		t.Fatalf("got %v, want decisions[1].effective_from", err)
	}
	if err := ValidateRecordDecisions(&commandv1.RecordDecisions{Decisions: batchOf(3, "ok")}, base.AddDate(0, 2, 0)); err != nil {
		t.Fatal(err)
	}
}
