package fsm

import (
	"errors"
	"testing"
	"time"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

func TestValidateRecordDecisionNamesTheField(t *testing.T) {
	now := base.AddDate(0, 1, 0)
	for _, tc := range []struct {
		field string
		mut   func(d *commandv1.RecordDecision)
	}{
		{"nhs_number", func(d *commandv1.RecordDecision) { d.NhsNumber = "9990000017" }},
		{"kind", func(d *commandv1.RecordDecision) { d.Kind = "national_data_opt_out" }},
		{"state", func(d *commandv1.RecordDecision) { d.State = "dissent_withdrawn" }},
		{"decision_maker.type", func(d *commandv1.RecordDecision) { d.DecisionMaker = nil }},
		{"decision_maker.proxy_role", func(d *commandv1.RecordDecision) { d.DecisionMaker.Type = "proxy" }},
		{"decision_maker.proxy_role", func(d *commandv1.RecordDecision) { d.DecisionMaker.ProxyRole = "court_deputy" }},
		{"channel", func(d *commandv1.RecordDecision) { d.Channel = "carrier_pigeon" }},
		{"reason", func(d *commandv1.RecordDecision) { d.Reason = string(make([]byte, MaxReasonBytes+1)) }},
		{"reason", func(d *commandv1.RecordDecision) { d.Reason = "\xff" }},
		{"request_id", func(d *commandv1.RecordDecision) { d.RequestId = "" }},
		{"request_id", func(d *commandv1.RecordDecision) { d.RequestId = "has space" }},
		{"effective_from", func(d *commandv1.RecordDecision) {
			d.EffectiveFromMicros = now.Add(MaxClockSkew + time.Minute).UnixMicro()
		}},
		{"effective_from", func(d *commandv1.RecordDecision) { d.EffectiveFromMicros = 0 }},
	} {
		d := decision(pt, "scr", "dissent", 1, "v")
		tc.mut(d)
		err := ValidateRecordDecision(d, now)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("want an error naming %s, got %v", tc.field, err)
		}
	}
	ok := decision(pt, "scr", "dissent", 1, "v")
	ok.EffectiveFromMicros = now.Add(MaxClockSkew - time.Second).UnixMicro()
	if err := ValidateRecordDecision(ok, now); err != nil {
		t.Errorf("within the skew: %v", err)
	}
	// Inside apply there is no clock: a future date accepted by the
	// proposing node must not be refused on replay years later, or the
	// other way round.
	if err := ValidateRecordDecision(ok, time.Time{}); err != nil {
		t.Errorf("without a clock: %v", err)
	}
}
