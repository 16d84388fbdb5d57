package audit

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Operation is what an access did to the register.
type Operation string

// Operations, one per kind of access an auditor asks about.
const (
	OpRead    Operation = "read"    // current consents of a patient
	OpWrite   Operation = "write"   // a decision recorded or marked entered-in-error
	OpCheck   Operation = "check"   // a bulk dissent check (up to 1,000 patients)
	OpHistory Operation = "history" // a patient's decision history
	OpAdmin   Operation = "admin"   // membership, snapshots and the like
	OpAudit   Operation = "audit"   // a query of this log
)

// Outcome is what the node answered.
type Outcome string

// Outcomes.
const (
	OutcomeAllowed Outcome = "allowed"
	OutcomeDenied  Outcome = "denied" // not authenticated or not authorised
	OutcomeError   Outcome = "error"  // allowed, but the operation failed
)

// Transports an access arrived over.
const (
	TransportGRPC = "grpc"
	TransportREST = "rest"
)

// Caller is the authenticated identity behind an access, as the API's
// identity interceptor established it (never as the request body claims).
type Caller struct {
	Subject string `json:"subject"` // user id or certificate CN
	Org     string `json:"org"`     // ODS code
	Role    string `json:"role"`
}

// Entry is one access. The JSON names are the on-disk format and stable; a
// change of meaning needs a new line version (see lineVersion).
//
// Entries never carry reasons, restricted text or request bodies: only who,
// what, which patients, when and with what outcome.
type Entry struct {
	// Time is when the access happened, written as RFC 3339 with nanoseconds
	// in UTC. Append stamps Config.Now when it is zero.
	Time time.Time `json:"time"`
	// Node is set by Append from Config.Node.
	Node string `json:"node"`
	// Seq is set by Append: one more than the previous entry on this node.
	Seq        uint64    `json:"seq,omitempty"`
	Caller     Caller    `json:"caller"`
	Method     string    `json:"method"` // e.g. consent.v1.ConsentService/GetConsents
	Operation  Operation `json:"operation"`
	NHSNumbers []string  `json:"nhsNumbers"` // in full; a check touches up to 1,000
	Kind       string    `json:"kind"`       // consent kind, when the access names one
	Outcome    Outcome   `json:"outcome"`
	Code       string    `json:"code"` // gRPC code name, e.g. OK, PermissionDenied
	RequestID  string    `json:"requestId"`
	Remote     string    `json:"remote"`    // peer address
	Transport  string    `json:"transport"` // TransportGRPC or TransportREST
}

const (
	// lineVersion is the "v" of every line; a reader skips lines of a
	// version it does not know rather than misreading them.
	lineVersion = 1
	// maxLineBytes bounds one line so a reader can bound its buffer; an
	// entry with 1,000 NHS numbers is about 14 KB.
	maxLineBytes = 1 << 20
)

// wireLine is a line as decoded: the version beside the entry's own fields.
type wireLine struct {
	V int `json:"v"`
	Entry
}

func validateEntry(e *Entry) error {
	switch e.Operation {
	case OpRead, OpWrite, OpCheck, OpHistory, OpAdmin, OpAudit:
	default:
		return fmt.Errorf("%w: Operation %q", ErrInvalidEntry, e.Operation)
	}
	switch e.Outcome {
	case OutcomeAllowed, OutcomeDenied, OutcomeError:
	default:
		return fmt.Errorf("%w: Outcome %q", ErrInvalidEntry, e.Outcome)
	}
	switch e.Transport {
	case "", TransportGRPC, TransportREST:
	default:
		return fmt.Errorf("%w: Transport %q", ErrInvalidEntry, e.Transport)
	}
	return nil
}

// encodeBody encodes everything but the version and seq, as a JSON object,
// so callers encode in parallel and the writer only splices in the seq.
func encodeBody(e Entry) ([]byte, error) {
	e.Seq = 0 // omitted; frameLine puts it first
	e.Time = e.Time.UTC()
	if e.NHSNumbers == nil {
		e.NHSNumbers = []string{} // [] rather than null keeps lines uniform for jq
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidEntry, err)
	}
	if len(b)+64 > maxLineBytes {
		return nil, fmt.Errorf("%w: %d bytes encoded, at most %d", ErrInvalidEntry, len(b), maxLineBytes-64)
	}
	return b, nil
}

// frameLine appends {"v":1,"seq":<seq>,<body fields>}\n to dst.
func frameLine(dst []byte, seq uint64, body []byte) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, lineVersion, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	if len(body) > 2 { // body is "{...}"; "{}" has no fields to add
		dst = append(dst, ',')
	}
	dst = append(dst, body[1:]...)
	return append(dst, '\n')
}

// encodeLine is the whole line for e, newline included.
func encodeLine(e Entry) ([]byte, error) {
	body, err := encodeBody(e)
	if err != nil {
		return nil, err
	}
	return frameLine(nil, e.Seq, body), nil
}

// decodeLine decodes one line, without its newline. Files are outside input
// once an auditor copies them around, so anything not a well-formed entry of
// a known version is an error wrapping ErrCorruptLine, never a panic.
func decodeLine(line []byte) (Entry, error) {
	if len(line) > maxLineBytes {
		return Entry{}, fmt.Errorf("%w: %d bytes", ErrCorruptLine, len(line))
	}
	var w wireLine
	if err := json.Unmarshal(line, &w); err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrCorruptLine, err)
	}
	if w.V != lineVersion {
		return Entry{}, fmt.Errorf("%w: version %d, want %d", ErrCorruptLine, w.V, lineVersion)
	}
	if w.Seq == 0 {
		return Entry{}, fmt.Errorf("%w: no seq", ErrCorruptLine)
	}
	e := w.Entry
	e.Time = e.Time.UTC()
	if len(e.NHSNumbers) == 0 {
		e.NHSNumbers = nil
	}
	return e, nil
}
