package fsm

import (
	"errors"
	"strings"
	"testing"
	"time"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

func TestValidateRecordDecisionNamesTheField(t *testing.T) {
	now := base.AddDate(0, 1, 0)
	type mut = func(d *commandv1.RecordDecision)
	for _, tc := range []struct {
		field string
		mut   mut
	}{
		{"nhs_number", func(d *commandv1.RecordDecision) { d.NhsNumber = "9990000017" }},
		{"nhs_number", func(d *commandv1.RecordDecision) { d.NhsNumber = "" }},
		{"kind", func(d *commandv1.RecordDecision) { d.Kind = "national_data_opt_out" }},
		{"kind", func(d *commandv1.RecordDecision) { d.Kind = "" }},
		{"state", func(d *commandv1.RecordDecision) { d.State = "dissent_withdrawn" }},
		{"state", func(d *commandv1.RecordDecision) { d.State = "" }},
		{"decision_maker.type", func(d *commandv1.RecordDecision) { d.DecisionMaker = nil }},
		{"decision_maker.type", func(d *commandv1.RecordDecision) { d.DecisionMaker.Type = "neighbour" }},
		{"decision_maker.proxy_role", func(d *commandv1.RecordDecision) { d.DecisionMaker.Type = "proxy" }},
		{"decision_maker.proxy_role", func(d *commandv1.RecordDecision) {
			d.DecisionMaker = &commandv1.DecisionMaker{Type: "proxy", ProxyRole: "friend"}
		}},
		{"decision_maker.proxy_role", func(d *commandv1.RecordDecision) { d.DecisionMaker.ProxyRole = "court_deputy" }},
		{"channel", func(d *commandv1.RecordDecision) { d.Channel = "carrier_pigeon" }},
		{"channel", func(d *commandv1.RecordDecision) { d.Channel = "" }},
		{"reason", func(d *commandv1.RecordDecision) { d.Reason = strings.Repeat("x", MaxReasonBytes+1) }},
		{"reason", func(d *commandv1.RecordDecision) { d.Reason = "\xff" }},
		{"request_id", func(d *commandv1.RecordDecision) { d.RequestId = "" }},
		{"request_id", func(d *commandv1.RecordDecision) { d.RequestId = "has space" }},
		{"request_id", func(d *commandv1.RecordDecision) { d.RequestId = "tab\there" }},
		{"request_id", func(d *commandv1.RecordDecision) { d.RequestId = "é" }},
		{"request_id", func(d *commandv1.RecordDecision) { d.RequestId = strings.Repeat("r", MaxRequestIDBytes+1) }},
		{"decision_id", func(d *commandv1.RecordDecision) { d.DecisionId = "" }},
		{"recorded_at", func(d *commandv1.RecordDecision) { d.RecordedAtMicros = 0 }},
		{"effective_from", func(d *commandv1.RecordDecision) {
			d.EffectiveFromMicros = now.Add(MaxClockSkew + time.Minute).UnixMicro()
		}},
		{"effective_from", func(d *commandv1.RecordDecision) { d.EffectiveFromMicros = 0 }},
		{"effective_from", func(d *commandv1.RecordDecision) { d.EffectiveFromMicros = -5 }},
		{"recorded_by.ods_code", func(d *commandv1.RecordDecision) { d.RecordedBy.OdsCode = strings.Repeat("A", MaxActorFieldBytes+1) }},
		{"recorded_by.user_id", func(d *commandv1.RecordDecision) { d.RecordedBy.UserId = "\xc3" }},
		{"accepted_by", func(d *commandv1.RecordDecision) { d.AcceptedBy = strings.Repeat("n", MaxActorFieldBytes+1) }},
	} {
		d := decision(pt, "scr", "dissent", 1, "v")
		tc.mut(d)
		err := ValidateRecordDecision(d, now)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalidArgument) || fe.Msg == "" {
			t.Errorf("want an error naming %s, got %v", tc.field, err)
		}
	}
	if err := ValidateRecordDecision(nil, now); err == nil {
		t.Error("nil command is valid")
	}
}

