package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lmc-consent/consentd/cluster"
	"github.com/lmc-consent/consentd/fsm"
	"github.com/lmc-consent/consentd/raftnode"
)

func TestErrorTable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		want     codes.Code
		field    string // BadRequest field violation expected
		contains string
	}{
		{"field error", &fsm.FieldError{Field: "kind", Msg: "unknown"}, codes.InvalidArgument, "kind", "kind"},
		{"wrapped field error", fmt.Errorf("validate: %w", &fsm.FieldError{Field: "nhs_number", Msg: "bad"}), codes.InvalidArgument, "nhs_number", ""},
		{"bare invalid argument", fsm.ErrInvalidArgument, codes.InvalidArgument, "", ""},
		{"version mismatch", fsm.ErrVersionMismatch, codes.Aborted, "", ""},
		{"wrapped version mismatch", fmt.Errorf("apply: %w", fsm.ErrVersionMismatch), codes.Aborted, "", ""},
		{"version mismatch from a result", &fsm.FieldError{Field: "expected_version", Err: fsm.ErrVersionMismatch}, codes.Aborted, "", "expected_version"},
		{"request conflict", fsm.ErrRequestConflict, codes.Aborted, "", ""},
		{"decision not found", &fsm.FieldError{Field: "decision_id", Err: fsm.ErrNotFound}, codes.NotFound, "", ""},
		{"member not found", fmt.Errorf("%w: n9", cluster.ErrMemberNotFound), codes.NotFound, "", ""},
		{"outcome unknown", fmt.Errorf("x: %w", raftnode.ErrOutcomeUnknown), codes.Unavailable, "", "same request_id is safe"},
		{"outcome unknown by deadline", fmt.Errorf("%w: %w", raftnode.ErrOutcomeUnknown, context.DeadlineExceeded), codes.DeadlineExceeded, "", "outcome unknown"},
		{"outcome unknown while shutting down", fmt.Errorf("%w: %w", raftnode.ErrShutdown, raftnode.ErrOutcomeUnknown), codes.Unavailable, "", "outcome unknown"},
		{"not leader", raftnode.ErrNotLeader, codes.Unavailable, "", ""},
		{"wrapped not leader", fmt.Errorf("forward: %w", raftnode.ErrNotLeader), codes.Unavailable, "", ""},
		{"not ready", raftnode.ErrNotReady, codes.Unavailable, "", ""},
		{"enqueue timeout", raftnode.ErrEnqueueTimeout, codes.Unavailable, "", ""},
		{"shutdown", raftnode.ErrShutdown, codes.Unavailable, "", ""},
		{"no leader", cluster.ErrNoLeader, codes.Unavailable, "", ""},
		{"forward", fmt.Errorf("%w: dial: refused", cluster.ErrForward), codes.Unavailable, "", ""},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, "", ""},
		{"wrapped deadline", fmt.Errorf("read index: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "", ""},
		{"canceled", context.Canceled, codes.Canceled, "", ""},
		{"status passes through", status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied, "", "no"},
		{"unmapped", errors.New("disk on fire"), codes.Internal, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := toStatus(tc.err)
			if st.Code() != tc.want {
				t.Fatalf("%v → %s, want %s", tc.err, st.Code(), tc.want)
			}
			if got := grpcViolation(st.Err()); got != tc.field {
				t.Fatalf("field violation %q, want %q", got, tc.field)
			}
			if !strings.Contains(st.Message(), tc.contains) {
				t.Fatalf("message %q lacks %q", st.Message(), tc.contains)
			}
		})
	}
	if toStatus(nil) != nil {
		t.Fatal("nil error mapped to a status")
	}
	if st := toStatus(errors.New("secret detail")); strings.Contains(st.Message(), "secret") {
		t.Fatal("internal error detail leaked to the caller")
	}
	for _, err := range []error{raftnode.ErrNotLeader, cluster.ErrNoLeader, raftnode.ErrNotReady} {
		if toStatus(err).Code() == codes.FailedPrecondition {
			t.Fatalf("%v mapped to FAILED_PRECONDITION: REST clients would see 400", err)
		}
	}
}
