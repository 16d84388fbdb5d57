package api

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lmc-consent/consentd/cluster"
	"github.com/lmc-consent/consentd/fsm"
	"github.com/lmc-consent/consentd/internal/broken"
	"github.com/lmc-consent/consentd/raftnode"
)

// errorTable maps package sentinels to gRPC codes. It is walked in order
// with errors.Is, so wrapped errors still map and the first match wins.
// Not-leader is UNAVAILABLE, never FAILED_PRECONDITION: REST clients would
// see a 400 and not retry.
var errorTable = []struct {
	target error
	code   codes.Code
}{
	{fsm.ErrInvalidArgument, codes.InvalidArgument},
	{fsm.ErrVersionMismatch, codes.Aborted},
	{fsm.ErrRequestConflict, codes.Aborted},
	{fsm.ErrNotFound, codes.NotFound},
	{cluster.ErrMemberNotFound, codes.NotFound},
	// Before the plain unavailable rows: an unknown outcome may also wrap
	// one of them, and the caller must hear that it is unknown.
	{raftnode.ErrOutcomeUnknown, codes.Unavailable},
	{raftnode.ErrNotLeader, codes.Unavailable},
	{raftnode.ErrNotReady, codes.Unavailable},
	{raftnode.ErrEnqueueTimeout, codes.Unavailable},
	{raftnode.ErrShutdown, codes.Unavailable},
	{cluster.ErrNoLeader, codes.Unavailable},
	{cluster.ErrForward, codes.Unavailable},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

// internalMessage is all a caller learns about an unmapped error.
const internalMessage = "internal error"

// toStatus is the one place an error becomes a gRPC status. An error that is
// already a status passes through; an unmapped one becomes a bare Internal
// (the caller logs the detail, see Server.grpcError).
func toStatus(err error) *status.Status {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return st
	}
	for _, row := range errorTable {
		if !errors.Is(err, row.target) {
			continue
		}
		if row.target == raftnode.ErrOutcomeUnknown && broken.On(broken.UnknownAsFailure) {
			// Broken on purpose: a write that may have committed is reported as one that did not.
			return status.New(codes.FailedPrecondition, validUTF8(err.Error()))
		}
		if row.target == raftnode.ErrOutcomeUnknown {
			return outcomeUnknown(err)
		}
		st := status.New(row.code, validUTF8(err.Error()))
		if row.code == codes.InvalidArgument {
			st = withFieldViolation(st, err)
		}
		return st
	}
	return status.New(codes.Internal, internalMessage)
}

// outcomeUnknown reports a write that may or may not have committed: never
// as a definite failure, and with what the client can safely do about it.
func outcomeUnknown(err error) *status.Status {
	code := codes.Unavailable
	if errors.Is(err, context.DeadlineExceeded) {
		code = codes.DeadlineExceeded
	}
	msg := err.Error()
	if !strings.Contains(msg, "outcome unknown") {
		msg = "outcome unknown: " + msg
	}
	return status.New(code, validUTF8(msg)+" (retrying with the same request_id is safe)")
}

// withFieldViolation names the field at fault in a google.rpc.BadRequest
// detail, so REST clients get it in "details" as well as in the message.
func withFieldViolation(st *status.Status, err error) *status.Status {
	var fe *fsm.FieldError
	if !errors.As(err, &fe) || fe.Field == "" {
		return st
	}
	return withViolation(st, fe.Field, fe.Msg)
}

func withViolation(st *status.Status, field, msg string) *status.Status {
	out, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: validUTF8(field), Description: validUTF8(msg)},
	}})
	if err != nil {
		return st
	}
	return out
}

// validUTF8 keeps request bytes echoed in a message from making the status
// unmarshalable (protobuf strings must be UTF-8; the gateway would send 500).
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// grpcError maps err through the table, logging what the caller is not told.
func (s *Server) grpcError(err error) error {
	st := toStatus(err)
	if _, isStatus := status.FromError(err); !isStatus && st.Code() == codes.Internal {
		s.log.Error("unmapped error", "err", err)
	}
	return st.Err()
}
