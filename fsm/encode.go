package fsm

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// CommandFormat is the Envelope format this version writes and reads.
const CommandFormat = 1

// EncodeCommand sets the envelope format and marshals it deterministically.
func EncodeCommand(env *commandv1.Envelope) ([]byte, error) {
	env.Format = CommandFormat
	return deterministic.Marshal(env)
}

// DecodeCommand unmarshals a log entry, refusing unknown formats and empty bodies.
func DecodeCommand(b []byte) (*commandv1.Envelope, error) {
	env := &commandv1.Envelope{}
	if err := proto.Unmarshal(b, env); err != nil {
		return nil, fmt.Errorf("fsm: decode command: %w", err)
	}
	if env.GetFormat() != CommandFormat {
		return nil, fmt.Errorf("fsm: %w: command format %d", ErrUnknownFormat, env.GetFormat())
	}
	if env.GetBody() == nil {
		return nil, fmt.Errorf("fsm: %w: command has no body", ErrUnknownFormat)
	}
	return env, nil
}

// ResultError turns a non-OK Result into the matching sentinel error (a
// *FieldError for invalid arguments); nil for CODE_OK.
func ResultError(res *commandv1.Result) error {
	if res == nil {
		return errors.New("fsm: no result")
	}
	switch res.GetCode() {
	case commandv1.Result_CODE_OK:
		return nil
	case commandv1.Result_CODE_INVALID_ARGUMENT:
		return &FieldError{Field: res.GetField(), Msg: res.GetMessage()}
	case commandv1.Result_CODE_VERSION_MISMATCH:
		return &FieldError{Field: res.GetField(), Msg: res.GetMessage(), Err: ErrVersionMismatch}
	case commandv1.Result_CODE_REQUEST_CONFLICT:
		return &FieldError{Field: res.GetField(), Msg: res.GetMessage(), Err: ErrRequestConflict}
	case commandv1.Result_CODE_NOT_FOUND:
		return &FieldError{Field: res.GetField(), Msg: res.GetMessage(), Err: ErrNotFound}
	default:
		return fmt.Errorf("fsm: unknown result code %d: %s", res.GetCode(), res.GetMessage())
	}
}

// MaxClockSkew is how far in the future effective_from may be.
const MaxClockSkew = 5 * time.Minute

// Limits on free-text fields.
const (
	MaxReasonBytes    = 2000
	MaxRequestIDBytes = 128
)

var zeroTime time.Time

// DecisionMakerTypes are the accepted decision_maker.type values.
func DecisionMakerTypes() []string { return []string{"patient", "proxy", "clinician_best_interest"} }

// ProxyRoles are the accepted decision_maker.proxy_role values.
func ProxyRoles() []string {
	return []string{"parental_responsibility", "lpa_health_welfare", "lpa_property_financial", "court_deputy"}
}

// Channels are the accepted channel values.
func Channels() []string { return []string{"in_person", "paper_form", "phone", "online", "import"} }

func oneOf(v string, set []string) bool {
	for _, s := range set {
		if s == v {
			return true
		}
	}
	return false
}

func validRequestID(id string) error {
	if id == "" {
		return fieldErr("request_id", "is required")
	}
	if len(id) > MaxRequestIDBytes {
		return fieldErr("request_id", "must be at most %d bytes", MaxRequestIDBytes)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return fieldErr("request_id", "must be printable ASCII without spaces")
		}
	}
	return nil
}

// ValidateRecordDecision checks a command before it is proposed (now is the
// accepting node's clock) and again, with the zero time (no clock check),
// inside apply.
func ValidateRecordDecision(cmd *commandv1.RecordDecision, now time.Time) error {
	if cmd == nil {
		return fieldErr("decision", "is required")
	}
	if err := ValidateNHSNumber(cmd.GetNhsNumber()); err != nil {
		return err
	}
	k, ok := LookupKind(cmd.GetKind())
	if !ok {
		return fieldErr("kind", "unknown kind %q (see GET /v1/kinds)", cmd.GetKind())
	}
	if !k.HasState(cmd.GetState()) {
		names := make([]string, len(k.States))
		for i, s := range k.States {
			names[i] = s.Name
		}
		return fieldErr("state", "%q is not a state of %s; allowed: %v", cmd.GetState(), k.Name, names)
	}
	dm := cmd.GetDecisionMaker()
	if !oneOf(dm.GetType(), DecisionMakerTypes()) {
		return fieldErr("decision_maker.type", "must be one of %v", DecisionMakerTypes())
	}
	if dm.GetType() == "proxy" {
		if !oneOf(dm.GetProxyRole(), ProxyRoles()) {
			return fieldErr("decision_maker.proxy_role", "a proxy needs one of %v", ProxyRoles())
		}
	} else if dm.GetProxyRole() != "" {
		return fieldErr("decision_maker.proxy_role", "only a proxy has a proxy role")
	}
	if !oneOf(cmd.GetChannel(), Channels()) {
		return fieldErr("channel", "must be one of %v", Channels())
	}
	if len(cmd.GetReason()) > MaxReasonBytes {
		return fieldErr("reason", "must be at most %d bytes", MaxReasonBytes)
	}
	if !utf8.ValidString(cmd.GetReason()) {
		return fieldErr("reason", "must be valid UTF-8")
	}
	if err := validRequestID(cmd.GetRequestId()); err != nil {
		return err
	}
	if cmd.GetDecisionId() == "" {
		return fieldErr("decision_id", "is required")
	}
	if cmd.GetRecordedAtMicros() <= 0 {
		return fieldErr("recorded_at", "is required")
	}
	if cmd.GetEffectiveFromMicros() <= 0 {
		return fieldErr("effective_from", "must be after 1970")
	}
	if !now.IsZero() && cmd.GetEffectiveFromMicros() > now.Add(MaxClockSkew).UnixMicro() {
		return fieldErr("effective_from", "is in the future (more than %v ahead of this node's clock)", MaxClockSkew)
	}
	return nil
}

// ValidateMarkEnteredInError checks an entered-in-error command.
func ValidateMarkEnteredInError(cmd *commandv1.MarkEnteredInError) error {
	if cmd == nil {
		return fieldErr("command", "is required")
	}
	if err := ValidateNHSNumber(cmd.GetNhsNumber()); err != nil {
		return err
	}
	if cmd.GetDecisionId() == "" {
		return fieldErr("decision_id", "is required")
	}
	if len(cmd.GetReason()) > MaxReasonBytes || !utf8.ValidString(cmd.GetReason()) {
		return fieldErr("reason", "must be valid UTF-8 of at most %d bytes", MaxReasonBytes)
	}
	if err := validRequestID(cmd.GetRequestId()); err != nil {
		return err
	}
	if cmd.GetRecordedAtMicros() <= 0 {
		return fieldErr("recorded_at", "is required")
	}
	return nil
}

func asFieldError(err error) *FieldError {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe
	}
	return &FieldError{Field: "command", Msg: err.Error()}
}
