package fsm

import (
	"errors"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

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

func TestListDecisionsPaging(t *testing.T) {
	a := newApplier(t)
	var want []uint64
	for i := 0; i < 10; i++ {
		kind := []string{"scr", "gp_secondary_use"}[i%2]
		a.apply(record(decision(pt, kind, "dissent", i, fmt.Sprintf("p%d", i))))
		a.apply(record(decision(other, "scr", "dissent", i, fmt.Sprintf("o%d", i))))
		if kind == "scr" {
			want = append(want, a.index-1)
		}
	}
	for _, limit := range []int{1, 2, 4, 5, 100} {
		var got []uint64
		var after uint64
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatalf("limit %d: paging does not end", limit)
			}
			rev, page, next, err := a.s.ListDecisions(pt, "scr", after, limit)
			if err != nil {
				t.Fatal(err)
			}
			if rev != a.index || len(page) > limit {
				t.Fatalf("limit %d: revision %d, %d decisions", limit, rev, len(page))
			}
			for _, d := range page {
				if d.GetDecision().GetNhsNumber() != pt || d.GetDecision().GetKind() != "scr" {
					t.Fatalf("page holds %v", d.GetDecision())
				}
				got = append(got, d.GetRaftIndex())
			}
			if next == 0 {
				break
			}
			if next != page[len(page)-1].GetRaftIndex() {
				t.Fatalf("next %d is not the last index of the page", next)
			}
			after = next
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("limit %d: paged %v, want %v", limit, got, want)
		}
	}
	if _, all, _, _ := a.s.ListDecisions(pt, "", 0, 0); len(all) != 10 {
		t.Fatalf("all kinds with the default limit: %d", len(all))
	}
	if _, none, next, _ := a.s.ListDecisions(pt, "", ^uint64(0), 10); len(none) != 0 || next != 0 {
		t.Fatalf("after the last index: %v %d", none, next)
	}
	if _, none, _, _ := a.s.ListDecisions(TestNHSNumber(77), "", 0, 10); len(none) != 0 {
		t.Fatalf("unknown patient: %v", none)
	}
	var fe *FieldError
	if _, _, _, err := a.s.ListDecisions(pt, "nope", 0, 10); !errors.As(err, &fe) || fe.Field != "kind" {
		t.Fatalf("unknown kind: %v", err)
	}
	if _, _, _, err := a.s.ListDecisions("123", "", 0, 10); !errors.As(err, &fe) || fe.Field != "nhs_number" {
		t.Fatalf("bad number: %v", err)
	}
}

func TestGetConsentsRevisionAndEffectiveFrom(t *testing.T) {
	a := newApplier(t)
	a.apply(rec("gp_secondary_use", "dissent", 4, "a"))
	applyNow(a.s, []uint64{a.index + 1}, [][]byte{nil})
	rev, cs, err := a.s.GetConsents(pt)
	if err != nil {
		t.Fatal(err)
	}
	if rev != a.index+1 {
		t.Fatalf("revision %d, want the applied index %d", rev, a.index+1)
	}
	gp := cs[1]
	if gp.Kind != "gp_secondary_use" || gp.State != "dissent" || gp.DecisionID != "d-a" || !gp.EffectiveFrom.Equal(base.AddDate(0, 0, 4)) {
		t.Fatalf("gp_secondary_use %+v", gp)
	}
	if !cs[0].EffectiveFrom.IsZero() || cs[0].DecisionID != "" {
		t.Fatalf("unrecorded scr %+v", cs[0])
	}
	var fe *FieldError
	if _, _, err := a.s.GetConsents("999000001"); !errors.As(err, &fe) || fe.Field != "nhs_number" {
		t.Fatalf("bad number: %v", err)
	}
}

func TestCheckConsentsRefusesUnknownKind(t *testing.T) {
	s := openTest(t)
	var fe *FieldError
	if _, _, err := s.CheckConsents("national_data_opt_out", []string{pt}); !errors.As(err, &fe) || fe.Field != "kind" {
		t.Fatalf("unknown kind: %v", err)
	}
	if _, _, err := s.CheckConsents("", []string{pt}); !errors.As(err, &fe) || fe.Field != "kind" {
		t.Fatalf("no kind: %v", err)
	}
}

func TestResultError(t *testing.T) {
	for _, tc := range []struct {
		res      *commandv1.Result
		sentinel error
		field    string
	}{
		{&commandv1.Result{Code: commandv1.Result_CODE_INVALID_ARGUMENT, Field: "state", Message: "bad"}, ErrInvalidArgument, "state"},
		{&commandv1.Result{Code: commandv1.Result_CODE_VERSION_MISMATCH, Field: "expected_version", Message: "expected version 1, current version is 2"}, ErrVersionMismatch, "expected_version"},
		{&commandv1.Result{Code: commandv1.Result_CODE_REQUEST_CONFLICT, Field: "request_id"}, ErrRequestConflict, "request_id"},
		{&commandv1.Result{Code: commandv1.Result_CODE_NOT_FOUND, Field: "decision_id", Message: "no such"}, ErrNotFound, "decision_id"},
	} {
		err := ResultError(tc.res)
		if !errors.Is(err, tc.sentinel) {
			t.Errorf("%s: %v is not %v", tc.res.GetCode(), err, tc.sentinel)
		}
		var fe *FieldError
		if tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field) {
			t.Errorf("%s: %v does not name %s", tc.res.GetCode(), err, tc.field)
		}
		for _, s := range []error{ErrInvalidArgument, ErrVersionMismatch, ErrRequestConflict, ErrNotFound} {
			if s != tc.sentinel && errors.Is(err, s) {
				t.Errorf("%s: %v is also %v", tc.res.GetCode(), err, s)
			}
		}
	}
	if err := ResultError(&commandv1.Result{RaftIndex: 4}); err != nil {
		t.Errorf("OK: %v", err)
	}
	if err := ResultError(nil); err == nil {
		t.Error("no result is not a success")
	}
	if err := ResultError(&commandv1.Result{Code: 99}); err == nil {
		t.Error("an unknown code is not a success")
	}
}

