package fsm

import (
	"errors"
	"fmt"
)

// Sentinel errors of the register; api maps them to gRPC codes with errors.Is.
var (
	// ErrInvalidArgument: a field is malformed or not in the registry.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrVersionMismatch: expected_version did not match the current version.
	ErrVersionMismatch = errors.New("version mismatch")
	// ErrRequestConflict: a request id was reused with different content.
	ErrRequestConflict = errors.New("request id reused with different content")
	// ErrNotFound: a referenced decision does not exist for that patient.
	ErrNotFound = errors.New("not found")
	// ErrUnknownFormat: a log entry or snapshot in a format this version cannot read.
	ErrUnknownFormat = errors.New("unknown format")
)

// FieldError names the request field at fault. It unwraps to Err, which is
// ErrInvalidArgument unless said otherwise.
type FieldError struct {
	Field string
	Msg   string
	Err   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Msg) }

func (e *FieldError) Unwrap() error {
	if e.Err == nil {
		return ErrInvalidArgument
	}
	return e.Err
}

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}
