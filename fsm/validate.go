package fsm

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// MaxBatch bounds the decisions in one RecordDecisions command: the batch is
// one raft entry and one bbolt transaction.
const MaxBatch = 1000

// MaxClockSkew is how far in the future effective_from may be.
const MaxClockSkew = 5 * time.Minute

const (
	// MaxReasonBytes bounds the free-text reason of a decision or an entered-in-error.
	MaxReasonBytes = 2000
	// MaxRequestIDBytes bounds a request id (idempotency key).
	MaxRequestIDBytes = 128
	// MaxIDBytes bounds a decision id and a node id.
	MaxIDBytes = 128
	// MaxActorFieldBytes bounds each field of recorded_by and accepted_by.
	MaxActorFieldBytes = 256
)

// Channels returns the channels a decision may arrive through.
func Channels() []string {
	return []string{"in_person", "paper_form", "phone", "online", "import"}
}

// DecisionMakerTypes returns who may make a decision.
func DecisionMakerTypes() []string {
	return []string{"patient", "proxy", "clinician_best_interest"}
}

// ProxyRoles returns the legal roles under which a proxy decides.
func ProxyRoles() []string {
	return []string{"parental_responsibility", "lpa_health_welfare", "lpa_property_financial", "court_deputy"}
}

// ValidateRecordDecision checks a command before it is proposed (now is the
// accepting node's clock) and again, without the clock check, inside apply.
// A zero now skips the check that effective_from is not in the future.
func ValidateRecordDecision(cmd *commandv1.RecordDecision, now time.Time) error {
	return validateRecordDecision(cmd, now, builtin().lookup)
}

func validateRecordDecision(cmd *commandv1.RecordDecision, now time.Time, lookup func(string) (*Kind, bool)) error {
	if cmd == nil {
		return fieldErr("record_decision", "is required")
	}
	if err := ValidateNHSNumber(cmd.GetNhsNumber()); err != nil {
		return err
	}
	kind, err := validateKind("kind", cmd.GetKind(), lookup)
	if err != nil {
		return err
	}
	if !kind.HasState(cmd.GetState()) {
		names := make([]string, len(kind.States))
		for i, st := range kind.States {
			names[i] = st.Name
		}
		return fieldErr("state", "%q is not a state of kind %s; allowed: %s", cmd.GetState(), kind.Name, strings.Join(names, ", "))
	}
	dm := cmd.GetDecisionMaker()
	if !slices.Contains(DecisionMakerTypes(), dm.GetType()) {
		return fieldErr("decision_maker.type", "%q is not allowed; allowed: %s", dm.GetType(), strings.Join(DecisionMakerTypes(), ", "))
	}
	if dm.GetType() == "proxy" {
		if dm.GetProxyRole() == "" {
			return fieldErr("decision_maker.proxy_role", "is required when decision_maker.type is proxy; allowed: %s", strings.Join(ProxyRoles(), ", "))
		}
		if !slices.Contains(ProxyRoles(), dm.GetProxyRole()) {
			return fieldErr("decision_maker.proxy_role", "%q is not allowed; allowed: %s", dm.GetProxyRole(), strings.Join(ProxyRoles(), ", "))
		}
	} else if dm.GetProxyRole() != "" {
		return fieldErr("decision_maker.proxy_role", "is only allowed when decision_maker.type is proxy")
	}
	if !slices.Contains(Channels(), cmd.GetChannel()) {
		return fieldErr("channel", "%q is not allowed; allowed: %s", cmd.GetChannel(), strings.Join(Channels(), ", "))
	}
	if err := validateReason(cmd.GetReason()); err != nil {
		return err
	}
	if err := validateRequestID(cmd.GetRequestId()); err != nil {
		return err
	}
	if err := validateID("decision_id", cmd.GetDecisionId()); err != nil {
		return err
	}
	if cmd.GetRecordedAtMicros() <= 0 {
		return fieldErr("recorded_at", "must be set")
	}
	if cmd.GetEffectiveFromMicros() <= 0 {
		return fieldErr("effective_from", "must be after 1970-01-01")
	}
	if !now.IsZero() {
		if limit := now.Add(MaxClockSkew); cmd.GetEffectiveFromMicros() > limit.UnixMicro() {
			return fieldErr("effective_from", "is in the future (later than %s)", limit.UTC().Format(time.RFC3339))
		}
	}
	if err := validateActor("recorded_by", cmd.GetRecordedBy()); err != nil {
		return err
	}
	return validateText("accepted_by", cmd.GetAcceptedBy(), MaxActorFieldBytes)
}

// ValidateRecordDecisions checks a batch before it is proposed (now as in
// ValidateRecordDecision); apply runs the same checks without the clock.
// Besides each item's own rules: 1..MaxBatch items, every one with a
// request_id, no patient, request id or decision id twice. An error names
// the item's field as decisions[i].field.
func ValidateRecordDecisions(cmd *commandv1.RecordDecisions, now time.Time) error {
	_, err := validateRecordDecisions(cmd, now, builtin().lookup)
	return err
}