func TestDigest(t *testing.T) {
	a, b := newApplier(t), newApplier(t)
	for _, env := range []func() *commandv1.Envelope{
		func() *commandv1.Envelope { return rec("scr", "dissent", 1, "a") },
		func() *commandv1.Envelope { return markEIE(pt, "d-a", "e") },
	} {
		a.apply(env())
		b.apply(env())
	}
	if digest(t, a.s) != digest(t, b.s) {
		t.Fatal("stores that applied the same entries differ")
	}
	applyNow(a.s, []uint64{a.index + 1}, [][]byte{nil})
	if digest(t, a.s) == digest(t, b.s) {
		t.Fatal("the digest does not cover the applied index")
	}
	applyNow(b.s, []uint64{b.index + 1}, [][]byte{nil})

	// Same value under different keys must not digest the same.
	raw := func(s *Store, key string) {
		t.Helper()
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketNodes).Put([]byte(key), []byte("v")) }); err != nil {
			t.Fatal(err)
		}
	}
	raw(a.s, "k1")
	raw(b.s, "k2")
	if digest(t, a.s) == digest(t, b.s) {
		t.Fatal("the digest does not cover keys")
	}
}

// The lookups of a large check are split between goroutines; every split
// must answer exactly what one transaction would, in request order.
func TestCheckConsentsInParallelMatchesOneTransaction(t *testing.T) {
	a := newApplier(t)
	var nums []string
	for i := range 300 {
		n := TestNHSNumber(i)
		nums = append(nums, n)
		if i%3 != 0 {
			a.apply(record(decision(n, "scr", []string{"dissent", "consent_core"}[i%2], 1, "r"+n)))
		}
	}
	nums = append(nums, nums[7], nums[0]) // repeats are answered at each place
	for _, size := range []int{0, 1, checkChunkMin - 1, checkChunkMin, 2 * checkChunkMin, 2*checkChunkMin + 1, len(nums)} {
		t.Run(fmt.Sprintf("size=%d", size), func(t *testing.T) {
			q := nums[len(nums)-size:]
			a.s.cfg.CheckWorkers = 1
			wantRev, want, err := a.s.CheckConsents("scr", q)
			if err != nil {
				t.Fatal(err)
			}
			a.s.cfg.CheckWorkers = DefaultCheckWorkers
			rev, got, err := a.s.CheckConsents("scr", q)
			if err != nil {
				t.Fatal(err)
			}
			if rev != wantRev || len(got) != len(want) {
				t.Fatalf("revision %d, %d results; one transaction: %d, %d", rev, len(got), wantRev, len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("result %d: %+v, one transaction: %+v", i, got[i], want[i])
				}
			}
		})
	}
}

// A check is one state even when its goroutines' transactions straddle a
// commit: every commit here moves all patients to the next version at
// once, so a check that mixed two commits would answer two versions.
func TestCheckConsentsInParallelIsOneRevision(t *testing.T) {
	s := openTest(t)
	nums := make([]string, 8*checkChunkMin)
	for i := range nums {
		nums[i] = TestNHSNumber(i)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	var index uint64
	var writeErr error
	// Deferred, not at the end: a failing check must stop the writer
	// before the store closes under it.
	defer func() {
		close(stop)
		<-done
		if writeErr != nil {
			t.Error(writeErr)
		}
	}()
	go func() {
		defer close(done)
		for round := 1; ; round++ {
			select {
			case <-stop:
				return
			default:
			}
			idx := make([]uint64, len(nums))
			data := make([][]byte, len(nums))
			for i, n := range nums {
				index++
				idx[i] = index
				b, err := EncodeCommand(record(decision(n, "scr", []string{"dissent", "consent_core"}[round%2], round, fmt.Sprintf("%s-%d", n, round))))
				if err != nil {
					writeErr = err
					return
				}
				data[i] = b
			}
			applyNow(s, idx, data)
		}
	}()
	// Checked until enough commits landed during checks to have straddled
	// some, however slow the machine.
	const wantStates = 30
	deadline := time.Now().Add(time.Minute)
	checks, rounds := 0, map[uint64]bool{}
	for len(rounds) < wantStates && time.Now().Before(deadline) {
		committed := s.AppliedIndex()
		rev, res, err := s.CheckConsents("scr", nums)
		if err != nil {
			t.Fatal(err)
		}
		// Never older than what was committed when the check began, and
		// the answers are the state at the revision it reports: round r
		// ends at index r*len(nums) with every patient at version r.
		if rev < committed {
			t.Fatalf("check at revision %d, below the %d committed before it began", rev, committed)
		}
		if want := rev / uint64(len(nums)); res[0].Version != want {
			t.Fatalf("check at revision %d answered version %d, want %d", rev, res[0].Version, want)
		}
		for i, r := range res {
			if r.Version != res[0].Version {
				t.Fatalf("check at revision %d answered version %d for %s and %d for %s: two states in one check", rev, res[0].Version, res[0].NHSNumber, r.Version, nums[i])
			}
		}
		rounds[res[0].Version] = true
		checks++
	}
	if len(rounds) < wantStates {
		t.Fatalf("%d checks saw only %d states in a minute: commits did not land while checking, so the test proved nothing", checks, len(rounds))
	}
	t.Logf("%d checks over %d states", checks, len(rounds))
}
