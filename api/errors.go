package api

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lmc-consent/consentd/cluster"
	"github.com/lmc-consent/consentd/fsm"
	"github.com/lmc-consent/consentd/raftnode"
)

// errorTable maps package sentinels to gRPC codes, first match wins; it is
// walked with errors.Is so wrapped errors still map. Order matters: an
// unknown outcome that also wraps a deadline is reported as a deadline.
var errorTable = []struct {
	target error
	code   codes.Code
	prefix string
}{
	{fsm.ErrInvalidArgument, codes.InvalidArgument, ""},
	{fsm.ErrVersionMismatch, codes.Aborted, ""},
	{fsm.ErrRequestConflict, codes.Aborted, ""},
	{fsm.ErrNotFound, codes.NotFound, ""},
	{cluster.ErrMemberNotFound, codes.NotFound, ""},
	{raftnode.ErrOutcomeUnknown, codes.Unavailable, "outcome unknown (retrying with the same request_id is safe): "},
	{raftnode.ErrNotLeader, codes.Unavailable, ""},
	{raftnode.ErrNotReady, codes.Unavailable, ""},
	{raftnode.ErrEnqueueTimeout, codes.Unavailable, ""},
	{raftnode.ErrShutdown, codes.Unavailable, ""},
	{cluster.ErrNoLeader, codes.Unavailable, ""},
	{cluster.ErrForward, codes.Unavailable, ""},
	{context.DeadlineExceeded, codes.DeadlineExceeded, ""},
	{context.Canceled, codes.Canceled, ""},
}

func toStatus(log *slog.Logger, err error) *status.Status {
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
		code := row.code
		if row.target == raftnode.ErrOutcomeUnknown && errors.Is(err, context.DeadlineExceeded) {
			code = codes.DeadlineExceeded
		}
		st := status.New(code, row.prefix+err.Error())
		var fe *fsm.FieldError
		if errors.As(err, &fe) && fe.Field != "" {
			if withDetail, derr := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
				{Field: fe.Field, Description: fe.Msg},
			}}); derr == nil {
				st = withDetail
			}
		}
		return st
	}
	log.Error("unmapped error", "err", err)
	return status.New(codes.Internal, "internal error")
}

func grpcError(log *slog.Logger, err error) error { return toStatus(log, err).Err() }
