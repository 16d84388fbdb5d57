package api

import (
	"context"
	"fmt"
	"time"

	"github.com/lmc-consent/consentd/fsm"
	commandv1 "github.com/lmc-consent/consentd/proto/command/v1"
)

// brokenProposeTimeout bounds the proposal the AckBeforeCommit variant
// leaves running after it has answered.
const brokenProposeTimeout = 30 * time.Second

// ackBeforeCommit is the AckBeforeCommit variant (internal/broken): it
// proposes the decision in the background and at once answers with the
// result the register would give if nothing else happened first, predicted
// from this node's register with the register's own rules. The answer has
// the shape of a real one; whether the write ever commits, and whether it
// lands where predicted, nobody waits to see. Never used by a production build.
func (s *Server) ackBeforeCommit(ctx context.Context, cmd []byte, rd *commandv1.RecordDecision) (*commandv1.Result, error) {
	rev, consents, err := s.reg.GetConsents(rd.GetNhsNumber())
	if err != nil {
		return nil, err
	}
	var cur fsm.Consent
	for _, c := range consents {
		if c.Kind == rd.GetKind() {
			cur = c
		}
	}
	idx := rev + 1
	if rd.ExpectedVersion != nil && rd.GetExpectedVersion() != cur.Version {
		return nil, fsm.ResultError(&commandv1.Result{Code: commandv1.Result_CODE_VERSION_MISMATCH, Field: "expected_version",
			Message: fmt.Sprintf("expected version %d, current version is %d", rd.GetExpectedVersion(), cur.Version), RaftIndex: idx})
	}
	go func() {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokenProposeTimeout)
		defer cancel()
		s.cl.Apply(pctx, cmd)
	}()
	becomes := cur.DecisionID == "" || rd.GetEffectiveFromMicros() >= cur.EffectiveFrom.UnixMicro()
	next := &commandv1.CurrentRecord{State: cur.State, Version: cur.Version + 1, DecisionId: cur.DecisionID}
	if !cur.EffectiveFrom.IsZero() {
		next.EffectiveFromMicros = cur.EffectiveFrom.UnixMicro()
	}
	if becomes {
		next.State, next.DecisionId, next.EffectiveFromMicros, next.RaftIndex = rd.GetState(), rd.GetDecisionId(), rd.GetEffectiveFromMicros(), idx
	}
	rec := &commandv1.DecisionRecord{Decision: rd, RaftIndex: idx, Version: next.Version, Changed: becomes}
	return &commandv1.Result{Decision: rec, Current: next, Changed: becomes, RaftIndex: idx}, nil
}