func TestValidateRecordDecisionAccepts(t *testing.T) {
	now := base.AddDate(0, 1, 0)
	for _, mut := range []func(d *commandv1.RecordDecision){
		func(d *commandv1.RecordDecision) {},
		func(d *commandv1.RecordDecision) {
			d.EffectiveFromMicros = now.Add(MaxClockSkew - time.Second).UnixMicro()
		},
		func(d *commandv1.RecordDecision) {
			d.DecisionMaker = &commandv1.DecisionMaker{Type: "proxy", ProxyRole: "parental_responsibility"}
		},
		func(d *commandv1.RecordDecision) { d.DecisionMaker.Type = "clinician_best_interest" },
		func(d *commandv1.RecordDecision) { d.Channel = "import" },
		func(d *commandv1.RecordDecision) { d.Reason = strings.Repeat("é", MaxReasonBytes/2) },
		func(d *commandv1.RecordDecision) { d.RequestId = strings.Repeat("r", MaxRequestIDBytes) },
		func(d *commandv1.RecordDecision) { d.Kind, d.State = "gp_secondary_use", "dissent_withdrawn" },
		func(d *commandv1.RecordDecision) { d.RecordedBy = nil },
	} {
		d := decision(pt, "scr", "dissent", 1, "v")
		mut(d)
		if err := ValidateRecordDecision(d, now); err != nil {
			t.Errorf("%v: %v", d, err)
		}
	}
	for _, ch := range Channels() {
		d := decision(pt, "scr", "dissent", 1, "v")
		d.Channel = ch
		if err := ValidateRecordDecision(d, now); err != nil {
			t.Errorf("channel %s: %v", ch, err)
		}
	}
	for _, role := range ProxyRoles() {
		d := decision(pt, "scr", "dissent", 1, "v")
		d.DecisionMaker = &commandv1.DecisionMaker{Type: "proxy", ProxyRole: role}
		if err := ValidateRecordDecision(d, now); err != nil {
			t.Errorf("proxy role %s: %v", role, err)
		}
	}
}

func TestValidateWithoutClockSkipsTheFutureCheck(t *testing.T) {
	now := base.AddDate(0, 1, 0)
	future := decision(pt, "scr", "dissent", 1, "v")
	future.EffectiveFromMicros = now.Add(24 * time.Hour).UnixMicro()
	if err := ValidateRecordDecision(future, now); err == nil {
		t.Fatal("a day in the future is valid with a clock")
	}
	// Inside apply there is no clock: a date accepted by the proposing node
	// must not be refused on replay, whenever that happens.
	if err := ValidateRecordDecision(future, time.Time{}); err != nil {
		t.Fatalf("without a clock: %v", err)
	}
	a := newApplier(t)
	if res := a.apply(record(future)); res.GetCode() != 0 {
		t.Fatalf("apply refused a future effective_from: %v", res)
	}
}

func TestValidateStateSaysWhichAreAllowed(t *testing.T) {
	d := decision(pt, "local_shared_record", "implied_core", 1, "v")
	err := ValidateRecordDecision(d, time.Time{})
	for _, s := range []string{"unknown", "consent", "dissent"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Fatalf("error %v does not list state %s", err, s)
		}
	}
}

func TestValidateMarkEnteredInErrorNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		field string
		mut   func(m *commandv1.MarkEnteredInError)
	}{
		{"nhs_number", func(m *commandv1.MarkEnteredInError) { m.NhsNumber = "1111111111" }},
		{"decision_id", func(m *commandv1.MarkEnteredInError) { m.DecisionId = "" }},
		{"reason", func(m *commandv1.MarkEnteredInError) { m.Reason = strings.Repeat("x", MaxReasonBytes+1) }},
		{"request_id", func(m *commandv1.MarkEnteredInError) { m.RequestId = "" }},
		{"recorded_at", func(m *commandv1.MarkEnteredInError) { m.RecordedAtMicros = 0 }},
		{"recorded_by.role", func(m *commandv1.MarkEnteredInError) {
			m.RecordedBy = &commandv1.Actor{Role: strings.Repeat("r", MaxActorFieldBytes+1)}
		}},
	} {
		m := markEIE(pt, "d-a", "e").GetMarkEnteredInError()
		tc.mut(m)
		err := ValidateMarkEnteredInError(m)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("want an error naming %s, got %v", tc.field, err)
		}
	}
	if err := ValidateMarkEnteredInError(markEIE(pt, "d-a", "e").GetMarkEnteredInError()); err != nil {
		t.Errorf("valid command: %v", err)
	}
	if err := ValidateMarkEnteredInError(nil); err == nil {
		t.Error("nil command is valid")
	}
}

func TestValidateKind(t *testing.T) {
	for _, k := range Kinds() {
		if err := ValidateKind("kind", k.Name); err != nil {
			t.Errorf("%s: %v", k.Name, err)
		}
	}
	var fe *FieldError
	if err := ValidateKind("filter.kind", "ndop"); !errors.As(err, &fe) || fe.Field != "filter.kind" {
		t.Errorf("unknown kind: %v", err)
	}
}
