package audit

import "errors"

// Sentinel errors of the access log; api maps them to gRPC codes with errors.Is.
var (
	// ErrUnavailable: the entry could not be made durable, so (failing closed)
	// the access it records must be refused. Maps to UNAVAILABLE.
	ErrUnavailable = errors.New("access log unavailable")
	// ErrClosed: the log has been closed. Maps to UNAVAILABLE.
	ErrClosed = errors.New("access log closed")
	// ErrInvalidEntry: an entry is missing a required field or is too large;
	// a bug in the caller, not something to retry.
	ErrInvalidEntry = errors.New("invalid access log entry")
	// ErrInvalidFilter: a query filter field or page token is malformed.
	// Maps to INVALID_ARGUMENT.
	ErrInvalidFilter = errors.New("invalid access log filter")
	// ErrCorruptLine: a line of a log file is not a decodable entry.
	ErrCorruptLine = errors.New("corrupt access log line")
)