// validateRecordDecisions returns each item's kind.
func validateRecordDecisions(cmd *commandv1.RecordDecisions, now time.Time, lookup func(string) (*Kind, bool)) ([]*Kind, error) {
	items := cmd.GetDecisions()
	if len(items) == 0 || len(items) > MaxBatch {
		return nil, fieldErr("decisions", "must hold 1..%d decisions, got %d", MaxBatch, len(items))
	}
	kinds := make([]*Kind, len(items))
	// One patient once per batch keeps versions and expected_version
	// unambiguous, and keeps decision keys (patient, raft index) unique.
	patients := make(map[string]int, len(items))
	requests := make(map[string]int, len(items))
	decisionIDs := make(map[string]int, len(items))
	for i, d := range items {
		if err := validateRecordDecision(d, now, lookup); err != nil {
			return nil, BatchItemError(i, err)
		}
		kinds[i], _ = lookup(d.GetKind())
		for _, u := range []struct {
			field, value string
			seen         map[string]int
		}{{"nhs_number", d.GetNhsNumber(), patients}, {"request_id", d.GetRequestId(), requests}, {"decision_id", d.GetDecisionId(), decisionIDs}} {
			if j, dup := u.seen[u.value]; dup {
				return nil, fieldErr(batchField(i, u.field), "%q is also in decisions[%d]; at most once per batch", u.value, j)
			}
			u.seen[u.value] = i
		}
	}
	return kinds, nil
}

// BatchItemError names item i of a batch in err's field (decisions[i].field),
// keeping what kind of error it is.
func BatchItemError(i int, err error) error {
	var fe *FieldError
	if !errors.As(err, &fe) {
		return &FieldError{Field: batchField(i, ""), Msg: err.Error()}
	}
	return &FieldError{Field: batchField(i, fe.Field), Msg: fe.Msg, Err: fe.Err}
}

func batchField(i int, field string) string {
	if field == "" {
		return fmt.Sprintf("decisions[%d]", i)
	}
	return fmt.Sprintf("decisions[%d].%s", i, field)
}

// ValidateMarkEnteredInError checks an entered-in-error command before proposing.
func ValidateMarkEnteredInError(cmd *commandv1.MarkEnteredInError) error {
	if cmd == nil {
		return fieldErr("mark_entered_in_error", "is required")
	}
	if err := ValidateNHSNumber(cmd.GetNhsNumber()); err != nil {
		return err
	}
	if err := validateID("decision_id", cmd.GetDecisionId()); err != nil {
		return err
	}
	if err := validateReason(cmd.GetReason()); err != nil {
		return err
	}
	if err := validateRequestID(cmd.GetRequestId()); err != nil {
		return err
	}
	if cmd.GetRecordedAtMicros() <= 0 {
		return fieldErr("recorded_at", "must be set")
	}
	if err := validateActor("recorded_by", cmd.GetRecordedBy()); err != nil {
		return err
	}
	return validateText("accepted_by", cmd.GetAcceptedBy(), MaxActorFieldBytes)
}

// ValidateKind checks that name is a kind of the registry; field names the request field.
func ValidateKind(field, name string) error {
	_, err := validateKind(field, name, builtin().lookup)
	return err
}

func validateKind(field, name string, lookup func(string) (*Kind, bool)) (*Kind, error) {
	if name == "" {
		return nil, fieldErr(field, "is required")
	}
	k, ok := lookup(name)
	if !ok {
		return nil, fieldErr(field, "unknown kind %q", name)
	}
	return k, nil
}

func validateReason(s string) error { return validateText("reason", s, MaxReasonBytes) }

func validateText(field, s string, max int) error {
	if len(s) > max {
		return fieldErr(field, "is %d bytes, at most %d allowed", len(s), max)
	}
	if !utf8.ValidString(s) {
		return fieldErr(field, "is not valid UTF-8")
	}
	return nil
}

func validateActor(field string, a *commandv1.Actor) error {
	if err := validateText(field+".ods_code", a.GetOdsCode(), MaxActorFieldBytes); err != nil {
		return err
	}
	if err := validateText(field+".user_id", a.GetUserId(), MaxActorFieldBytes); err != nil {
		return err
	}
	return validateText(field+".role", a.GetRole(), MaxActorFieldBytes)
}

func validateRequestID(s string) error {
	if s == "" {
		return fieldErr("request_id", "is required")
	}
	if len(s) > MaxRequestIDBytes {
		return fieldErr("request_id", "is %d bytes, at most %d allowed", len(s), MaxRequestIDBytes)
	}
	if !visibleASCII(s) {
		return fieldErr("request_id", "must be printable ASCII without spaces")
	}
	return nil
}

func validateID(field, s string) error {
	if s == "" {
		return fieldErr(field, "is required")
	}
	if len(s) > MaxIDBytes {
		return fieldErr(field, "is %d bytes, at most %d allowed", len(s), MaxIDBytes)
	}
	if !visibleASCII(s) {
		return fieldErr(field, "must be printable ASCII without spaces")
	}
	return nil
}

// visibleASCII rejects spaces too: ids travel in headers and URLs, where
// surrounding spaces are trimmed.
func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
