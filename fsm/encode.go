package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"google.golang.org/protobuf/proto"

	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// CommandFormat is the Envelope format this version writes and reads.
const CommandFormat = 1

// EncodeCommand sets the envelope format and marshals it deterministically.
func EncodeCommand(env *commandv1.Envelope) ([]byte, error) {
	if env == nil || env.GetBody() == nil {
		return nil, errors.New("fsm: encode command: envelope has no body")
	}
	env.Format = CommandFormat
	b, err := marshal(env)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode command: %w", err)
	}
	return b, nil
}

// DecodeCommand unmarshals a log entry, refusing unknown formats and empty bodies.
func DecodeCommand(b []byte) (*commandv1.Envelope, error) {
	env := &commandv1.Envelope{}
	if err := proto.Unmarshal(b, env); err != nil {
		return nil, fmt.Errorf("fsm: decode command: %w", err)
	}
	if env.GetFormat() != CommandFormat {
		return nil, fmt.Errorf("fsm: decode command: format %d: %w", env.GetFormat(), ErrUnknownFormat)
	}
	if env.GetBody() == nil {
		return nil, fmt.Errorf("fsm: decode command: no known body: %w", ErrUnknownFormat)
	}
	return env, nil
}

// ResultError turns a non-OK Result into the matching sentinel error (a
// *FieldError for invalid arguments); nil for CODE_OK. Every code keeps the
// field at fault as a *FieldError wrapping its sentinel.
func ResultError(res *commandv1.Result) error {
	if res == nil {
		return errors.New("fsm: no result for the entry")
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
		return fmt.Errorf("fsm: result code %d unknown to this version: %s", res.GetCode(), res.GetMessage())
	}
}

// marshal is the one encoder of stored values: deterministic, so every node
// writes the same bytes and Digest agrees.
func marshal(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

const nhsLen = 10

func decisionKey(nhs string, index uint64) []byte {
	k := make([]byte, nhsLen+8)
	copy(k, nhs)
	binary.BigEndian.PutUint64(k[nhsLen:], index)
	return k
}

func currentKey(nhs, kind string) []byte {
	k := make([]byte, 0, nhsLen+len(kind))
	k = append(k, nhs...)
	return append(k, kind...)
}

// Fingerprints identify the client-given content of a request so a retry
// (restamped with a new decision id and recorded_at) is recognised as the same
// request. They are stored, so their encoding is pinned by a golden test:
// it is a hand-written length-prefixed encoding because protobuf promises no
// stable bytes across library versions.
const (
	fingerprintRecordDecision     = "consentd.fingerprint.record_decision.v1"
	fingerprintMarkEnteredInError = "consentd.fingerprint.mark_entered_in_error.v1"
)

type fingerprinter struct {
	h   hash.Hash
	buf [binary.MaxVarintLen64]byte
}

func newFingerprinter(domain string) *fingerprinter {
	f := &fingerprinter{h: sha256.New()}
	f.str(domain)
	return f
}

func (f *fingerprinter) str(s string) {
	n := binary.PutUvarint(f.buf[:], uint64(len(s)))
	f.h.Write(f.buf[:n])
	io.WriteString(f.h, s)
}

func (f *fingerprinter) u64(v uint64) {
	binary.BigEndian.PutUint64(f.buf[:8], v)
	f.h.Write(f.buf[:8])
}

func (f *fingerprinter) flag(b bool) {
	f.buf[0] = 0
	if b {
		f.buf[0] = 1
	}
	f.h.Write(f.buf[:1])
}

func (f *fingerprinter) optU64(v *uint64) {
	f.flag(v != nil)
	if v != nil {
		f.u64(*v)
	}
}

func (f *fingerprinter) sum() []byte { return f.h.Sum(nil) }

func recordDecisionFingerprint(c *commandv1.RecordDecision) []byte {
	f := newFingerprinter(fingerprintRecordDecision)
	f.str(c.GetNhsNumber())
	f.str(c.GetKind())
	f.str(c.GetState())
	f.flag(c.GetEffectiveFromGiven())
	if c.GetEffectiveFromGiven() {
		f.u64(uint64(c.GetEffectiveFromMicros()))
	}
	f.str(c.GetDecisionMaker().GetType())
	f.str(c.GetDecisionMaker().GetProxyRole())
	f.str(c.GetChannel())
	f.str(c.GetReason())
	f.flag(c.GetRestricted())
	f.optU64(c.ExpectedVersion)
	f.str(c.GetRecordedBy().GetOdsCode())
	return f.sum()
}

func markEnteredInErrorFingerprint(c *commandv1.MarkEnteredInError) []byte {
	f := newFingerprinter(fingerprintMarkEnteredInError)
	f.str(c.GetNhsNumber())
	f.str(c.GetDecisionId())
	f.str(c.GetReason())
	f.optU64(c.ExpectedVersion)
	f.str(c.GetRecordedBy().GetOdsCode())
	return f.sum()
}
